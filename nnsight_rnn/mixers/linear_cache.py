"""The Mamba-1 / Mamba-2 carried state in transformers' cache: the :class:`StateFormat` both mixers declare.

Slots per layer: ``conv`` ``[b, conv_dim, K]`` (the last ``K`` inputs of the causal conv) and ``ssm``
(Mamba-1 ``[b, d_inner, N]``, Mamba-2 ``[b, H, P, N]``). The recurrence is linear in both, so the
linear coordinates are the slots themselves. The cache's layout is an upstream contract: every
access goes through :mod:`nnsight_rnn.upstream`.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import torch
from torch import nn

from ..state import RecurrentState
from ..upstream import mamba_cache_kwargs, new_linear_cache, output_cache, read_linear_cache, write_linear_cache
from .base import StateFormat, StateLensSource


def to_forward_kwargs(model: nn.Module, state: RecurrentState) -> dict[str, Any]:
    cache = new_linear_cache(model.config)
    for i, layer in enumerate(state.layers):
        write_linear_cache(cache, i, layer["conv"].clone(), layer["ssm"].clone(), new_tokens=0)
    return {**mamba_cache_kwargs(cache), "use_cache": True}


def from_output(model: nn.Module, family: str, output: Any) -> RecurrentState:
    cache = output_cache(output)
    if cache is None:
        raise ValueError("the output carries no state: run the trace with use_cache=True (or state=...)")
    layers = []
    for i in range(model.config.num_hidden_layers):
        conv, ssm = read_linear_cache(cache, i)
        if conv is None or ssm is None:
            raise ValueError(f"layer {i} stored no state in this output's cache")
        layers.append({"conv": conv.clone(), "ssm": ssm.clone()})
    return RecurrentState(family, layers)


def flattened_ssm_state(captured: dict[str, torch.Tensor]) -> torch.Tensor:
    """State lens features: ``hook_ssm_state`` ``[b, L, ...]`` flattened to ``[b, L, d_state]`` (fp32)."""
    h = captured["hook_ssm_state"]
    return h.reshape(h.shape[0], h.shape[1], -1).float()


LINEAR_CACHE = StateFormat("linear_attention_cache", to_forward_kwargs, from_output)


def with_lens(description: str) -> StateFormat:
    """:data:`LINEAR_CACHE` with a state lens on ``hook_ssm_state`` (``description``: its shape)."""
    return replace(LINEAR_CACHE, lens=StateLensSource(("hook_ssm_state",), flattened_ssm_state, description))
