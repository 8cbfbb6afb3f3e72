"""nnsight idioms that work on a GPT-2 work on every card: ``scan`` (shapes without running) and ``skip``."""

from __future__ import annotations

import pytest
import torch

import nnsight_rnn

from .families import FAMILIES


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_scan_gives_shapes_without_running(family: str) -> None:
    model = nnsight_rnn.load(FAMILIES[family]())
    ids = torch.randint(0, 257, (2, 7))
    with model.scan(ids):
        shape = model.layers[1].output.shape.save() if hasattr(model.layers[1].output, "shape") else None
        logits_shape = model.output.logits.shape.save()
    assert tuple(logits_shape) == (2, 7, model.config.vocab_size)
    assert shape is None or tuple(shape) == (2, 7, model.config.hidden_size)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_skip_a_layer_passes_its_input_through(family: str) -> None:
    model = nnsight_rnn.load(FAMILIES[family]())
    ids = torch.randint(0, 257, (1, 6))
    with torch.no_grad():
        with model.trace(ids):
            model.layers[1].skip(model.layers[0].output)
            skipped = model.output.logits.save()
        with model.trace(ids):
            normal = model.output.logits.save()
    assert skipped.shape == normal.shape
    assert (skipped - normal).abs().max() > 1e-5  # layer 1 really was skipped
