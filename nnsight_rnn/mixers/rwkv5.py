"""RWKV-5's time-mix and channel-mix: RWKV-6's (:mod:`nnsight_rnn.mixers.rwkv6`) with static token-shift lerps and a constant decay."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import nn

from .rwkv6 import Rwkv56ChannelMix, Rwkv56TimeMix
from .token_shift import lerp_mix

if TYPE_CHECKING:
    pass


class Rwkv5TimeMix(Rwkv56TimeMix):
    """RWKV-5.2 time-mix: static token-shift lerps, per-head per-channel constant decay ``time_decay`` [H, K]."""

    kind = "rwkv5"
    mix_names: ClassVar[tuple[str, ...]] = ("k", "v", "r", "g")
    decay_per_position: ClassVar[bool] = False
    _PARAMS: ClassVar[dict[str, str]] = {
        "k": "time_mix_key", "v": "time_mix_value", "r": "time_mix_receptance", "g": "time_mix_gate",
    }  # fmt: skip

    def _init_mix_parameters(self, config: Any) -> None:
        d = config.hidden_size
        self.time_decay = nn.Parameter(torch.zeros(config.num_heads, config.head_size))
        for name in self._PARAMS.values():
            setattr(self, name, nn.Parameter(torch.zeros(1, 1, d)))

    def _mixes(self, x: torch.Tensor, shifted: torch.Tensor) -> dict[str, torch.Tensor]:
        return {
            name: getattr(self, f"hook_x{name}")(lerp_mix(x, shifted, getattr(self, self._PARAMS[name])))
            for name in self.mix_names
        }

    def _decay(self, mixes: dict[str, torch.Tensor], batch: int) -> torch.Tensor:
        return torch.exp(-torch.exp(self.time_decay.float())).flatten().expand(batch, -1).clone()


class Rwkv5ChannelMix(Rwkv56ChannelMix):
    """RWKV-5 channel-mix: ``x * time_mix_key + shifted * (1 - time_mix_key)`` (and ``time_mix_receptance``)."""

    mix = staticmethod(lerp_mix)
    key_mix, receptance_mix = "time_mix_key", "time_mix_receptance"
