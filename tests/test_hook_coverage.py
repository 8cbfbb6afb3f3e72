"""Every hook point that ``nnsight-rnn info`` lists fires in a forward pass, on every recurrent card."""

from __future__ import annotations

import pytest
import torch

import nnsight_rnn
from nnsight_rnn.reference import hook_reference

from .families import FAMILIES, RECURRENT


@pytest.fixture(params=RECURRENT)
def family(request: pytest.FixtureRequest) -> str:
    return request.param


def test_reference_lists_hooks(family: str) -> None:
    names = [h.name for h in hook_reference(nnsight_rnn.get_card(family))]
    assert len(names) >= 8
    assert all(n.startswith("layers.{i}.") for n in names)
    kinds = {h.kind for h in hook_reference(nnsight_rnn.get_card(family))}
    assert {"state_readout", "state_write", "state_carried"} <= kinds


def test_every_listed_hook_fires_with_torch_hooks(family: str) -> None:
    model = nnsight_rnn.load(FAMILIES[family]())
    n_layers = len(model.layers)
    listed = [h.name for h in hook_reference(model.card)]
    points = model.hook_points()
    calls: dict[str, int] = {}
    handles = []
    for template in listed:
        for i in range(n_layers):
            name = template.format(i=i)
            assert name in points, f"{name} listed by info but absent from the model"

            def count(module, args, output, name=name):
                calls[name] = calls.get(name, 0) + 1

            handles.append(points[name].register_forward_hook(count))
    try:
        with torch.no_grad():
            model._module(torch.randint(0, 257, (2, 6)))
    finally:
        for h in handles:
            h.remove()
    expected = {t.format(i=i) for t in listed for i in range(n_layers)}
    assert set(calls) == expected
    assert set(calls.values()) == {1}


def test_every_listed_hook_readable_in_one_trace(family: str) -> None:
    """Reading them in listed order works in nnsight (the list is in firing order)."""
    model = nnsight_rnn.load(FAMILIES[family]())
    listed = [h for h in hook_reference(model.card)]
    ids = torch.randint(0, 257, (2, 6))
    with torch.no_grad(), model.trace(ids):
        values = list().save()
        for h in listed:
            values.append(model.hook(h.name.format(i=1)).output)
    for info, value in zip(listed, values, strict=True):
        assert isinstance(value, torch.Tensor), info.name
        assert value.shape[0] == 2, info.name
        if info.pos_dim is not None:
            assert value.shape[info.pos_dim] == 6, info.name
