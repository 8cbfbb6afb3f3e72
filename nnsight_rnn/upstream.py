"""Every upstream contract nnsight-rnn relies on that transformers does not promise, in one place.

transformers ships a minor release about every two weeks and has changed the recurrent models'
private plumbing in consecutive releases (5.24 renamed the Mamba family's ``cache_params`` to
``cache``; 5.25 added a token count to the linear-attention cache layer). Everything nnsight-rnn
touches that is not public API goes through this module, dispatched on the installed version, so
that a new release breaks one file, and a contract check (:mod:`nnsight_rnn.contract`) turns any
drift into a loud :class:`UpstreamContractError` instead of a silently wrong number.

Where owning code removes a contract, we own it: the hookable mixers compute the state themselves
(HF's scan functions, kernel dispatch and cache-update methods are never called), and our
RWKV-5/6/7 models are ours end to end. What is left:

=====  ==========================================================  ============================
 id    contract                                                     versions
=====  ==========================================================  ============================
 C1    the cache keyword a Mamba / Mamba-2 / FalconMamba block      ``cache_params`` <= 5.23,
       passes its mixer, and that the model's ``forward`` takes     ``cache`` >= 5.24
 C2    the output field that carries the cache out                  same names as C1
 C3    ``LinearAttentionLayer`` storage: ``conv_states[0]``,         5.23 - 5.25
       ``recurrent_states[0]``, ``has_previous_state[0]``,
       ``is_*_initialized[0]``, ``lazy_initialization``
 C4    its token count ``cumulative_length_linear`` (read by        >= 5.25 (absent before)
       ``get_seq_length``, hence masks and assisted decoding)
 C5    ``generate`` hands the cache back to ``forward`` under the    ``past_key_values`` <= 5.23,
       name of C1 (our RWKV-5/6/7 models accept both)               ``cache`` >= 5.24
 C6    ``generate`` builds no ``DynamicCache`` for a class whose     5.23 - 5.25
       name contains ``rwkv`` (our RWKV-5/6/7 carry their own         (``is_linear`` read by
       ``RwkvCache``: ``get_seq_length``, ``reorder_cache``,          5.24 only)
       ``is_compileable``, ``is_linear``)
 C7    RWKV-4: ``modeling_rwkv.RwkvBlock`` / ``RwkvModel`` /         5.23 - 5.25
       ``RwkvOutput`` and the ``state`` keyword / output field
 C8    ``generate`` picks the cache keyword of a model by            <= 5.23 (``cache`` for all
       ``"mamba" in class name`` (``cache_params``, else               from 5.24)
       ``past_key_values``): a Mamba variant's class needs
       "mamba" in its name there (the contract check catches it)
=====  ==========================================================  ============================

:data:`TESTED` is the range CI runs (``.ci/run``: the newest release a fresh install resolves,
and ``.ci/oldest-constraints.txt``). pyproject's bounds say the same.
"""

from __future__ import annotations

import importlib.metadata
import re
from typing import Any

import torch

from .errors import UpstreamContractError

# The minors CI tests, inclusive (pyproject's bounds). Not enforced at run time: the contract check
# (nnsight_rnn.contract) decides by numbers, and its error and `nnsight-rnn doctor` report this range.
TESTED: dict[str, tuple[str, str]] = {
    "transformers": ("5.23", "5.25"),
    "nnsight": ("0.8", "0.8"),
    "transformer-lens": ("3.9", "4.3"),
    "tuned-lens": ("0.2", "0.2"),
}


def version_of(package: str) -> str | None:
    """The installed version of ``package`` (distribution name), or None if it is not installed."""
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def minor(version: str) -> tuple[int, int]:
    """``"5.24.0.dev0"`` -> ``(5, 24)``."""
    match = re.match(r"(\d+)\.(\d+)", version)
    if match is None:
        raise UpstreamContractError(f"cannot read the version {version!r}")
    return int(match.group(1)), int(match.group(2))


def in_tested_range(package: str, version: str | None = None) -> bool:
    """True if ``package``'s installed (or given) version lies in :data:`TESTED`."""
    version = version or version_of(package)
    if version is None:
        return False
    low, high = TESTED[package]
    return minor(low) <= minor(version) <= minor(high)


def versions_line() -> str:
    """``"transformers 5.25.0 (tested 5.23-5.25), nnsight 0.8.1 (tested 0.8-0.8), torch 2.13.0"``."""
    parts = []
    for package, (low, high) in TESTED.items():
        installed = version_of(package)
        if installed is not None:
            parts.append(f"{package} {installed} (tested {low}-{high})")
    parts.append(f"torch {torch.__version__}")
    return ", ".join(parts)


_TRANSFORMERS = minor(version_of("transformers") or "0.0")

# --- C1 / C2 / C5: the cache's name -----------------------------------------------------------

#: The keyword under which HF's Mamba-family models take (and pass to their mixers) the cache,
#: and the output field that carries it out.
MAMBA_CACHE_NAME: str = "cache" if _TRANSFORMERS >= (5, 24) else "cache_params"
#: The cache field of transformers' generic output classes (``BaseModelOutputWithPast``, ...).
OUTPUT_CACHE_FIELD: str = "cache" if _TRANSFORMERS >= (5, 24) else "past_key_values"
#: Every name a cache has had, newest first (a forward that accepts any of them).
CACHE_NAMES: tuple[str, ...] = ("cache", "cache_params", "past_key_values")


def cache_argument(explicit: Any, kwargs: dict[str, Any]) -> list[Any]:
    """Every distinct cache a forward was given, under its own parameter or any of :data:`CACHE_NAMES`.

    The names are popped from ``kwargs``. Usually one cache or none. Two happen when a caller passes
    the cache under an older name than the installed transformers uses and the model makes a
    fresh one under the new name (TransformerLens 4.3's ``generate`` on transformers >= 5.24 passes
    ``past_key_values`` to Mamba-2, whose blocks forward it): :func:`read_linear_cache` then reads
    the one that holds a state (two different states are an error, not a guess) and
    :func:`write_linear_cache` updates all of them, so every holder continues correctly.
    """
    found = [] if explicit is None else [explicit]
    for name in CACHE_NAMES:
        value = kwargs.pop(name, None)
        if value is not None and all(value is not f for f in found):
            found.append(value)
    return found


def mamba_cache_kwargs(cache: Any) -> dict[str, Any]:
    """The forward kwarg that hands ``cache`` to an HF Mamba-family model (C1)."""
    return {MAMBA_CACHE_NAME: cache}


def output_cache(output: Any) -> Any:
    """The cache an HF model output carries out (C2), or None."""
    for name in CACHE_NAMES:
        # Read the dataclass fields, not the deprecated properties (which warn on >= 5.24).
        if isinstance(output, dict) and output.get(name) is not None:
            return output[name]
    for name in CACHE_NAMES:
        value = getattr(output, name, None)
        if value is not None:
            return value
    return None


# --- C3 / C4: the linear-attention cache layer's storage --------------------------------------


def new_linear_cache(config: Any) -> Any:
    """An empty HF ``DynamicCache`` for a Mamba-family ``config`` (one linear-attention layer per layer)."""
    from transformers import DynamicCache

    return DynamicCache(config=config)


def _layer(cache: Any, layer_idx: int) -> Any:
    try:
        layer = cache.layers[layer_idx]
        layer.conv_states, layer.recurrent_states, layer.has_previous_state  # noqa: B018 (the contract, C3)
    except (AttributeError, IndexError, TypeError) as error:
        raise UpstreamContractError(
            f"transformers' cache no longer has the linear-attention layer layout nnsight-rnn reads "
            f"(cache.layers[{layer_idx}].conv_states / recurrent_states / has_previous_state): {error}. "
            f"{versions_line()}. Install a tested transformers, or see docs/upstream.md."
        ) from None
    return layer


def read_linear_cache(cache: Any, layer_idx: int) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """``(conv_state [b, D, K], ssm_state)`` carried into this layer, ``(None, None)`` if nothing is stored yet.

    ``cache`` is one cache, None, or a list from :func:`cache_argument`.
    """
    stored = []
    for one in _as_list(cache):
        layer = _layer(one, layer_idx)
        if layer.has_previous_state[0]:
            stored.append((layer.conv_states[0], layer.recurrent_states[0]))
    for conv, ssm in stored[1:]:
        if not (torch.equal(conv, stored[0][0]) and torch.equal(ssm, stored[0][1])):
            raise UpstreamContractError(
                f"layer {layer_idx} was given {len(stored)} caches holding different states (under the keywords "
                f"{list(CACHE_NAMES)}); pass the state once, under {MAMBA_CACHE_NAME!r}. {versions_line()}."
            )
    return stored[0] if stored else (None, None)


def _as_list(cache: Any) -> list[Any]:
    if cache is None:
        return []
    return list(cache) if isinstance(cache, list) else [cache]


def write_linear_cache(
    cache: Any, layer_idx: int, conv_state: torch.Tensor, ssm_state: torch.Tensor, new_tokens: int
) -> None:
    """Store the state carried out of this layer in ``cache`` (one, or a list: each of them), and count
    ``new_tokens`` (C4), as HF's own update does.

    The hookable mixers compute the new state themselves, so HF's update methods (whose prefill and
    decode semantics differ across releases) are never called; the tensors go in with plain copies
    (the cache's own tensors where shapes allow, keeping their addresses as HF does).
    """
    for one in _as_list(cache):
        _write_one(_layer(one, layer_idx), conv_state, ssm_state, new_tokens)


def _write_one(layer: Any, conv_state: torch.Tensor, ssm_state: torch.Tensor, new_tokens: int) -> None:
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
    count = getattr(layer, "cumulative_length_linear", None)  # C4: >= 5.25 only
    if isinstance(count, torch.Tensor):
        layer.cumulative_length_linear = count.to(conv_state.device)
        layer.cumulative_length_linear.add_(new_tokens)
