"""RWKV-7 ("Goose", BlinkDL's x070) as a hookable transformers ``PreTrainedModel``, in plain torch.

Module layout and ``state_dict`` names are fla's (and rwkv7-hf's), so their hub folders load
with ``from_pretrained`` unchanged; BlinkDL ``.pth`` files convert with
:func:`nnsight_rnn.models.blinkdl.load_blinkdl`::

    Rwkv7ForCausalLM
      model.embeddings                      token embedding
      model.layers[i]                       Rwkv7Block
        pre_norm (layer 0 only), attn_norm, attn (Rwkv7TimeMix), ffn_norm, ffn (Rwkv7ChannelMix)
      model.norm                            final LayerNorm
      lm_head

The time-mix and channel-mix, their hooks and state semantics: :mod:`nnsight_rnn.mixers.rwkv7`.
Tolerance against BlinkDL's ``rwkv`` package (fp32, CPU): see tests/models/rwkv7.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn
from transformers import initialization as init

from ...mixers.rwkv7 import Rwkv7ChannelMix, Rwkv7TimeMix
from ...mixers.rwkv_cache import LayerCall
from ..rwkv_common import RwkvBackbone, RwkvCausalLM, RwkvPreTrainedBase
from .configuration import Rwkv7Config


class Rwkv7Block(nn.Module):
    """One block: ``h = pre_norm(h)`` (layer 0), ``h += attn(attn_norm(h))``, ``h += ffn(ffn_norm(h))``.

    ``forward(hidden [b, L, d], state: LayerCall | None, attention_mask, v_first) -> [b, L, d]``.
    """

    def __init__(self, config: Rwkv7Config, layer_idx: int) -> None:
        super().__init__()
        self.layer_idx = layer_idx
        d, eps, bias = config.hidden_size, config.norm_eps, config.norm_bias
        if layer_idx == 0:
            self.pre_norm = nn.LayerNorm(d, eps=eps, bias=bias)
        self.attn_norm = nn.LayerNorm(d, eps=eps, bias=bias)
        self.attn = Rwkv7TimeMix(config, layer_idx)
        self.ffn_norm = nn.LayerNorm(d, eps=eps, bias=bias)
        self.ffn = Rwkv7ChannelMix(config, layer_idx)

    def forward(
        self,
        hidden: torch.Tensor,
        state: LayerCall | None = None,
        attention_mask: torch.Tensor | None = None,
        v_first: torch.Tensor | None = None,
    ) -> torch.Tensor:
        if self.layer_idx == 0:
            hidden = self.pre_norm(hidden)
        hidden = hidden + self.attn(self.attn_norm(hidden), state, attention_mask, v_first)
        return hidden + self.ffn(self.ffn_norm(hidden), state, attention_mask)


class Rwkv7PreTrainedModel(RwkvPreTrainedBase):
    config_class = Rwkv7Config
    base_model_prefix = "model"
    _no_split_modules: ClassVar[list[str]] = ["Rwkv7Block"]

    def _init_weights(self, module: nn.Module) -> None:
        """BlinkDL-style initial values for the time-mix parameters; normal(0, initializer_range) for matrices."""
        super()._init_weights(module)
        if isinstance(module, Rwkv7TimeMix):
            cfg = module.config
            n_layers, d, A = cfg.num_hidden_layers, cfg.hidden_size, cfg.attention_hidden_size
            ratio_0_to_1 = module.layer_idx / max(n_layers - 1, 1)
            ratio_1_to_0 = 1.0 - module.layer_idx / n_layers
            ddd = (torch.arange(d, dtype=torch.float32) / d).view(1, 1, d)
            init.copy_(module.x_r, 1.0 - torch.pow(ddd, 0.2 * ratio_1_to_0))
            init.copy_(module.x_w, 1.0 - torch.pow(ddd, 0.9 * ratio_1_to_0))
            init.copy_(module.x_k, 1.0 - torch.pow(ddd, 0.7 * ratio_1_to_0))
            init.copy_(module.x_v, 1.0 - torch.pow(ddd, 0.7 * ratio_1_to_0))
            init.copy_(module.x_a, 1.0 - torch.pow(ddd, 0.9 * ratio_1_to_0))
            init.copy_(module.x_g, 1.0 - torch.pow(ddd, 0.2 * ratio_1_to_0))
            n = torch.arange(A, dtype=torch.float32)
            decay_speed = -7 + 5 * (n / max(A - 1, 1)) ** (0.85 + 1.0 * ratio_0_to_1**0.5)
            init.copy_(module.w_lora.lora[2].bias, decay_speed + 0.5)
            init.constant_(module.k_k, 0.85)
            init.constant_(module.k_a, 1.0)
            init.zeros_(module.r_k)
            init.zeros_(module.a_lora.lora[2].bias)
            if module.layer_idx != 0:
                init.ones_(module.v_lora.lora[2].bias)
        elif isinstance(module, Rwkv7ChannelMix):
            cfg = module.config
            ratio_1_to_0 = 1.0 - module.layer_idx / cfg.num_hidden_layers
            ddd = torch.arange(cfg.hidden_size, dtype=torch.float32) / cfg.hidden_size
            init.copy_(module.x_k, 1.0 - torch.pow(ddd, ratio_1_to_0**4))


class Rwkv7Model(Rwkv7PreTrainedModel, RwkvBackbone):
    """Embedding, blocks, final norm (``embeddings``, ``layers``, ``norm``; fla's names), see :class:`RwkvBackbone`.

    ``hidden_states`` follow the transformer convention, as fla does.
    """

    blocks_attr, final_norm_attr = "layers", "norm"

    def __init__(self, config: Rwkv7Config) -> None:
        super().__init__(config)
        self.embeddings = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList([Rwkv7Block(config, i) for i in range(config.num_hidden_layers)])
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.norm_eps, bias=config.norm_bias)
        self.post_init()

    def _call_block(
        self, i: int, block: nn.Module, hidden: torch.Tensor, calls: list[LayerCall], mask: torch.Tensor | None
    ) -> torch.Tensor:
        # The value residual: layer 0 leaves its value in calls[0].v_first, every later layer mixes it in.
        return block(hidden, calls[i], mask, calls[0].v_first if i else None)


class Rwkv7ForCausalLM(Rwkv7PreTrainedModel, RwkvCausalLM):
    """RWKV-7 language model: :class:`Rwkv7Model` (``model``) and ``lm_head``. ``generate`` carries an :class:`RwkvCache`."""

    backbone_class = Rwkv7Model
    head_attr = "lm_head"
