"""RWKV-5 ("Eagle", BlinkDL's 5.2) as a hookable transformers ``PreTrainedModel`` in plain torch.

Same layout, hooks and state semantics as RWKV-6 (:mod:`nnsight_rnn.models.rwkv6.modeling`), except:
the token-shift mixes are static lerps ``x * time_mix_* + shifted * (1 - time_mix_*)`` (``hook_xk``,
``hook_xv``, ``hook_xr``, ``hook_xg``; no ``hook_xw``) and the decay ``w = exp(-exp(time_decay))`` is
constant over positions: ``hook_decay`` is ``[b, A]`` (one copy per row, no position axis).
"""

from __future__ import annotations

from ...mixers.rwkv5 import Rwkv5ChannelMix, Rwkv5TimeMix
from ..rwkv6.modeling import (
    Rwkv56ForCausalLM,
    Rwkv56Model,
    Rwkv56PreTrainedModel,
)
from .configuration import Rwkv5Config


class Rwkv5PreTrainedModel(Rwkv56PreTrainedModel):
    config_class = Rwkv5Config
    time_mix_class = Rwkv5TimeMix
    channel_mix_class = Rwkv5ChannelMix


class Rwkv5Model(Rwkv5PreTrainedModel, Rwkv56Model):
    """RWKV-5 backbone (``rwkv``)."""


class Rwkv5ForCausalLM(Rwkv5PreTrainedModel, Rwkv56ForCausalLM):
    """RWKV-5 ("Eagle") language model, hookable."""

    backbone_class = Rwkv5Model
