"""Parity and state semantics of the hookable Mamba-1 mixer (Mamba and FalconMamba cards).

Tolerances (fp32, tiny random configs): logits and hidden states within 1e-5 of the untouched HF
model (observed ~5e-7: the same arithmetic, different association order); gradients within 1e-4
(observed ~1e-6); round-trip and padding within 1e-5.
"""

from __future__ import annotations

import copy

import pytest
import torch
from transformers import FalconMambaConfig, FalconMambaForCausalLM, MambaConfig, MambaForCausalLM

import nnsight_rnn
from nnsight_rnn.mixers.mamba1 import HookableMamba1Mixer
from nnsight_rnn.upstream import mamba_cache_kwargs, output_cache

ATOL = 1e-5
GRAD_ATOL = 1e-4
VOCAB = 300


def _mamba() -> MambaForCausalLM:
    cfg = MambaConfig(
        vocab_size=VOCAB, hidden_size=32, state_size=8, num_hidden_layers=3, intermediate_size=64,
        conv_kernel=4, time_step_rank=4, use_conv_bias=True,
    )  # fmt: skip
    return MambaForCausalLM(cfg).eval()


def _falcon_mamba() -> FalconMambaForCausalLM:
    cfg = FalconMambaConfig(
        vocab_size=VOCAB, hidden_size=32, state_size=8, num_hidden_layers=3, intermediate_size=64,
        conv_kernel=4, time_step_rank=4, mixer_rms_eps=1e-6,
    )  # fmt: skip
    return FalconMambaForCausalLM(cfg).eval()


@pytest.fixture(params=["mamba", "falcon_mamba"])
def pair(request: pytest.FixtureRequest) -> tuple[torch.nn.Module, torch.nn.Module]:
    """(untouched HF model, hooked deep copy) with identical weights."""
    ref = _mamba() if request.param == "mamba" else _falcon_mamba()
    return ref, nnsight_rnn.install(copy.deepcopy(ref))


@pytest.fixture
def ids() -> torch.Tensor:
    return torch.randint(0, VOCAB, (2, 13))


def test_swap_keeps_state_dict(pair):
    ref, hooked = pair
    assert list(ref.state_dict()) == list(hooked.state_dict())
    for (k, a), b in zip(ref.state_dict().items(), hooked.state_dict().values(), strict=True):
        assert torch.equal(a, b), k
    assert all(isinstance(layer.mixer, HookableMamba1Mixer) for layer in hooked.backbone.layers)


def test_save_pretrained_loads_in_stock_class(pair, tmp_path, ids):
    ref, hooked = pair
    hooked.save_pretrained(tmp_path)
    reloaded = type(ref).from_pretrained(tmp_path).eval()
    with torch.no_grad():
        torch.testing.assert_close(reloaded(ids).logits, ref(ids).logits, atol=0, rtol=0)


def test_logits_and_hidden_states_match(pair, ids):
    ref, hooked = pair
    with torch.no_grad():
        a = ref(ids, output_hidden_states=True)
        b = hooked(ids, output_hidden_states=True)
    torch.testing.assert_close(b.logits, a.logits, atol=ATOL, rtol=0)
    assert len(a.hidden_states) == len(b.hidden_states)
    for ha, hb in zip(a.hidden_states, b.hidden_states, strict=True):
        torch.testing.assert_close(hb, ha, atol=ATOL, rtol=0)


def test_final_state_matches(pair, ids):
    ref, hooked = pair
    with torch.no_grad():
        a = output_cache(ref(ids, use_cache=True))
        b = output_cache(hooked(ids, use_cache=True))
    for i in range(ref.config.num_hidden_layers):
        torch.testing.assert_close(b.get_recurrent_state(i), a.get_recurrent_state(i), atol=ATOL, rtol=0)
        torch.testing.assert_close(b.get_conv_state(i), a.get_conv_state(i), atol=ATOL, rtol=0)


def test_greedy_generate_identical(pair, ids):
    ref, hooked = pair
    with torch.no_grad():
        a = ref.generate(ids[:1, :5], max_new_tokens=10, do_sample=False)
        b = hooked.generate(ids[:1, :5], max_new_tokens=10, do_sample=False)
    assert a.tolist() == b.tolist()


def test_gradients_match(pair, ids):
    ref, hooked = pair
    ref.train(), hooked.train()
    embeds = ref.get_input_embeddings()(ids).detach()
    grads = []
    for model in (ref, hooked):
        x = embeds.clone().requires_grad_(True)
        model.zero_grad()
        loss = model(inputs_embeds=x, labels=ids).loss
        loss.backward()
        grads.append((x.grad, {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}))
    (gx_ref, gp_ref), (gx, gp) = grads
    torch.testing.assert_close(gx, gx_ref, atol=GRAD_ATOL, rtol=0)
    assert gp.keys() == gp_ref.keys()
    for name in gp_ref:
        torch.testing.assert_close(gp[name], gp_ref[name], atol=GRAD_ATOL, rtol=1e-4, msg=name)


def test_state_round_trip_is_exact_and_stock_is_not(pair, ids):
    ref, hooked = pair
    with torch.no_grad():
        full = hooked(ids).logits
        prefix = hooked(ids[:, :6], use_cache=True)
        suffix = hooked(ids[:, 6:], **mamba_cache_kwargs(output_cache(prefix)), use_cache=True)
        torch.testing.assert_close(suffix.logits, full[:, 6:], atol=ATOL, rtol=0)
        # Stock HF restarts the scan from zeros on a multi-token continuation (upstream bug).
        stock_prefix = ref(ids[:, :6], use_cache=True)
        stock_suffix = ref(ids[:, 6:], **mamba_cache_kwargs(output_cache(stock_prefix)), use_cache=True)
        assert (stock_suffix.logits - full[:, 6:]).abs().max() > 100 * ATOL


def test_left_padding_equals_rows_alone(pair):
    _, hooked = pair
    rows = [torch.randint(0, VOCAB, (n,)) for n in (9, 5, 7)]
    width = max(len(r) for r in rows)
    ids = torch.zeros(len(rows), width, dtype=torch.long)
    mask = torch.zeros(len(rows), width, dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, width - len(r) :] = r
        mask[i, width - len(r) :] = 1
    with torch.no_grad():
        batched = hooked(ids, attention_mask=mask, use_cache=True)
        for i, r in enumerate(rows):
            alone = hooked(r[None], use_cache=True)
            torch.testing.assert_close(batched.logits[i, width - len(r) :], alone.logits[0], atol=ATOL, rtol=0)
            for layer in range(hooked.config.num_hidden_layers):
                torch.testing.assert_close(
                    output_cache(batched).get_recurrent_state(layer)[i],
                    output_cache(alone).get_recurrent_state(layer)[0],
                    atol=ATOL, rtol=0,
                )  # fmt: skip
