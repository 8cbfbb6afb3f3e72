"""Residual-stream helpers that work on recurrent models as on transformers.

All take a :class:`~nnsight_rnn.tl.HookedLM` and either a cache (the dict ``run_with_cache``
returns, holding the names :func:`resid_hook_names` lists) or an input (string(s) or token ids),
in which case they run the model once with exactly the hooks they need (cheap ones: no
per-position states).

The residual stream of block ``i`` is ``blocks.{i}.hook_resid_pre`` (``[batch, pos, d_model]``); its
first term is the embedding (``hook_embed``), except for RWKV, whose block 0 normalises the
embedding first (``blocks.0.pre_ln.hook_normalized``, RWKV-7 ``blocks.0.pre_norm.hook_normalized``,
used as the start of the stream here; ``model.resid_start`` names it). Every
block adds its mixer output (``hook_mixer_out``) and, where it has one, its MLP output
(``hook_mlp_out``): ``resid_pre[k] = start + sum_{i<k} (mixer_out[i] + mlp_out[i])``, exactly up to
fp32 summation order (observed <= 1e-6 relative on tiny models).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .hooked import HookedLM

Cache = dict[str, torch.Tensor]


def _n(model: HookedLM, layer: int | None) -> int:
    n = model.cfg.n_layers
    if layer is None or layer == -1:
        return n
    if not 0 <= layer <= n:
        raise IndexError(f"layer {layer} is out of range: valid 0..{n} (n_layers = final residual) or None")
    return layer


def _start_name(model: HookedLM) -> str:
    return model.resid_start


def _has_mlp(model: HookedLM) -> bool:
    return "blocks.0.hook_mlp_out" in model.hook_dict


def resid_hook_names(model: HookedLM, *, components: bool = False) -> list[str]:
    """Names the helpers read: residual stream per layer, or (``components=True``) its terms."""
    n = model.cfg.n_layers
    if not components:
        return (
            [_start_name(model)]
            + [f"blocks.{i}.hook_resid_pre" for i in range(1, n)]
            + [f"blocks.{n - 1}.hook_resid_post"]
        )
    names = [_start_name(model)]
    for i in range(n):
        names.append(f"blocks.{i}.hook_mixer_out")
        if _has_mlp(model):
            names.append(f"blocks.{i}.hook_mlp_out")
    return [*names, f"blocks.{n - 1}.hook_resid_post"]


def _cache(model: HookedLM, cache_or_input: Any, names: list[str]) -> Cache:
    if isinstance(cache_or_input, dict):
        missing = [n for n in names if n not in cache_or_input]
        if missing:
            raise KeyError(
                f"the cache lacks {missing[:4]}{' ...' if len(missing) > 4 else ''}: run "
                "model.run_with_cache(input, names_filter=nnsight_rnn.tl.residual.resid_hook_names(model, ...)) "
                "or pass the input instead of a cache"
            )
        return cache_or_input
    with torch.no_grad():
        _, cache = model.run_with_cache(cache_or_input, names_filter=names, return_type=None)
    return cache


def accumulated_resid(
    model: HookedLM, cache_or_input: Any, layer: int | None = None, *, apply_ln: bool = False,
    return_labels: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, list[str]]:  # fmt: skip
    """The residual stream entering blocks ``0..layer`` (TransformerLens's ``accumulated_resid``).

    Returns ``[layer + 1, batch, pos, d_model]`` (``layer=None``: ``n_layers + 1`` entries, the last one
    the output of the last block), labels ``"0_pre" .. "{n-1}_pre", "final_post"``. ``apply_ln``
    applies the model's final norm to each entry with that entry's own statistics (the logit-lens
    convention). Entry 0 is the stream's first term (see the module docstring).
    """
    k = _n(model, layer)
    n = model.cfg.n_layers
    cache = _cache(model, cache_or_input, resid_hook_names(model))
    names = [_start_name(model) if i == 0 else f"blocks.{i}.hook_resid_pre" for i in range(min(k + 1, n))]
    labels = [f"{i}_pre" for i in range(len(names))]
    if k == n:
        names.append(f"blocks.{n - 1}.hook_resid_post")
        labels.append("final_post")
    stack = torch.stack([cache[name] for name in names])
    if apply_ln:
        stack = apply_ln_final(model, stack)
    return (stack, labels) if return_labels else stack


def apply_ln_final(model: HookedLM, resid: torch.Tensor) -> torch.Tensor:
    """The model's final norm applied to ``[..., d_model]`` (each vector with its own statistics)."""
    return model.final_norm(resid)


def logit_lens(
    model: HookedLM, cache_or_input: Any, layer: int | None = None, *, return_labels: bool = False
) -> torch.Tensor | tuple[torch.Tensor, list[str]]:
    """Logits read from the residual stream entering each block: ``unembed(final_norm(resid))``.

    Returns ``[layer + 1, batch, pos, d_vocab]`` with the labels of :func:`accumulated_resid`; the
    ``"final_post"`` entry equals the model's logits. On RNNs this reads the blocks' own residual
    (no ``hidden_states`` off-by-one: HF's ``output_hidden_states`` lacks the embedding for Mamba/RWKV).
    """
    stack, labels = accumulated_resid(model, cache_or_input, layer, apply_ln=True, return_labels=True)
    logits = model.unembed(stack)
    return (logits, labels) if return_labels else logits


def decompose_resid(
    model: HookedLM, cache_or_input: Any, layer: int | None = None, *, return_labels: bool = False
) -> torch.Tensor | tuple[torch.Tensor, list[str]]:
    """The residual stream entering block ``layer`` split into per-layer terms.

    Returns ``[n_terms, batch, pos, d_model]``: the stream's first term (``"embed"``), then per block
    ``i < layer`` its mixer output (``"{i}_mixer"``) and MLP output (``"{i}_mlp"``, transformers and
    RWKV). ``layer=None``: all blocks, summing to the last block's output. The terms sum to the
    residual to fp32 summation order.
    """
    k = _n(model, layer)
    cache = _cache(model, cache_or_input, resid_hook_names(model, components=True))
    names, labels = [_start_name(model)], ["embed"]
    for i in range(k):
        names.append(f"blocks.{i}.hook_mixer_out")
        labels.append(f"{i}_mixer")
        if _has_mlp(model):
            names.append(f"blocks.{i}.hook_mlp_out")
            labels.append(f"{i}_mlp")
    stack = torch.stack([cache[name] for name in names])
    return (stack, labels) if return_labels else stack


def _norm_linearisation(norm: nn.Module, final: torch.Tensor) -> tuple[Any, torch.Tensor | None]:
    """``f(term)`` and the constant such that ``norm(final) = sum f(term_j) + const`` for terms summing to ``final``.

    The norm's scale is frozen at its value on ``final`` (TransformerLens's ``apply_ln_to_stack``
    convention). Supported: ``nn.LayerNorm`` and RMS norms (``weight * x / sqrt(mean(x^2) + eps)``);
    anything else raises after a numerical check.
    """
    x = final.float()
    if isinstance(norm, nn.LayerNorm):
        scale = (x.var(-1, unbiased=False, keepdim=True) + norm.eps).sqrt()
        w = norm.weight.float() if norm.weight is not None else 1.0

        def f(term: torch.Tensor) -> torch.Tensor:
            t = term.float()
            return (t - t.mean(-1, keepdim=True)) / scale * w

        const = norm.bias.float() if norm.bias is not None else None
        return f, const
    eps = getattr(norm, "variance_epsilon", getattr(norm, "eps", None))
    weight = getattr(norm, "weight", None)
    if eps is None or weight is None:
        raise NotImplementedError(
            f"direct logit attribution does not know the final norm {type(norm).__name__}: "
            "supported are nn.LayerNorm and RMS norms with `weight` and `variance_epsilon`/`eps`"
        )
    scale = (x.pow(2).mean(-1, keepdim=True) + eps).sqrt()
    return (lambda term: term.float() / scale * weight.float()), None


def direct_logit_attribution(
    model: HookedLM, cache_or_input: Any, *, tokens: torch.Tensor | None = None, return_labels: bool = False
) -> torch.Tensor | tuple[torch.Tensor, list[str]]:
    """Each residual term's direct contribution to the logits, with the final norm's scale frozen.

    Terms are those of :func:`decompose_resid` (all blocks) plus ``"bias"`` (final-norm bias and
    unembedding bias). Returns ``[n_terms + 1, batch, pos, d_vocab]``, or with ``tokens``
    (``[batch, pos]`` token ids) only those tokens' logits, ``[n_terms + 1, batch, pos]``. The terms sum
    to the model's logits (checked here: a norm this cannot linearise raises).
    """
    cache = _cache(model, cache_or_input, resid_hook_names(model, components=True))
    stack, labels = decompose_resid(model, cache, None, return_labels=True)
    final = cache[f"blocks.{model.cfg.n_layers - 1}.hook_resid_post"]
    f, const = _norm_linearisation(model.final_norm, final)
    normed = f(stack)  # [terms, b, pos, d]
    expected = model.final_norm(final).float()
    got = normed.sum(0) + (const if const is not None else 0)
    if not torch.allclose(got, expected, atol=1e-4, rtol=1e-4):
        raise NotImplementedError(
            f"the final norm {type(model.final_norm).__name__} is not a plain LayerNorm / RMSNorm "
            f"(linearised reconstruction off by {(got - expected).abs().max():.2e}); DLA would be wrong"
        )
    unembed = model.unembed
    weight = unembed.weight.float()  # [V, d]
    bias = unembed.bias.float() if getattr(unembed, "bias", None) is not None else None
    const_vec = torch.zeros(weight.shape[1], device=weight.device) if const is None else const
    if tokens is None:
        per_term = normed @ weight.T
        const_logits = const_vec @ weight.T + (bias if bias is not None else 0)
        const_logits = const_logits.expand(*per_term.shape[1:])[None]
    else:
        tokens = tokens.to(weight.device)
        directions = weight[tokens]  # [b, pos, d]
        per_term = (normed * directions).sum(-1)
        const_logits = (directions @ const_vec) + (bias[tokens] if bias is not None else 0)
        const_logits = const_logits[None]
    out = torch.cat([per_term, const_logits], dim=0)
    return (out, [*labels, "bias"]) if return_labels else out
