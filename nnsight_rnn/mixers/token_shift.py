"""The token shift every RWKV version shares, and the RWKV channel-mix (the block's MLP).

A token-shift mixer mixes each position's input ``x`` with the previous (unpadded) position's,
``shifted``; at a call's first position ``shifted`` is the shift state carried in, and the last real
input is carried out. :class:`TokenShiftMixer` does that bookkeeping (hooks ``hook_*_shift_state_in``
/ ``_out``, ``hook_x``, ``hook_shifted``); :func:`lerp_mix` (RWKV-4/5) and :func:`maa_mix`
(RWKV-6/7) are the two mixing rules. The carried state of a layer travels in a :class:`LayerState`
that the block passes in (read from ``inputs``, written to ``outputs``, never in place).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import torch
from torch import nn

from ..hooks import HookPoint
from .base import HookableMixer, padding_mask


class LayerState:
    """One layer's carried state for one call: slot name -> ``[b, ...]`` tensor.

    ``inputs`` holds the state carried into the call (read only), ``outputs`` receives the state
    carried out; ``attention`` receives the time-mix output when the model is asked for it.
    """

    def __init__(self, inputs: dict[str, torch.Tensor] | None = None) -> None:
        self.inputs: dict[str, torch.Tensor] = inputs or {}
        self.outputs: dict[str, torch.Tensor] = {}
        self.attention: torch.Tensor | None = None


# --- token shift (every RWKV version's time-mix and channel-mix) ----------------------------------


def token_shift(x: torch.Tensor, carried: torch.Tensor, mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(shifted [b, L, d], last [b, d])``: the previous position's x and the shift state to carry.

    Without a mask, ``shifted[:, t] = x[:, t-1]`` and ``shifted[:, 0] = carried``. With a mask,
    ``shifted[:, t]`` is x at the last unmasked position before t (``carried`` if none) and ``last``
    is x at the last unmasked position (``carried`` if the row has none).
    """
    carried = carried.to(x.dtype)
    if mask is None:
        return torch.cat([carried[:, None], x[:, :-1]], dim=1), x[:, -1]
    batch, length, d = x.shape
    pos = torch.arange(length, device=x.device)
    last_upto = torch.where(mask.bool(), pos, -1).cummax(dim=1).values  # [b, L] last valid index <= t
    before = torch.cat([last_upto.new_full((batch, 1), -1), last_upto[:, :-1]], dim=1)  # last valid < t
    extended = torch.cat([carried[:, None], x], dim=1)  # index 0: carried, index t+1: x_t
    shifted = extended.gather(1, (before + 1)[..., None].expand(batch, length, d))
    last = extended[torch.arange(batch, device=x.device), last_upto[:, -1] + 1]
    return shifted, last


def lerp_mix(x: torch.Tensor, shifted: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """RWKV-4/5 token-shift mix ``x * weight + shifted * (1 - weight)`` (HF's RWKV-4 expression, bit for bit)."""
    return x * weight + shifted * (1 - weight)


def maa_mix(x: torch.Tensor, shifted: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """RWKV-6/7 token-shift mix ``x + (shifted - x) * weight`` (BlinkDL's expression)."""
    return x + (shifted - x) * weight


# Keyword arguments of the two common kinds of HookPoint.
CARRIED_HOOK: dict[str, Any] = dict(pos_dim=None, kind="state_carried")  # a state entering / leaving a call [b, ...]
ACTIVATION_HOOK: dict[str, Any] = dict(pos_dim=1, kind="activation")  # a per-position activation [b, L, ...]


class TokenShiftMixer(HookableMixer):
    """An RWKV time-mix or channel-mix: it token-shifts its input and carries the last x between calls.

    Subclasses set ``shift_slot`` (``"att_shift"`` or ``"ffn_shift"``), ``hidden_size``, and define
    the hook points ``hook_<shift_slot>_state_in``, ``hook_x``, ``hook_shifted`` and
    ``hook_<shift_slot>_state_out``; the helpers below fire them (in that order over a call).
    ``state`` is a :class:`LayerState` (or the RWKV-5/6/7 models' subclass ``LayerCall``).
    """

    shift_slot: ClassVar[str] = ""

    def _shift_in(self, state: LayerState, hidden: torch.Tensor) -> torch.Tensor:
        """The carried shift ``[b, d]`` (zeros at a fresh start) after ``hook_<shift_slot>_state_in``."""
        carried = state.inputs.get(self.shift_slot)
        if carried is None:
            carried = hidden.new_zeros(hidden.shape[0], self.hidden_size)
        return getattr(self, f"hook_{self.shift_slot}_state_in")(carried)

    def _shift(
        self, hidden: torch.Tensor, carried: torch.Tensor, mask: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(x, shifted, last)``: the input after ``hook_x``, its shift after ``hook_shifted``, the shift to carry."""
        x = self.hook_x(hidden)
        shifted, last = token_shift(x, carried, mask)
        return x, self.hook_shifted(shifted), last

    def _shift_out(self, state: LayerState, last: torch.Tensor) -> None:
        """Carry ``last`` ``[b, d]`` out through ``hook_<shift_slot>_state_out``."""
        state.outputs[self.shift_slot] = getattr(self, f"hook_{self.shift_slot}_state_out")(last)


class RwkvChannelMix(TokenShiftMixer):
    """The RWKV channel-mix (the block's MLP; nnsight ``layers[i].mlp``), every version.

    ``sigmoid(receptance(xr)) * value(relu(key(xk))**2)`` with ``xk``, ``xr`` token-shift mixes of
    the input (RWKV-4/5/6), or ``value(relu(key(xk))**2)`` without a receptance gate (RWKV-7).
    ``forward(hidden [b, L, d], state: LayerState | None, attention_mask [b, L] | None) -> [b, L, d]``;
    reads and writes the ``ffn_shift`` slot of the layer state.

    What a version declares: ``mix`` (:func:`lerp_mix` or :func:`maa_mix`), the names of its
    key / receptance mix parameters (``receptance_mix = None``: no gate), the hook docs that differ
    (``docs``), and, when it is not adopted from an HF module, :meth:`_init_parameters`.
    """

    shift_slot = "ffn_shift"
    mix: ClassVar[Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]] = staticmethod(lerp_mix)
    key_mix: ClassVar[str] = ""
    receptance_mix: ClassVar[str | None] = None
    docs: ClassVar[dict[str, str]] = {
        "x": "channel-mix input (ln2 output) [b, L, d]",
        "xk": "key input (token-shift mix) [b, L, d]",
        "xr": "receptance input (token-shift mix) [b, L, d]",
    }

    def __init__(self, original: nn.Module, config: Any, layer_idx: int) -> None:
        super().__init__(original, config, layer_idx)
        self.hidden_size = config.hidden_size
        self._init_parameters(config)
        gated = self.receptance_mix is not None
        self.hook_ffn_shift_state_in = HookPoint(**CARRIED_HOOK, doc="token-shift input carried in [b, d]")
        self.hook_x = HookPoint(**ACTIVATION_HOOK, doc=self.docs["x"])
        self.hook_shifted = HookPoint(**ACTIVATION_HOOK, doc="token-shift input: previous position's x [b, L, d]")
        self.hook_xk = HookPoint(**ACTIVATION_HOOK, doc=self.docs["xk"])
        if gated:
            self.hook_xr = HookPoint(**ACTIVATION_HOOK, doc=self.docs["xr"])
        self.hook_k = HookPoint(**ACTIVATION_HOOK, doc="relu(key(xk))**2, the neuron activations [b, L, d_ff]")
        if gated:
            self.hook_v = HookPoint(**ACTIVATION_HOOK, doc="value(k), before the receptance gate [b, L, d]")
            self.hook_r = HookPoint(**ACTIVATION_HOOK, doc="receptance after sigmoid [b, L, d]")
        self.hook_ffn_shift_state_out = HookPoint(**CARRIED_HOOK, doc="token-shift state carried out [b, d]")

    def _init_parameters(self, config: Any) -> None:
        """Create the mix parameters and ``key`` / ``receptance`` / ``value`` (native models; adopted ones have them)."""

    @staticmethod
    def state_slots(config: Any) -> dict[str, tuple[int, ...]]:
        return {"ffn_shift": (config.hidden_size,)}

    def forward(
        self,
        hidden: torch.Tensor,  # [b, L, d], ln2 output
        state: LayerState | None = None,
        attention_mask: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> torch.Tensor:
        mask = padding_mask(attention_mask, hidden.shape[1])
        state = LayerState() if state is None else state
        x, shifted, last = self._shift(hidden, self._shift_in(state, hidden), mask)
        xk = self.hook_xk(self.mix(x, shifted, getattr(self, self.key_mix)))
        if self.receptance_mix is None:  # no gate: value(k) is the output (computed after the shift goes out)
            k = self.hook_k(torch.relu(self.key(xk)) ** 2)
            self._shift_out(state, last)
            return self.value(k)
        xr = self.hook_xr(self.mix(x, shifted, getattr(self, self.receptance_mix)))
        k = self.hook_k(torch.relu(self.key(xk)) ** 2)
        v = self.hook_v(self.value(k))
        r = self.hook_r(torch.sigmoid(self.receptance(xr)))
        self._shift_out(state, last)
        return r * v
