"""Reading and writing a layer's carried state in transformers' ``DynamicCache``.

transformers 5 keeps Mamba/Mamba-2 state in one ``LinearAttentionLayer`` per layer
(``conv_states[0]``: the last ``conv_kernel`` inputs of the causal conv, ``recurrent_states[0]``:
the SSM state). Its own update methods mix "prefill" and "decode" semantics; the hookable
mixers compute the new state themselves and store it here with plain copies.
"""

from __future__ import annotations

from typing import Any

import torch


def read_linear_cache(cache: Any, layer_idx: int) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """``(conv_state, ssm_state)`` carried into this layer, ``None`` where nothing is stored yet."""
    if cache is None:
        return None, None
    return cache.get_conv_state(layer_idx), cache.get_recurrent_state(layer_idx)


def write_linear_cache(cache: Any, layer_idx: int, conv_state: torch.Tensor, ssm_state: torch.Tensor) -> None:
    """Store the state carried out of this layer (in the cache's own tensors, as HF does)."""
    layer = cache.layers[layer_idx]
    if not layer.is_conv_states_initialized[0]:
        layer.lazy_initialization(conv_states=conv_state, conv_kernel_size=conv_state.shape[-1])
    if not layer.is_recurrent_states_initialized[0]:
        layer.lazy_initialization(recurrent_states=ssm_state)
    stored_conv, stored_ssm = layer.conv_states[0], layer.recurrent_states[0]
    if stored_conv.shape != conv_state.shape or stored_ssm.shape != ssm_state.shape:
        # A cache built for another batch size (e.g. a carried state expanded by the user).
        layer.conv_states[0] = conv_state.to(stored_conv.dtype)
        layer.recurrent_states[0] = ssm_state.to(stored_ssm.dtype)
    elif torch.is_grad_enabled() and (conv_state.requires_grad or ssm_state.requires_grad):
        # Keep the autograd graph through the carried state (copy_ into a leaf would cut it).
        layer.conv_states[0] = conv_state.to(stored_conv.dtype)
        layer.recurrent_states[0] = ssm_state.to(stored_ssm.dtype)
    else:
        stored_conv.copy_(conv_state)
        stored_ssm.copy_(ssm_state)
    layer.has_previous_state[0] = True
