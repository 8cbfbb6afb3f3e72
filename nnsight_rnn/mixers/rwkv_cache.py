"""The recurrent state of nnsight-rnn's RWKV-5/6/7 models: the cache they carry and its nnsight-rnn format.

The carried state of one layer is a dict ``slot -> [batch, ...]`` tensor:

- ``att_shift`` ``[b, d]``: the last (unpadded) input of the time-mix (after its LayerNorm);
- ``wkv`` ``[b, H, K, V]`` fp32: the per-head WKV state, key axis before value axis
  (fla's and rwkv7-hf's layout; BlinkDL's RWKV-7 code stores ``[H, V, K]``, its RWKV-5/6 code
  ``[H, K, V]``);
- ``ffn_shift`` ``[b, d]``: the last (unpadded) input of the channel-mix.

Models never write into state tensors in place: a call reads the slots it is given and returns
fresh ones, so one cache (or :class:`~nnsight_rnn.state.RecurrentState`) can seed many
continuations and autograd runs through the carried state.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch

from ..state import RecurrentState
from ..upstream import OUTPUT_CACHE_FIELD, output_cache
from .base import StateFormat, known
from .token_shift import LayerState

SLOTS = ("att_shift", "wkv", "ffn_shift")


class RwkvCache:
    """The recurrent state carried between calls of an RWKV-5/6/7 model (``past_key_values``).

    Attributes:
        layers: one dict per layer, slot name (``att_shift``, ``wkv``, ``ffn_shift``) ->
            ``[batch, ...]`` tensor (see the module docstring for shapes).
        seen_tokens: how many positions (padding included) produced this state; used by
            ``generate`` to slice the next input.

    Not a transformers ``Cache`` subclass: RWKV's state has no key/value axis. ``generate`` treats
    it as an opaque object (``get_seq_length``, ``reorder_cache`` for beam search).
    """

    # What generate() asks of a cache it is handed (upstream C6): it cannot be compiled, and every layer
    # is linear attention (5.24's prefill then slices no key/value axis).
    is_compileable = False

    @property
    def is_linear(self) -> list[bool]:
        return [True] * len(self.layers)

    def __init__(self, layers: list[dict[str, torch.Tensor]] | None = None, seen_tokens: int = 0) -> None:
        self.layers: list[dict[str, torch.Tensor]] = [dict(layer) for layer in (layers or [])]
        self.seen_tokens = int(seen_tokens)

    def __len__(self) -> int:
        return len(self.layers)

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        return iter(self.layers)

    def __getitem__(self, layer_idx: int) -> dict[str, torch.Tensor]:
        return self.layers[layer_idx]

    def __repr__(self) -> str:
        shapes = {k: tuple(v.shape) for k, v in self.layers[0].items()} if self.layers else {}
        return f"RwkvCache(layers={len(self.layers)}, seen_tokens={self.seen_tokens}, layer0={shapes})"

    @property
    def batch_size(self) -> int | None:
        for layer in self.layers:
            for t in layer.values():
                return int(t.shape[0])
        return None

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self.seen_tokens

    def get_max_cache_shape(self, layer_idx: int = 0) -> None:
        return None

    def clone(self) -> RwkvCache:
        return RwkvCache([{k: v.clone() for k, v in layer.items()} for layer in self.layers], self.seen_tokens)

    def _map(self, fn: Any) -> RwkvCache:
        self.layers = [{k: fn(v) for k, v in layer.items()} for layer in self.layers]
        return self

    def reorder_cache(self, beam_idx: torch.LongTensor) -> RwkvCache:
        return self._map(lambda t: t.index_select(0, beam_idx.to(t.device)))

    def batch_select_indices(self, indices: torch.Tensor) -> RwkvCache:
        return self._map(lambda t: t[indices.to(t.device)])

    def batch_repeat_interleave(self, repeats: int) -> RwkvCache:
        return self._map(lambda t: t.repeat_interleave(repeats, dim=0))

    def to(self, *args: Any, **kwargs: Any) -> RwkvCache:
        return self._map(lambda t: t.to(*args, **kwargs))

    @classmethod
    def from_state(cls, state: RecurrentState) -> RwkvCache:
        """A cache holding copies of ``state``'s tensors."""
        return cls(state.clone().layers)

    def to_state(self, family: str) -> RecurrentState:
        """The cache's state as a :class:`RecurrentState` (copies)."""
        return RecurrentState(family, self.layers).clone()


class LayerCall(LayerState):
    """One layer's carried state for one call, shared by its time-mix and channel-mix.

    ``inputs`` holds the slots carried into the call (read only, possibly empty: a fresh start),
    ``outputs`` receives the slots carried out. ``v_first`` (RWKV-7) receives layer 0's value,
    which every later layer mixes into its own.
    """

    def __init__(self, inputs: dict[str, torch.Tensor] | None = None) -> None:
        super().__init__(inputs)
        self.v_first: torch.Tensor | None = None


def call_mask(attention_mask: torch.Tensor | None, length: int) -> torch.Tensor | None:
    """The ``[b, length]`` mask of this call's positions (``generate`` passes the whole prefix's mask).

    Returns None when nothing is masked (the fast path).
    """
    if attention_mask is None:
        return None
    if attention_mask.dim() != 2 or attention_mask.shape[1] < length:
        raise ValueError(
            f"attention_mask must be [batch, seq] with seq >= the {length} input positions; got {tuple(attention_mask.shape)}"
        )
    mask = attention_mask[:, -length:]
    return None if known(mask.all(), unknown=False) else mask


def cache_layers(cache: Any, n_layers: int, batch: int) -> list[LayerCall]:
    """One :class:`LayerCall` per layer, reading ``cache`` (an :class:`RwkvCache` or None)."""
    if cache is None or len(cache) == 0:
        return [LayerCall() for _ in range(n_layers)]
    if not isinstance(cache, RwkvCache):
        raise TypeError(
            f"past_key_values must be an nnsight_rnn RwkvCache (from a previous call with use_cache=True), "
            f"got {type(cache).__name__}"
        )
    if len(cache) != n_layers:
        raise ValueError(f"the cache has {len(cache)} layers; the model has {n_layers}")
    if cache.batch_size is not None and cache.batch_size != batch:
        raise ValueError(
            f"the cache holds a state for batch {cache.batch_size} but the input has batch {batch}; "
            "expand a batch-1 state with RecurrentState.expand(batch)"
        )
    return [LayerCall(dict(layer)) for layer in cache.layers]


def one_cache(caches: list[Any]) -> RwkvCache | None:
    """The one cache a call was handed under any of its names (upstream C5), or None."""
    if len(caches) > 1:
        raise TypeError(f"got {len(caches)} different caches (past_key_values / cache); pass one")
    return caches[0] if caches else None


# The carried state's nnsight-rnn format, declared by every RWKV-5/6/7 time-mix (``WkvTimeMix.state_format``).


def _cache_to_kwargs(model: Any, state: RecurrentState) -> dict[str, Any]:
    return {OUTPUT_CACHE_FIELD: RwkvCache.from_state(state), "use_cache": True}


def _cache_from_output(model: Any, family: str, output: Any) -> RecurrentState:
    cache = output_cache(output)
    if not isinstance(cache, RwkvCache) or len(cache) == 0:
        raise ValueError("the output carries no state: run the trace with use_cache=True (or state=...)")
    return cache.to_state(family)


RWKV_CACHE = StateFormat("rwkv_cache", _cache_to_kwargs, _cache_from_output)
