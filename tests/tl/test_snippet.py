"""One TransformerLens-style activation-patching snippet, unchanged, on every architecture.

The snippet (``patching_snippet``) uses only the HookedRootModule API (``run_with_cache``,
``run_with_hooks``, ``cfg.n_layers``, TransformerLens hook names). It runs on GPT-2 through
TransformerLens's own ``TransformerBridge``, on every recurrent family (``tests/families.py``'s
``RECURRENT``; new families join automatically) and GPT-2 through ``nnsight_rnn.tl``, and on Mamba,
FalconMamba, Mamba-2 and RWKV-4 through the bridge with nnsight-rnn's adapters registered.
"""

from __future__ import annotations

from functools import partial

import pytest
import torch

import nnsight_rnn

pytest.importorskip("transformer_lens", reason="the TransformerLens surface needs transformer-lens installed")

import nnsight_rnn.tl as tl
from nnsight_rnn.tl.bridge import boot_bridge, register_bridge_adapters, unregister_bridge_adapters

from ..families import CROSS_LAYER_HOOKS, FAMILIES, RECURRENT, STATE_HOOKS, last_block_reach

POS = 4
BRIDGED = [f for f in ("mamba", "falcon_mamba", "mamba2", "rwkv4") if f in RECURRENT]
SURFACES = ["gpt2-bridge", "gpt2", *RECURRENT, *(f"{f}-bridge" for f in BRIDGED)]


def patching_snippet(model, clean, corrupt, layer, pos):
    """Cache the residual stream of two prompts, patch one layer's residual from clean into corrupt."""
    name = f"blocks.{layer}.hook_resid_post"
    clean_logits, clean_cache = model.run_with_cache(clean, names_filter=[name])
    corrupt_logits, corrupt_cache = model.run_with_cache(corrupt, names_filter=[name])
    assert clean_cache[name].shape == corrupt_cache[name].shape == (*clean.shape, model.cfg.d_model)

    def patch(resid, hook, positions):
        resid[:, positions] = clean_cache[hook.name][:, positions]
        return resid

    patched_all = model.run_with_hooks(corrupt, fwd_hooks=[(name, partial(patch, positions=slice(None)))])
    patched_from = model.run_with_hooks(corrupt, fwd_hooks=[(name, partial(patch, positions=slice(pos, None)))])
    return clean_logits, corrupt_logits, patched_all, patched_from


def _model(surface: str):
    if surface == "gpt2-bridge":
        return boot_bridge(FAMILIES["gpt2"]())
    if surface.endswith("-bridge"):
        register_bridge_adapters()
        try:
            return boot_bridge(FAMILIES[surface.removesuffix("-bridge")]())
        finally:
            unregister_bridge_adapters()
    return tl.load(FAMILIES[surface]())


def _prompts() -> tuple[torch.Tensor, torch.Tensor]:
    clean = torch.randint(0, 257, (2, 9))
    corrupt = clean.clone()
    corrupt[:, 1] = (clean[:, 1] + 7) % 257
    corrupt[:, POS + 2] = (clean[:, POS + 2] + 11) % 257
    return clean, corrupt


def _per_pos(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a - b).abs().amax(dim=(0, 2))


@pytest.mark.parametrize("surface", SURFACES)
def test_residual_patching_snippet(surface: str) -> None:
    model = _model(surface)
    clean, corrupt = _prompts()
    n = model.cfg.n_layers
    for layer in (1, n - 1):
        with torch.no_grad():
            clean_logits, corrupt_logits, patched_all, patched_from = patching_snippet(
                model, clean, corrupt, layer, POS
            )
        assert clean_logits.shape == (*clean.shape, 300)
        cross = CROSS_LAYER_HOOKS.get(surface.removesuffix("-bridge"))
        if cross is None or layer == n - 1:
            # Patching every position of a layer's output reproduces the clean run downstream.
            torch.testing.assert_close(patched_all, clean_logits, atol=1e-6, rtol=0)
        else:
            # A layer that also reads an earlier layer's activations (RWKV-7's value residual) is not
            # screened off by the residual alone; patching that path too reproduces the clean run.
            assert (patched_all - clean_logits).abs().max() > 1e-5
            names = [f"blocks.{layer}.hook_resid_post"] + [f"blocks.{j}.mixer.{cross}" for j in range(layer + 1, n)]
            with torch.no_grad():
                _, cache = model.run_with_cache(clean, names_filter=names)
                fwd = [(name, lambda value, hook, cache=cache: cache[hook.name]) for name in names]
                both = model.run_with_hooks(corrupt, fwd_hooks=fwd)
            torch.testing.assert_close(both, clean_logits, atol=1e-6, rtol=0)
        # Patching positions >= POS: earlier positions keep the corrupt logits exactly, later ones move.
        diff = _per_pos(patched_from, corrupt_logits)
        assert torch.all(diff[:POS] == 0), diff
        assert torch.all(diff[POS:] > 1e-5), diff
        if layer == n - 1:  # nothing mixes positions after the last block: clean logits from POS on
            torch.testing.assert_close(patched_from[:, POS:], clean_logits[:, POS:], atol=1e-6, rtol=0)
        else:  # a middle layer: later blocks still see the corrupt prefix (attention / recurrent state)
            assert _per_pos(patched_from, clean_logits)[POS:].max() > 1e-5


@pytest.mark.parametrize("family", RECURRENT)
def test_state_patching_snippet(family: str) -> None:
    """The same style on the recurrent state: write patches propagate, readout patches stay put."""
    model = tl.load(FAMILIES[family]())
    write, readout, _ = STATE_HOOKS[family]
    clean, corrupt = _prompts()
    n = model.cfg.n_layers
    names = [f"blocks.1.mixer.{write}", f"blocks.{n - 1}.mixer.{readout}"]
    with torch.no_grad():
        _, clean_cache = model.run_with_cache(clean, names_filter=names)
        corrupt_logits = model(corrupt)

        def patch(value, hook, positions):
            value[:, positions] = clean_cache[hook.name][:, positions]
            return value

        from_pos = model.run_with_hooks(corrupt, fwd_hooks=[(names[0], partial(patch, positions=slice(POS, None)))])
        at_pos = model.run_with_hooks(corrupt, fwd_hooks=[(names[1], partial(patch, positions=[POS]))])
    diff = _per_pos(from_pos, corrupt_logits)
    assert torch.all(diff[:POS] == 0) and torch.all(diff[POS:] > 1e-5), diff
    diff = _per_pos(at_pos, corrupt_logits)
    reach = list(range(POS, POS + 1 + last_block_reach(nnsight_rnn.install(FAMILIES[family]()))))
    assert (diff > 0).nonzero().flatten().tolist() == reach, diff


def test_bridge_gpt2_matches_hf() -> None:
    """Sanity of the comparison: the bridge's GPT-2 logits are the HF model's."""
    ref = FAMILIES["gpt2"]()
    import copy

    bridge = boot_bridge(copy.deepcopy(ref))
    ids = torch.randint(0, 257, (2, 9))
    with torch.no_grad():
        torch.testing.assert_close(bridge(ids), ref(ids).logits, atol=1e-5, rtol=0)
