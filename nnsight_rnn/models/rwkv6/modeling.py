"""RWKV-6 ("Finch") as a hookable transformers ``PreTrainedModel`` in plain torch; the RWKV-5/6 machinery.

Module layout and ``state_dict`` names are those of the RWKV "-hf" hub repos (``RWKV/v6-Finch-*-HF``,
``RWKV/rwkv-5-world-*``), so their folders load with ``from_pretrained``; BlinkDL ``.pth`` files
convert with :func:`nnsight_rnn.models.blinkdl.load_blinkdl`::

    Rwkv6ForCausalLM
      rwkv.embeddings
      rwkv.blocks[i]            pre_ln (block 0), ln1, attention (time-mix), ln2, feed_forward (channel-mix)
      rwkv.ln_out
      head

The time-mix and channel-mix, their hooks and state semantics: :mod:`nnsight_rnn.mixers.rwkv6`.

The time-mix projection named ``output`` (the "-hf" name, kept for the ``state_dict``) is
``layers[i].mixer.out_proj`` in nnsight (card rename), since ``.output`` is nnsight's module output.
Padding: as RWKV-7 (padded positions leave every state untouched, exactly).
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn
from transformers import initialization as init

from ...mixers.rwkv6 import Rwkv6ChannelMix, Rwkv6TimeMix, Rwkv56ChannelMix, Rwkv56TimeMix
from ...mixers.rwkv_cache import LayerCall
from ..rwkv_common import RwkvBackbone, RwkvCausalLM, RwkvPreTrainedBase
from .configuration import Rwkv6Config


class Rwkv56Block(nn.Module):
    """``h = pre_ln(h)`` (block 0), ``h += attention(ln1(h))``, ``h += feed_forward(ln2(h))``; returns ``[b, L, d]``."""

    def __init__(
        self, config: Any, layer_idx: int, time_mix: type[Rwkv56TimeMix], channel_mix: type[Rwkv56ChannelMix]
    ) -> None:
        super().__init__()
        self.layer_idx = layer_idx
        d, eps = config.hidden_size, config.layer_norm_epsilon
        if layer_idx == 0:
            self.pre_ln = nn.LayerNorm(d, eps=eps)
        self.ln1 = nn.LayerNorm(d, eps=eps)
        self.ln2 = nn.LayerNorm(d, eps=eps)
        self.attention = time_mix(config, layer_idx)
        self.feed_forward = channel_mix(config, layer_idx)

    def forward(
        self, hidden: torch.Tensor, state: LayerCall | None = None, attention_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        if self.layer_idx == 0:
            hidden = self.pre_ln(hidden)
        hidden = hidden + self.attention(self.ln1(hidden), state, attention_mask)
        return hidden + self.feed_forward(self.ln2(hidden), state, attention_mask)


class Rwkv56PreTrainedModel(RwkvPreTrainedBase):
    """The "-hf" layout: ``rwkv`` (the backbone) and ``head``; a version sets its time-mix and channel-mix classes."""

    base_model_prefix = "rwkv"
    _no_split_modules: ClassVar[list[str]] = ["Rwkv56Block"]
    time_mix_class: ClassVar[type[Rwkv56TimeMix]] = Rwkv6TimeMix
    channel_mix_class: ClassVar[type[Rwkv56ChannelMix]] = Rwkv6ChannelMix

    def _init_weights(self, module: nn.Module) -> None:
        """BlinkDL-style initial values for the token-shift, decay and bonus parameters."""
        super()._init_weights(module)
        if not isinstance(module, (Rwkv56TimeMix, Rwkv56ChannelMix)):
            return
        cfg = module.config
        n, d = cfg.num_hidden_layers, cfg.hidden_size
        r01, r10 = module.layer_idx / max(n - 1, 1), 1.0 - module.layer_idx / n
        ddd = (torch.arange(d, dtype=torch.float32) / d).view(1, 1, d)
        # Token-shift mixes: the share of x kept is ddd**r10 (RWKV-6's time_maa_* hold the share of shifted).
        for name, param in module.named_parameters(recurse=False):
            if name.startswith(("time_maa_", "time_mix_")) and param.dim() == 3 and param.shape[0] == 1:
                init.copy_(param, 1.0 - torch.pow(ddd, r10) if name.startswith("time_maa") else torch.pow(ddd, r10))
            elif name in ("time_maa_w1", "time_maa_w2", "time_decay_w1", "time_decay_w2"):
                init.uniform_(param, -1e-2, 1e-2)
        if isinstance(module, Rwkv56TimeMix):
            h = torch.arange(cfg.attention_hidden_size, dtype=torch.float32)
            top = max(cfg.attention_hidden_size - 1, 1)
            decay = -6 + 5 * (h / top) ** (0.7 + 1.3 * r01)
            bonus = r01 * (1 - h / top) + 0.1 * ((h + 1) % 3 - 1)
            init.copy_(module.time_faaaa, bonus.view_as(module.time_faaaa))
            init.copy_(module.time_decay, decay.view_as(module.time_decay))


class Rwkv56Model(Rwkv56PreTrainedModel, RwkvBackbone):
    """Embedding, blocks, final norm (``embeddings``, ``blocks``, ``ln_out``); see :class:`RwkvBackbone`.

    (The "-hf" models return ``hidden_states`` ``[out_0, ..., out_{n-1}, ln_out(out_{n-1})]``.)
    """

    blocks_attr, final_norm_attr = "blocks", "ln_out"

    def __init__(self, config: Any) -> None:
        super().__init__(config)
        self.embeddings = nn.Embedding(config.vocab_size, config.hidden_size)
        self.blocks = nn.ModuleList(
            [
                Rwkv56Block(config, i, self.time_mix_class, self.channel_mix_class)
                for i in range(config.num_hidden_layers)
            ]
        )
        self.ln_out = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_epsilon)
        self.post_init()


class Rwkv56ForCausalLM(Rwkv56PreTrainedModel, RwkvCausalLM):
    """Language model: ``rwkv`` (the backbone) and ``head``. ``generate`` carries an :class:`RwkvCache`."""

    backbone_class: ClassVar[type[Rwkv56Model]] = Rwkv56Model
    head_attr = "head"


class Rwkv6PreTrainedModel(Rwkv56PreTrainedModel):
    config_class = Rwkv6Config


class Rwkv6Model(Rwkv6PreTrainedModel, Rwkv56Model):
    """RWKV-6 backbone (``rwkv``)."""


class Rwkv6ForCausalLM(Rwkv6PreTrainedModel, Rwkv56ForCausalLM):
    """RWKV-6 ("Finch") language model, hookable (see the module docstring)."""

    backbone_class = Rwkv6Model
