"""What an edit of each kind of state hook means, through the nnsight surface, on every recurrent card.

- write (propagating): zeroing the write at t changes outputs at >= t and none before;
- readout: editing the per-position state at t changes the output at t only;
- carried: editing the carried state between a prefix and a suffix changes the suffix;
- generation: state hooks fire once per layer per decode step; an edit at step k changes
  generated tokens from k on, never before.
"""

from __future__ import annotations

import pytest
import torch

import nnsight_rnn

from .families import FAMILIES, RECURRENT, STATE_HOOKS, last_block_reach

LAYER = 1
T = 5


@pytest.fixture(params=RECURRENT)
def family(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def model(family: str) -> nnsight_rnn.HookedLanguageModel:
    return nnsight_rnn.load(FAMILIES[family]())


def _logits(model, ids, edit=None):
    with torch.no_grad(), model.trace(ids):
        if edit is not None:
            edit(model)
        out = model.output.logits.save()
    return out


def test_zeroing_write_at_t_changes_t_onwards_only(model, family):
    write, _, _ = STATE_HOOKS[family]
    ids = torch.randint(0, 257, (2, 10))
    base = _logits(model, ids)

    def edit(m):
        m.layers[LAYER].mixer.get(write).output[:, T] = 0

    edited = _logits(model, ids, edit)
    diff = (edited - base).abs().amax(dim=(0, 2))
    assert torch.all(diff[:T] == 0), diff
    assert torch.all(diff[T:] > 1e-6), diff


def test_readout_edit_at_t_changes_only_t(model, family):
    """The mixer's own output changes at t only (later layers, being recurrent, then carry it on)."""
    _, readout, _ = STATE_HOOKS[family]
    ids = torch.randint(0, 257, (2, 10))
    last = len(model.layers) - 1
    with torch.no_grad(), model.trace(ids):
        base_mixer = model.layers[LAYER].mixer.output.save()
        base = model.output.logits.save()
    with torch.no_grad(), model.trace(ids):
        hook = model.layers[LAYER].mixer.get(readout)
        hook.output[:, T] = hook.output[:, T] * 3.0 + 1.0
        mixer = model.layers[LAYER].mixer.output.save()
    diff = (mixer - base_mixer).abs().amax(dim=(0, 2))
    assert (diff > 0).nonzero().flatten().tolist() == [T], diff
    # At the last layer no recurrent mixer follows: the logits change at t (and, for RWKV, whose
    # channel mix token-shifts, at t + 1), nowhere else.
    with torch.no_grad(), model.trace(ids):
        hook = model.layers[last].mixer.get(readout)
        hook.output[:, T] = hook.output[:, T] * 3.0 + 1.0
        logits = model.output.logits.save()
    diff = (logits - base).abs().amax(dim=(0, 2))
    reach = list(range(T, T + 1 + last_block_reach(model._module)))
    assert (diff > 0).nonzero().flatten().tolist() == reach, diff


def test_readout_unedited_matches_fast_path(model, family):
    """Asking for the per-position states (the slow path) does not change the outputs."""
    _, readout, _ = STATE_HOOKS[family]
    ids = torch.randint(0, 257, (2, 10))
    base = _logits(model, ids)
    with torch.no_grad(), model.trace(ids):
        model.layers[LAYER].mixer.get(readout).output.save()
        out = model.output.logits.save()
    torch.testing.assert_close(out, base, atol=1e-5, rtol=0)


def test_carried_state_edit_changes_suffix(model, family):
    _, _, carried = STATE_HOOKS[family]
    ids = torch.randint(0, 257, (1, 12))
    state = model.run_state(ids[:, :6])
    with torch.no_grad(), model.trace(ids[:, 6:], state=state):
        same = model.output.logits.save()
    with torch.no_grad(), model.trace(ids[:, 6:], state=state):
        hook = model.layers[LAYER].mixer.get(carried)
        hook.output[:] = hook.output * 0.0
        changed = model.output.logits.save()
    with torch.no_grad(), model.trace(ids):
        full = model.output.logits.save()
    torch.testing.assert_close(same, full[:, 6:], atol=1e-5, rtol=0)
    assert (changed - same).abs().max() > 1e-4
    # The user's state object is not mutated by running from it.
    again = model.run_state(ids[:, :6])
    for a, b in zip(state.layers, again.layers, strict=True):
        for k in a:
            torch.testing.assert_close(a[k], b[k], atol=0, rtol=0)


def test_state_hooks_fire_once_per_layer_per_decode_step(model, family):
    _, _, carried = STATE_HOOKS[family]
    n_layers = len(model.layers)
    new_tokens = 4
    ids = torch.randint(0, 257, (1, 5))
    with (
        torch.no_grad(),
        model.generate(ids, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False) as tracer,
    ):
        seen = list().save()
        for _ in tracer.iter[:new_tokens]:
            for layer in range(n_layers):
                seen.append((layer, tuple(model.layers[layer].mixer.get(carried).output.shape)))
    assert len(seen) == n_layers * new_tokens
    assert [layer for layer, _ in seen] == list(range(n_layers)) * new_tokens


def test_edit_at_decode_step_k_changes_outputs_from_k_only(model, family):
    """Per-step logits are identical before step k and differ from step k on."""
    _, readout, _ = STATE_HOOKS[family]
    k, steps = 2, 5
    ids = torch.randint(0, 257, (1, 5))

    def run(edit: bool) -> tuple[list[torch.Tensor], torch.Tensor]:
        with torch.no_grad(), model.generate(ids, max_new_tokens=steps, min_new_tokens=steps, do_sample=False) as tr:
            logits = list().save()
            for step in tr.iter[:steps]:
                if edit and step == k:
                    hook = model.layers[LAYER].mixer.get(readout)
                    hook.output[:, -1] = hook.output[:, -1] * -50.0
                logits.append(model.output.logits[:, -1].clone())
            tokens = tr.result.save()
        return logits, tokens

    base, base_tokens = run(edit=False)
    edited, edited_tokens = run(edit=True)
    assert len(base) == len(edited) == steps
    for step in range(k):
        torch.testing.assert_close(edited[step], base[step], atol=0, rtol=0)
    for step in range(k, steps):
        assert (edited[step] - base[step]).abs().max() > 1e-4, step
    prompt = ids.shape[1]
    assert torch.equal(base_tokens[0, prompt : prompt + k], edited_tokens[0, prompt : prompt + k])
