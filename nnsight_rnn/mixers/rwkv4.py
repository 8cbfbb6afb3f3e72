"""Hookable RWKV-4 time-mix (the ``attention``) and channel-mix (the ``feed_forward``).

The token shift and the channel-mix they build on are shared with RWKV-5/6/7:
:mod:`nnsight_rnn.mixers.token_shift`.

Both adopt the original HF modules' parameters by reference (``state_dict`` keys unchanged) and
return a plain ``[batch, pos, d_model]`` tensor. The carried state of a layer travels in a
:class:`LayerState` that the block passes in: the modules read their slots (see
:meth:`HookableRwkv4TimeMix.state_slots`) from ``inputs`` and put the new ones in ``outputs``
(never writing into tensors in place; re-running a call, as gradient checkpointing does, reads
the same inputs again).
Position is axis 1 everywhere; ``d = hidden_size``, ``d_att = attention_hidden_size``,
``d_ff = intermediate_size``.

Time-mix hooks (``layers[i].mixer``), in firing order:

===========================  ================  ==============================================
hook                         shape             meaning
===========================  ================  ==============================================
hook_att_shift_state_in      [b, d]            token-shift input carried into the call
hook_wkv_state_in            [b, 3, d_att]     WKV state carried in: (num, den, max) on axis 1
hook_x                       [b, L, d]         mixer input (already ``ln1``-normed)
hook_shifted                 [b, L, d]         token-shift input: x of the previous (unpadded)
                                               position, the carried shift state at the first
hook_xk / hook_xv / hook_xr  [b, L, d]         mixed inputs ``x*mix + shifted*(1-mix)``
hook_k / hook_v              [b, L, d_att]     key / value projections
hook_r                       [b, L, d_att]     receptance after the sigmoid
hook_decay                   [b, d_att]        ``w = -exp(time_decay)``, one copy per row (no pos axis)
hook_bonus                   [b, d_att]        ``u = time_first``, one copy per row (no pos axis)
hook_wkv_write               [b, L, 3, d_att]  per-position write ``(v, 1, k)`` (expensive)
hook_wkv_state               [b, L, 3, d_att]  per-position state read at t (expensive)
hook_wkv                     [b, L, d_att]     WKV output
hook_rwkv                    [b, L, d_att]     ``r * wkv``, the input of the output projection
hook_att_shift_state_out     [b, d]            token-shift state carried out (last unpadded x)
hook_wkv_state_out           [b, 3, d_att]     WKV state carried out of the call
===========================  ================  ==============================================

State representation (see :mod:`nnsight_rnn.scans.wkv4`): a WKV state is the stable triple
``(num, den, max)`` on the axis of size 3, meaning numerator ``num * e^max`` and denominator
``den * e^max`` (so ``num/den`` is the decayed average of past values). ``hook_wkv_state[:, t]``
is the state *read at* position t: everything before t (``[:, 0]`` is the carried-in state).
Editing it changes the output at t only (readout). A write is ``(v_t, 1, k_t)``: numerator
increment ``v e^k``, denominator increment ``1 e^k``; it feeds both the token's own bonus term at
t and the state after t, so editing it at t changes t and every later position and the state
carried out (propagating); zeroing it writes nothing. Both cost ``b*L*3*d_att*4`` bytes and are
computed only when something listens (:meth:`HookPoint.fires`); with ``HookPoint.positions`` set
they hold only those positions (``[b, P, 3, d_att]``, in the order given) and cost ``b*P*3*d_att*4``. Editing a carried-in hook changes
the whole call; editing a carried-out hook changes the state the next call starts from.

Channel-mix hooks (``layers[i].mlp``): ``hook_ffn_shift_state_in`` [b, d], ``hook_x``,
``hook_shifted``, ``hook_xk``, ``hook_xr`` [b, L, d], ``hook_k`` [b, L, d_ff] (``relu(key(xk))**2``,
the neuron activations), ``hook_v`` [b, L, d] (``value(k)``, before the gate), ``hook_r`` [b, L, d]
(sigmoid receptance), ``hook_ffn_shift_state_out`` [b, d].

Padding: with an ``attention_mask`` (``[b, L]``, 0 = padding, anywhere in the row) padded
positions write nothing: the WKV state and both shift states pass them untouched, and the next
real token shifts in the last real token's x. Each row of a padded batch equals the row alone.
Tolerance against HF's CPU path: fp32 rounding (identical bits observed on tiny configs).
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from ..hooks import HookPoint, select_positions
from ..scans.wkv4 import empty_state, wkv4_readout, wkv4_scan, wkv4_write
from ..state import RecurrentState
from .base import Slots, StateFormat, StateLensSource, padding_mask
from .token_shift import ACTIVATION_HOOK, CARRIED_HOOK, LayerState, RwkvChannelMix, TokenShiftMixer, lerp_mix

# --- the carried state: HF's storage, linear coordinates, state lens features -----------------------

# HF's order of the five state tensors of RwkvForCausalLM (each [batch, d, n_layers]).
HF_SLOTS = ("ffn_shift", "att_shift", "num", "den", "max")


def _to_forward_kwargs(model: nn.Module, state: RecurrentState) -> dict[str, Any]:
    hf_state = [torch.stack([layer[name] for layer in state.layers], dim=-1).clone() for name in HF_SLOTS]
    return {"state": hf_state, "use_cache": True}


def _from_output(model: nn.Module, family: str, output: Any) -> RecurrentState:
    hf_state = getattr(output, "state", None)
    if hf_state is None:
        raise ValueError("the output carries no state: run the trace with use_cache=True (or state=...)")
    layers = [
        {name: tensor[:, :, i].clone() for name, tensor in zip(HF_SLOTS, hf_state, strict=True)}
        for i in range(hf_state[0].shape[-1])
    ]
    return RecurrentState(family, layers)


def _linear(slots: Slots) -> Slots:
    """The WKV numerator ``num * e^max`` and denominator ``den * e^max`` (the recurrence is linear in them)."""
    scale = slots["max"].double().exp()
    return {
        "att_shift": slots["att_shift"].float(),
        "ffn_shift": slots["ffn_shift"].float(),
        "num": (slots["num"].double() * scale).float(),
        "den": (slots["den"].double() * scale).float(),
    }


def _add_linear(slots: Slots, delta: Slots, alpha: float) -> Slots:
    out = {k: v.clone() for k, v in slots.items()}
    for k in ("att_shift", "ffn_shift"):
        if k in delta:
            out[k] = slots[k] + (alpha * delta[k]).to(slots[k].dtype)
    unscale = (-slots["max"].double()).exp()  # keep max; express the linear delta at its scale
    for k in ("num", "den"):
        if k in delta:
            out[k] = (slots[k].double() + alpha * delta[k].double() * unscale).to(slots[k].dtype)
    return out


def _lens_features(captured: dict[str, torch.Tensor]) -> torch.Tensor:
    """``[num/den, log(den) + max]`` of the WKV state *after* each position ``[b, L, 2 * d_att]``.

    ``hook_wkv_state`` is the state read at ``t`` (before its write), so the state after ``t`` is the
    one read at ``t + 1``, and ``hook_wkv_state_out`` for the last position.
    """
    read = captured["hook_wkv_state"].float()  # [b, L, 3, d_att]
    last = captured["hook_wkv_state_out"].float()  # [b, 3, d_att]
    after = torch.cat([read[:, 1:], last[:, None]], dim=1)
    num, den, mx = after.unbind(dim=2)
    den = den.clamp_min(1e-30)
    return torch.cat([num / den, den.log() + mx], dim=-1)


RWKV4_STATE = StateFormat(
    "rwkv4_state", _to_forward_kwargs, _from_output, "rwkv4_linear_wkv", _linear, _add_linear,
    StateLensSource(
        ("hook_wkv_state", "hook_wkv_state_out"), _lens_features, "WKV state after t: [num/den, log(den)+max]"
    ),
)  # fmt: skip


class HookableRwkv4TimeMix(TokenShiftMixer):
    """RWKV-4 time-mix with hook points; replaces ``RwkvSelfAttention`` (adopting its parameters).

    ``forward(hidden [b, L, d], state: LayerState | None, attention_mask [b, L] | None) -> [b, L, d]``.
    The projection named ``output`` (kept for the state_dict) is reachable in nnsight as
    ``mixer.out_proj`` (card rename), since ``.output`` is nnsight's module output.
    """

    kind = "rwkv4"
    state_format = RWKV4_STATE
    shift_slot = "att_shift"
    adopted = (
        "time_decay", "time_first", "time_mix_key", "time_mix_value", "time_mix_receptance",
        "key", "value", "receptance", "output",
    )  # fmt: skip

    def __init__(self, original: nn.Module, config: Any, layer_idx: int) -> None:
        super().__init__(original, config, layer_idx)
        self.hidden_size = config.hidden_size
        self.attention_hidden_size = self.time_decay.shape[0]

        # Defined in firing order (iterating hook_points() reads them as they fire).
        carried, act = CARRIED_HOOK, ACTIVATION_HOOK
        self.hook_att_shift_state_in = HookPoint(**carried, doc="token-shift input carried in [b, d]")
        self.hook_wkv_state_in = HookPoint(**carried, doc="WKV state carried in, (num, den, max) [b, 3, d_att]")
        self.hook_x = HookPoint(**act, doc="time-mix input (ln1 output) [b, L, d]")
        self.hook_shifted = HookPoint(**act, doc="token-shift input: previous position's x [b, L, d]")
        self.hook_xk = HookPoint(**act, doc="key input x*mix_k + shifted*(1-mix_k) [b, L, d]")
        self.hook_xv = HookPoint(**act, doc="value input x*mix_v + shifted*(1-mix_v) [b, L, d]")
        self.hook_xr = HookPoint(**act, doc="receptance input x*mix_r + shifted*(1-mix_r) [b, L, d]")
        self.hook_k = HookPoint(**act, doc="key [b, L, d_att]")
        self.hook_v = HookPoint(**act, doc="value [b, L, d_att]")
        self.hook_r = HookPoint(**act, doc="receptance after sigmoid [b, L, d_att]")
        per_row = dict(pos_dim=None, kind="activation")
        self.hook_decay = HookPoint(**per_row, doc="decay w = -exp(time_decay), one row per batch row [b, d_att]")
        self.hook_bonus = HookPoint(**per_row, doc="current-token bonus u = time_first, per batch row [b, d_att]")
        self.hook_wkv_write = HookPoint(
            pos_dim=1, kind="state_write", expensive=True,
            doc="per-position write (v, 1, k) [b, L, 3, d_att]; edits propagate to t and later",
        )  # fmt: skip
        self.hook_wkv_state = HookPoint(
            pos_dim=1, kind="state_readout", expensive=True,
            doc="per-position state read at t, (num, den, max) [b, L, 3, d_att]; edits change only t's output",
        )  # fmt: skip
        self.hook_wkv = HookPoint(**act, doc="WKV output [b, L, d_att]")
        self.hook_rwkv = HookPoint(**act, doc="r * wkv, input of the output projection [b, L, d_att]")
        self.hook_att_shift_state_out = HookPoint(**carried, doc="token-shift state carried out [b, d]")
        self.hook_wkv_state_out = HookPoint(**carried, doc="WKV state carried out, (num, den, max) [b, 3, d_att]")

    @staticmethod
    def state_slots(config: Any) -> dict[str, tuple[int, ...]]:
        """One layer's carried state (time-mix and channel-mix together), shapes without batch.

        ``att_shift`` / ``ffn_shift``: the last x seen by the time-mix / channel-mix (their inputs,
        after ``ln1`` / ``ln2``); ``num``, ``den``, ``max``: the WKV state (fp32).
        """
        d = config.hidden_size
        d_att = config.attention_hidden_size or d
        return {"att_shift": (d,), "ffn_shift": (d,), "num": (d_att,), "den": (d_att,), "max": (d_att,)}

    scan_input_hooks = ("hook_wkv_state_in", "hook_k", "hook_v", "hook_decay", "hook_bonus")

    def recompute_states(self, inputs: dict[str, torch.Tensor], positions: list[int] | None = None) -> torch.Tensor:
        """``hook_wkv_state`` values ``[b, P, 3, d_att]`` from the captured scan inputs (unpadded rows)."""
        k, v = inputs["hook_k"], inputs["hook_v"]
        positions = select_positions(positions, k.shape[1], self.hook_wkv_state.name)
        _, _, states = wkv4_scan(
            inputs["hook_decay"], inputs["hook_bonus"], k, v, inputs["hook_wkv_state_in"],
            keep_states=True, keep_positions=positions,
        )  # fmt: skip
        return states

    def forward(
        self,
        hidden: torch.Tensor,  # [b, L, d], ln1 output
        state: LayerState | None = None,
        attention_mask: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> torch.Tensor:
        batch, length, _ = hidden.shape
        mask = padding_mask(attention_mask, length)
        state = LayerState() if state is None else state
        carried = state.inputs
        shift_in = self._shift_in(state, hidden)
        if "num" in carried:
            wkv_in = torch.stack([carried["num"], carried["den"], carried["max"]], dim=1).float()
        else:
            wkv_in = empty_state(batch, self.attention_hidden_size, hidden.device)
        wkv_in = self.hook_wkv_state_in(wkv_in)

        x, shifted, last = self._shift(hidden, shift_in, mask)
        xk = self.hook_xk(lerp_mix(x, shifted, self.time_mix_key))
        xv = self.hook_xv(lerp_mix(x, shifted, self.time_mix_value))
        xr = self.hook_xr(lerp_mix(x, shifted, self.time_mix_receptance))
        k = self.hook_k(self.key(xk))
        v = self.hook_v(self.value(xv))
        r = self.hook_r(torch.sigmoid(self.receptance(xr)))
        # Per-row copies ([b, d_att]) so that an edit may target one row; the scan broadcasts them.
        w = self.hook_decay(-torch.exp(self.time_decay.float()).expand(batch, -1).clone())
        u = self.hook_bonus(self.time_first.float().expand(batch, -1).clone())

        k_w, v_w, den_write = k, v, None
        if self.hook_wkv_write.fires():
            k_w, v_w, den_write = self._hooked_write(k, v)
        valid = mask.bool() if mask is not None else None
        keep = self.hook_wkv_state.fires()
        positions = select_positions(self.hook_wkv_state.positions, length, self.hook_wkv_state.name)
        wkv, wkv_last, states = wkv4_scan(
            w, u, k_w, v_w, wkv_in, den_write=den_write, valid=valid, keep_states=keep, keep_positions=positions
        )
        if keep:
            states = self.hook_wkv_state(states)
            if positions is None:
                wkv = wkv4_readout(states, u, k_w, v_w, den_write)
            else:  # recompute the output only where states were kept (and possibly edited)
                den_sel = None if den_write is None else den_write[:, positions]
                wkv = wkv.clone()
                wkv[:, positions] = wkv4_readout(states, u, k_w[:, positions], v_w[:, positions], den_sel)
        wkv = self.hook_wkv(wkv.to(k.dtype))
        out = self.output(self.hook_rwkv(r * wkv))

        self._shift_out(state, last)
        num, den, mx = self.hook_wkv_state_out(wkv_last).unbind(1)
        state.outputs.update(num=num, den=den, max=mx)
        return out

    def _hooked_write(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(k, v, den_write)`` [b, L, d_att] after ``hook_wkv_write`` (all positions or the selected ones)."""
        hook = self.hook_wkv_write
        positions = select_positions(hook.positions, k.shape[1], hook.name)
        if positions is None:
            v_w, den_write, k_w = hook(wkv4_write(k, v)).unbind(2)
            return k_w, v_w, den_write
        write = hook(wkv4_write(k[:, positions], v[:, positions]))
        k_w, v_w = k.float().clone(), v.float().clone()
        den_write = torch.ones_like(k_w)
        v_w[:, positions], den_write[:, positions], k_w[:, positions] = write.unbind(2)
        return k_w, v_w, den_write


class HookableRwkv4ChannelMix(RwkvChannelMix):
    """RWKV-4 channel-mix with hook points; replaces ``RwkvFeedForward`` (adopting its parameters).

    See :class:`RwkvChannelMix`: static mixes ``x * time_mix_* + shifted * (1 - time_mix_*)``, gated.
    """

    kind = "rwkv4_channel_mix"
    adopted = ("time_mix_key", "time_mix_receptance", "key", "receptance", "value")
    key_mix, receptance_mix = "time_mix_key", "time_mix_receptance"
    docs: ClassVar[dict[str, str]] = {
        **RwkvChannelMix.docs,
        "xk": "key input x*mix_k + shifted*(1-mix_k) [b, L, d]",
        "xr": "receptance input x*mix_r + shifted*(1-mix_r) [b, L, d]",
    }
