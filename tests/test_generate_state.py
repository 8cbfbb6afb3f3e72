"""``model.generate(suffix, state=s)`` continues from a carried state on every recurrent card."""

from __future__ import annotations

import pytest
import torch

import nnsight_rnn

from .families import FAMILIES, RECURRENT


@pytest.mark.parametrize("family", RECURRENT)
def test_generate_from_a_state_equals_generating_from_the_whole_prompt(family: str) -> None:
    torch.manual_seed(0)
    model = nnsight_rnn.load(FAMILIES[family]())
    ids = torch.randint(0, 257, (1, 9))
    with torch.no_grad():
        whole = model.generate(ids, max_new_tokens=5, do_sample=False, pad_token_id=0)
        state = model.run_state(ids[:, :6])
        continued = model.generate(ids[:, 6:], state=state, max_new_tokens=5, do_sample=False, pad_token_id=0)
    assert torch.equal(continued[:, 3:], whole[:, 9:]), (continued, whole)
    # An edited state changes what is generated from it (the state is really used).
    with torch.no_grad():
        zeroed = state.map(torch.zeros_like)
        with model.generate(ids[:, 6:], state=zeroed, max_new_tokens=1, do_sample=False, pad_token_id=0):
            edited = model.output.logits.save()
        with model.generate(ids[:, 6:], state=state, max_new_tokens=1, do_sample=False, pad_token_id=0):
            kept = model.output.logits.save()
    assert (edited - kept).abs().max() > 1e-3


def test_generate_with_a_state_of_the_wrong_batch_names_the_fix() -> None:
    model = nnsight_rnn.load(FAMILIES["mamba"]())
    state = model.run_state(torch.randint(0, 257, (1, 4)))
    with pytest.raises(nnsight_rnn.StateShapeError, match=r"state\.expand"):
        model.generate(torch.randint(0, 257, (2, 3)), state=state, max_new_tokens=2, pad_token_id=0)
