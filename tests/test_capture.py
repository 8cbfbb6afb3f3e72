"""Bounded state capture: selected layers and positions only, equal to the full trajectory there."""

from __future__ import annotations

import pytest
import torch

import nnsight_rnn
from nnsight_rnn.capture import capture_scan_inputs, capture_states, recompute_states

from .families import FAMILIES, RECURRENT, STATE_HOOKS, last_block_reach


@pytest.fixture(params=RECURRENT)
def family(request: pytest.FixtureRequest) -> str:
    return request.param


def test_selected_positions_equal_full_trajectory(family: str) -> None:
    model = nnsight_rnn.load(FAMILIES[family]())
    _, readout, _ = STATE_HOOKS[family]
    ids = torch.randint(0, 257, (2, 11))
    full = capture_states(model, ids, layers=[1])[1][readout]
    picked = capture_states(model, ids, layers=[0, 2], positions=[3, -1, 0])
    again = capture_states(model, ids, layers=[1], positions=[3, -1, 0])[1][readout]
    assert set(picked) == {0, 2}
    assert full.shape[:2] == (2, 11)
    assert again.shape[:2] == (2, 3)
    torch.testing.assert_close(again, full[:, [3, 10, 0]], atol=1e-6, rtol=0)
    # Selection is undone afterwards.
    assert all(h.positions is None for h in model.hook_points().values())


def test_editing_selected_readout_changes_only_those_positions(family: str) -> None:
    model = nnsight_rnn.load(FAMILIES[family]())
    _, readout, _ = STATE_HOOKS[family]
    ids = torch.randint(0, 257, (1, 9))
    last = len(model.layers) - 1
    hook = model.hook(f"layers.{last}.mixer.{readout}")._module
    with torch.no_grad(), model.trace(ids):
        base = model.output.logits.save()
    hook.positions = [2, 6]
    try:
        with torch.no_grad(), model.trace(ids):
            h = model.layers[last].mixer.get(readout)
            h.output[:, 1] = h.output[:, 1] * 5 + 1  # position 6
            edited = model.output.logits.save()
    finally:
        hook.positions = None
    diff = (edited - base).abs().amax(dim=(0, 2))
    assert (diff > 0).nonzero().flatten().tolist() == list(range(6, 7 + last_block_reach(model._module))), diff


def test_position_out_of_range_is_a_clear_error(family: str) -> None:
    model = nnsight_rnn.load(FAMILIES[family]())
    with pytest.raises(IndexError, match=r"position 12 is out of range .* this call has 5 positions \(valid: -5..4\)"):
        capture_states(model, torch.randint(0, 257, (1, 5)), layers=[0], positions=[12])
    with pytest.raises(IndexError, match="layer 7 is out of range"):
        capture_states(model, torch.randint(0, 257, (1, 5)), layers=[7], positions=[1])


def test_recompute_from_scan_inputs_equals_captured_states(family: str) -> None:
    model = nnsight_rnn.load(FAMILIES[family]())
    _, readout, _ = STATE_HOOKS[family]
    ids = torch.randint(0, 257, (2, 11))
    full = capture_states(model, ids, layers=[1])[1][readout]
    inputs = capture_scan_inputs(model, ids, layers=[1])[1]
    state_bytes = full.numel() * full.element_size()
    input_bytes = sum(v.numel() * v.element_size() for v in inputs.values())
    assert input_bytes < state_bytes
    torch.testing.assert_close(recompute_states(model, 1, inputs), full, atol=1e-5, rtol=0)
    torch.testing.assert_close(
        recompute_states(model, 1, inputs, positions=[4, -1]), full[:, [4, 10]], atol=1e-5, rtol=0
    )


def test_one_layer_trajectory_allocates_no_other_layer_states(family: str, monkeypatch) -> None:
    """Only the selected layer's readout hook computes states; the others stay on the fast path."""
    from nnsight_rnn.hooks import HookPoint

    model = nnsight_rnn.load(FAMILIES[family]())
    fired: list[str] = []
    original = HookPoint.fires

    def spy(self: HookPoint) -> bool:
        result = original(self)
        if result:
            fired.append(self.name)
        return result

    monkeypatch.setattr(HookPoint, "fires", spy)
    _, readout, _ = STATE_HOOKS[family]
    capture_states(model, torch.randint(0, 257, (1, 12)), layers=[2])
    assert fired == [f"layers.2.mixer.{readout}"]
