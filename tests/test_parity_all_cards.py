"""Every card, through the nnsight surface, against the untouched HF model (tiny random configs).

Per-family files (tests/mixers/) go deeper (gradients, padding, caches); this checks the common
contract on every card, transformers included: logits and hidden states within 1e-5 (fp32),
greedy generation token-identical, state_dict unchanged.
"""

from __future__ import annotations

import copy

import pytest
import torch

import nnsight_rnn

from .families import FAMILIES

ATOL = 1e-5
# RWKV-4 in eval mode: stock rescales the residual by 2^-k (its hidden states are scaled, and
# LayerNorm's effective eps changes, see cards/rwkv4.toml); nnsight-rnn runs unscaled. Stock in
# train mode does not rescale (RWKV has no dropout), so that is the reference for it: exact.
TRAIN_MODE_REFERENCE = {"rwkv4"}


@pytest.fixture(params=sorted(FAMILIES))
def family(request: pytest.FixtureRequest) -> str:
    return request.param


def test_trace_logits_hidden_states_and_generate(family: str) -> None:
    ref = FAMILIES[family]()
    model = nnsight_rnn.load(copy.deepcopy(ref))
    assert list(model._module.state_dict()) == list(ref.state_dict())
    ids = torch.randint(0, 257, (2, 10))
    with torch.no_grad(), model.trace(ids, output_hidden_states=True):
        out = model.output.save()
    with torch.no_grad():
        expected = ref.train(family in TRAIN_MODE_REFERENCE)(ids, output_hidden_states=True)
        ref.eval()
    torch.testing.assert_close(out.logits, expected.logits, atol=ATOL, rtol=0)
    assert len(out.hidden_states) == len(expected.hidden_states)
    for a, b in zip(out.hidden_states, expected.hidden_states, strict=True):
        torch.testing.assert_close(a, b, atol=ATOL, rtol=0)
    with torch.no_grad():
        generated = model.generate(ids[:1, :4], max_new_tokens=8, do_sample=False)
        stock = ref.generate(ids[:1, :4], max_new_tokens=8, do_sample=False)
    assert torch.equal(generated, stock)
