"""What the RWKV-5/6/7 time-mixes share: the carried state in and out, the token shift, the expensive WKV hooks.

The carried state of one layer (``att_shift``, ``wkv``, ``ffn_shift``) and its HF cache are
:mod:`nnsight_rnn.mixers.rwkv_cache`; the recurrences are :mod:`nnsight_rnn.scans.wkv`.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from ..hooks import HookPoint, select_positions
from ..scans.wkv import outer_writes
from .rwkv_cache import RWKV_CACHE, LayerCall
from .token_shift import ACTIVATION_HOOK, CARRIED_HOOK, TokenShiftMixer


def per_head(x: torch.Tensor, heads: int) -> torch.Tensor:
    """``[..., H * N]`` -> ``[..., H, N]`` (a view)."""
    return x.view(*x.shape[:-1], heads, x.shape[-1] // heads)


# --- configuration ---------------------------------------------------------------------------------


class WkvTimeMix(TokenShiftMixer):
    """What the RWKV-5/6/7 time-mixes share (the block's attention; nnsight ``layers[i].mixer``).

    - the carried state: ``att_shift`` [b, d] and ``wkv`` [b, H, K, V] (fp32) enter through
      ``hook_att_shift_state_in`` and ``hook_wkv_state_in``, then the input goes through ``hook_x`` and
      its token shift through ``hook_shifted`` (the first hooks to fire: :meth:`_add_input_hooks`,
      :meth:`_carried_in`, :meth:`_shift`); the state leaves through ``hook_att_shift_state_out`` and
      ``hook_wkv_state_out`` (the last: :meth:`_add_output_hooks`, :meth:`_carry_out`);
    - the expensive per-position hooks ``hook_wkv_write`` and ``hook_wkv_state`` (computed only when
      they fire, honouring ``HookPoint.positions``), see :meth:`_scan_hooks`.

    A version defines its hooks in firing order between those, ``forward`` (its WKV arithmetic) and
    ``recompute_states``, and declares ``version_name`` and ``checkpoints`` (how its checkpoints load,
    for the error of :meth:`from_original`).
    """

    state_format = RWKV_CACHE

    shift_slot = "att_shift"
    version_name: ClassVar[str] = ""
    checkpoints: ClassVar[str] = ""

    @classmethod
    def from_original(cls, original: nn.Module, config: Any, layer_idx: int) -> WkvTimeMix:
        raise TypeError(
            f"{type(original).__name__} is not nnsight-rnn's {cls.version_name} time-mix: load {cls.checkpoints}, "
            "BlinkDL .pth files with nnsight_rnn.models.blinkdl.load_blinkdl(path)"
        )

    @staticmethod
    def state_slots(config: Any) -> dict[str, tuple[int, ...]]:
        """One layer's carried state (time-mix and channel-mix), shapes without the batch axis."""
        d, H, N = config.hidden_size, config.num_heads, config.head_dim
        return {"att_shift": (d,), "wkv": (H, N, N), "ffn_shift": (d,)}

    def _add_input_hooks(self, input_norm: str) -> None:
        """Define the first hooks to fire: the carried state in, the input (``input_norm``'s output), its shift."""
        self.hook_att_shift_state_in = HookPoint(**CARRIED_HOOK, doc="token-shift input carried in [b, d]")
        self.hook_wkv_state_in = HookPoint(**CARRIED_HOOK, doc="WKV state carried in [b, H, K, V] (fp32)")
        self.hook_x = HookPoint(**ACTIVATION_HOOK, doc=f"time-mix input ({input_norm} output) [b, L, d]")
        self.hook_shifted = HookPoint(**ACTIVATION_HOOK, doc="token-shift input: previous position's x [b, L, d]")

    def _add_output_hooks(self) -> None:
        """Define the last hooks to fire: the carried state out."""
        self.hook_att_shift_state_out = HookPoint(**CARRIED_HOOK, doc="token-shift state carried out [b, d]")
        self.hook_wkv_state_out = HookPoint(**CARRIED_HOOK, doc="WKV state carried out [b, H, K, V] (fp32)")

    def _carried_in(self, state: LayerCall, hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(shift [b, d], wkv [b, H, K, V] fp32)`` carried in (zeros at a fresh start), after their hooks."""
        shift_in = self._shift_in(state, hidden)
        wkv_in = state.inputs.get("wkv")
        if wkv_in is None:
            H, N = self.config.num_heads, self.config.head_dim
            wkv_in = hidden.new_zeros(hidden.shape[0], H, N, N, dtype=torch.float32)
        return shift_in, self.hook_wkv_state_in(wkv_in)

    def _scan_hooks(
        self, k: torch.Tensor, v: torch.Tensor
    ) -> tuple[dict[int, torch.Tensor] | None, bool, list[int] | None]:
        """What the expensive hooks ask of the scan, from ``k`` ``[b, L, H, K]`` and ``v`` ``[b, L, H, V]``.

        Returns ``(writes, keep, positions)``: the writes after ``hook_wkv_write`` by position (None when
        it does not fire), whether ``hook_wkv_state`` fires, and its positions (None: all).
        """
        writes = self._hooked_writes(k, v) if self.hook_wkv_write.fires() else None
        keep = self.hook_wkv_state.fires()
        positions = select_positions(self.hook_wkv_state.positions, k.shape[1], self.hook_wkv_state.name)
        return writes, keep, positions

    def _hooked_writes(self, k: torch.Tensor, v: torch.Tensor) -> dict[int, torch.Tensor]:
        """Writes after ``hook_wkv_write``, by position (all positions or the selected ones)."""
        hook = self.hook_wkv_write
        positions = select_positions(hook.positions, k.shape[1], hook.name)
        if positions is None:
            write = hook(outer_writes(k, v))
            return {t: write[:, t] for t in range(k.shape[1])}
        write = hook(outer_writes(k[:, positions], v[:, positions]))
        return {t: write[:, i] for i, t in enumerate(positions)}

    def _carry_out(self, state: LayerCall, last: torch.Tensor, wkv_last: torch.Tensor) -> None:
        """Carry the last input ``[b, d]`` and the WKV state ``[b, H, K, V]`` out through their hooks."""
        self._shift_out(state, last)
        state.outputs["wkv"] = self.hook_wkv_state_out(wkv_last)


# --- the models ----------------------------------------------------------------------------------------
