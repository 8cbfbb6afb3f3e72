"""One nnsight snippet, written once with the standard names, runs unchanged on every card."""

from __future__ import annotations

import pytest
import torch

import nnsight_rnn

from .families import CROSS_LAYER_HOOKS, FAMILIES, RECURRENT


@pytest.fixture(params=sorted(FAMILIES))
def family(request: pytest.FixtureRequest) -> str:
    return request.param


def test_same_snippet_every_architecture(family: str) -> None:
    model = nnsight_rnn.load(FAMILIES[family]())
    clean = torch.randint(0, 257, (1, 8))
    corrupt = torch.randint(0, 257, (1, 8))
    layer = 1
    # RWKV-7 layers also read layer 0's value (not through the residual): patch that path too.
    side = CROSS_LAYER_HOOKS.get(family)
    later = list(range(layer + 1, len(model.layers))) if side else []

    # The snippet: read a layer's residual, patch it into another prompt, read logits via the lens path.
    with torch.no_grad(), model.trace(clean):
        resid = model.layers[layer].output.save()
        side_values = list().save()
        for j in later:
            side_values.append(model.layers[j].mixer.get(side).output)
        logits = model.output.logits.save()
    with torch.no_grad(), model.trace(corrupt):
        model.layers[layer].output[:] = resid
        for j, value in zip(later, side_values, strict=True):
            model.layers[j].mixer.get(side).output[:] = value
        lens = model.unembed(model.final_norm(model.layers[-1].output)).save()
        patched = model.output.logits.save()
    with torch.no_grad(), model.trace(corrupt):
        embed = model.embed.output.save()
        corrupt_logits = model.output.logits.save()

    assert isinstance(resid, torch.Tensor) and resid.shape == (1, 8, model._module.config.hidden_size)
    assert embed.shape == resid.shape
    # Everything downstream of layer `layer` only sees the patched residual: same logits as clean.
    torch.testing.assert_close(patched, logits, atol=1e-5, rtol=0)
    assert (corrupt_logits - logits).abs().max() > 1e-4
    # final_norm -> unembed applied to the last layer output is the model's own logits.
    torch.testing.assert_close(lens.float(), patched, atol=1e-5, rtol=0)


def test_standard_names_exist(family: str) -> None:
    model = nnsight_rnn.load(FAMILIES[family]())
    assert len(model.layers) == model._module.config.num_hidden_layers
    for name in ("embed", "final_norm", "unembed"):
        assert getattr(model, name) is not None
    assert model.layers[0].mixer is not None
    hooks = model.hook_points()
    if family in RECURRENT:
        assert any(name.startswith("layers.0.mixer.hook_") for name in hooks)
    else:
        assert hooks == {}
