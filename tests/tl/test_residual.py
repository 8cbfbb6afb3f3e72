"""Residual-stream helpers (accumulated residual, logit lens, decomposition, DLA) on every family."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("transformer_lens", reason="the TransformerLens surface needs transformer-lens installed")

import nnsight_rnn.tl as tl
from nnsight_rnn.tl.residual import resid_hook_names

from ..families import FAMILIES, RECURRENT

ALL = [*RECURRENT, "gpt2"]


@pytest.fixture(params=ALL)
def family(request: pytest.FixtureRequest) -> str:
    return request.param


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / b.abs().max()).item()


def test_accumulated_resid_and_logit_lens(family: str) -> None:
    model = tl.load(FAMILIES[family]())
    ids = torch.randint(0, 257, (2, 8))
    n = model.cfg.n_layers
    with torch.no_grad():
        logits, cache = model.run_with_cache(ids, names_filter=resid_hook_names(model))
        stack, labels = tl.accumulated_resid(model, cache, return_labels=True)
        lens, lens_labels = tl.logit_lens(model, ids, return_labels=True)  # runs the model itself
        partial = tl.accumulated_resid(model, cache, layer=1)
    assert stack.shape == (n + 1, 2, 8, model.cfg.d_model)
    assert labels == [*(f"{i}_pre" for i in range(n)), "final_post"] == lens_labels
    for i in range(1, n):
        assert torch.equal(stack[i], cache[f"blocks.{i}.hook_resid_pre"])
    assert torch.equal(stack[-1], cache[f"blocks.{n - 1}.hook_resid_post"])
    assert torch.equal(partial, stack[:2])
    assert lens.shape == (n + 1, 2, 8, 300)
    torch.testing.assert_close(lens[-1], logits, atol=1e-6, rtol=0)  # the last lens is the model's output
    # Earlier layers read something else (this would fail if every entry were the final residual).
    assert (lens[0] - logits).abs().max() > 1e-3


def test_decomposition_sums_to_the_residual(family: str) -> None:
    model = tl.load(FAMILIES[family]())
    ids = torch.randint(0, 257, (2, 8))
    n = model.cfg.n_layers
    with torch.no_grad():
        _, cache = model.run_with_cache(ids, names_filter=resid_hook_names(model, components=True) + [
            f"blocks.{i}.hook_resid_pre" for i in range(n)
        ])  # fmt: skip
        terms, labels = tl.decompose_resid(model, cache, return_labels=True)
        at_2 = tl.decompose_resid(model, cache, layer=2)
    per_block = 2 if "blocks.0.hook_mlp_out" in model.hook_dict else 1
    assert len(labels) == 1 + per_block * n and labels[0] == "embed" and labels[1] == "0_mixer"
    assert _rel(terms.sum(0), cache[f"blocks.{n - 1}.hook_resid_post"]) < 1e-6
    assert _rel(at_2.sum(0), cache["blocks.2.hook_resid_pre"]) < 1e-6
    for term in terms:
        assert term.abs().max() > 0


def test_direct_logit_attribution_sums_to_logits(family: str) -> None:
    model = tl.load(FAMILIES[family]())
    ids = torch.randint(0, 257, (2, 8))
    with torch.no_grad():
        logits, cache = model.run_with_cache(ids, names_filter=resid_hook_names(model, components=True))
        dla, labels = tl.direct_logit_attribution(model, cache, return_labels=True)
        targets = torch.randint(0, 300, (2, 8))
        picked = tl.direct_logit_attribution(model, cache, tokens=targets)
    assert labels[-1] == "bias" and dla.shape == (len(labels), 2, 8, 300)
    torch.testing.assert_close(dla.sum(0), logits, atol=1e-5, rtol=0)
    expected = dla.gather(-1, targets[None, ..., None].expand(len(labels), -1, -1, 1))[..., 0]
    torch.testing.assert_close(picked, expected, atol=1e-5, rtol=0)


def test_missing_cache_entries_name_the_fix() -> None:
    model = tl.load(FAMILIES["mamba"]())
    with torch.no_grad():
        _, cache = model.run_with_cache(torch.randint(0, 257, (1, 4)), names_filter=["blocks.0.hook_resid_pre"])
    with pytest.raises(KeyError, match="resid_hook_names"):
        tl.accumulated_resid(model, cache)
