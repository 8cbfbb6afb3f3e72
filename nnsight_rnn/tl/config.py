"""``HookedLM.cfg``: the subset of TransformerLens's ``HookedTransformerConfig`` that tools read."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..cards import Card


@dataclass
class HookedLMConfig:
    """The subset of TransformerLens's ``cfg`` that tools read (sae-lens, TL utilities)."""

    model_name: str
    family: str
    n_layers: int
    d_model: int
    d_vocab: int
    d_vocab_out: int
    n_ctx: int | None
    device: torch.device
    dtype: torch.dtype
    is_recurrent: bool
    normalization_type: str | None
    original_architecture: str
    default_prepend_bos: bool = False
    tokenizer_prepends_bos: bool = False
    default_padding_side: str = "left"
    extra: dict[str, Any] = field(default_factory=dict)


def make_config(
    model: nn.Module,
    card: Card,
    n_layers: int,
    *,
    embed: nn.Module,
    final_norm: nn.Module,
    unembed: nn.Module,
    tokenizer: Any,
) -> HookedLMConfig:
    """Read the config from the HF model's weights and config (widths from the weights where they exist)."""
    config = model.config
    param = next(model.parameters())
    weight = getattr(embed, "weight", None)
    d_model = int(weight.shape[1]) if weight is not None else int(config.hidden_size)
    unembed_w = getattr(unembed, "weight", None)
    d_vocab_out = int(unembed_w.shape[0]) if unembed_w is not None else int(config.vocab_size)
    n_ctx = next(
        (getattr(config, k) for k in ("n_positions", "max_position_embeddings") if getattr(config, k, None)),
        None,
    )
    norm = final_norm
    norm_type = "LN" if isinstance(norm, nn.LayerNorm) else ("RMS" if "RMSNorm" in type(norm).__name__ else None)
    return HookedLMConfig(
        model_name=str(getattr(config, "_name_or_path", "") or type(model).__name__),
        family=card.family,
        n_layers=n_layers,
        d_model=d_model,
        d_vocab=int(config.vocab_size),
        d_vocab_out=d_vocab_out,
        n_ctx=n_ctx,
        device=param.device,
        dtype=param.dtype,
        is_recurrent=card.is_recurrent,
        normalization_type=norm_type,
        original_architecture=type(model).__name__,
        default_padding_side=getattr(tokenizer, "padding_side", "left") or "left",
    )
