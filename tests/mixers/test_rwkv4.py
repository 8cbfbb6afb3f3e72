"""Parity, stock-bug fixes and state semantics of the hookable RWKV-4 (card ``rwkv4``).

Reference: the untouched transformers ``RwkvForCausalLM`` on a tiny random config with
``rescale_every=1`` (every block rescaled in stock's eval mode) and time-mix parameters drawn
N(0, 0.5) (HF's init is degenerate for tiny models).

Tolerances (fp32): against stock in *train* mode (no rescaling) logits, hidden states and final state
within 1e-6 (observed 0: the same ops in the same order); gradients within 1e-4 (observed 0); padding,
round-trip and batched decode within 1e-5 (observed <= 2e-6). Stock's *eval* mode rescales the residual
by 2^-k, which is exact except that every LayerNorm's eps then acts 4^k times larger: with eps = 0 our
eval logits equal stock eval within 1e-6 (observed 0); with the default eps they differ from stock eval
exactly as much as stock eval differs from stock train (observed ~5e-4 on this tiny model, bounded at 2e-3).
"""

from __future__ import annotations

import copy

import pytest
import torch
from transformers import RwkvConfig, RwkvForCausalLM
from transformers.models.rwkv.modeling_rwkv import rwkv_linear_attention_cpu

import nnsight_rnn
from nnsight_rnn.mixers.rwkv4 import HookableRwkv4ChannelMix, HookableRwkv4TimeMix
from nnsight_rnn.patches.rwkv4 import HookedRwkvBlock, HookedRwkvModel
from nnsight_rnn.scans.wkv4 import empty_state, wkv4_readout, wkv4_scan
from nnsight_rnn.surgery import name_hook_points

EXACT = 1e-6
ATOL = 1e-5
GRAD_ATOL = 1e-4
EVAL_EPS_BOUND = 2e-3
VOCAB = 300
N_LAYERS = 3


def _stock(rescale_every: int = 1, **overrides: object) -> RwkvForCausalLM:
    """A tiny stock RWKV-4 with meaningful random weights, in eval mode."""
    cfg = RwkvConfig(
        vocab_size=VOCAB, hidden_size=32, num_hidden_layers=N_LAYERS, intermediate_size=64, context_length=64,
        rescale_every=rescale_every, bos_token_id=None, eos_token_id=None, **overrides,
    )  # fmt: skip
    model = RwkvForCausalLM(cfg)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "time_" in name:
                p.copy_(torch.randn_like(p) * 0.5)
        model.rwkv.embeddings.weight.normal_(0.0, 1.0)
    return model.eval()


def _zero_eps(*models: torch.nn.Module) -> None:
    for model in models:
        for module in model.modules():
            if isinstance(module, torch.nn.LayerNorm):
                module.eps = 0.0


@pytest.fixture
def pair() -> tuple[RwkvForCausalLM, RwkvForCausalLM]:
    """(untouched stock model, hooked deep copy), identical weights, both in eval mode."""
    ref = _stock()
    return ref, nnsight_rnn.install(copy.deepcopy(ref)).eval()


@pytest.fixture
def ids() -> torch.Tensor:
    return torch.randint(0, VOCAB, (2, 11))


def _padded(rows: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.zeros(len(rows), width, dtype=torch.long)
    mask = torch.zeros(len(rows), width, dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, width - len(r) :] = r
        mask[i, width - len(r) :] = 1
    return ids, mask


# --- the scan ------------------------------------------------------------------------------------


def test_scan_matches_hf_cpu_path_bit_for_bit() -> None:
    d = 16
    k, v = torch.randn(3, 9, d) * 3, torch.randn(3, 9, d)
    time_decay, u = torch.randn(d), torch.randn(d)
    w = -torch.exp(time_decay)
    ref_out, ref_state = rwkv_linear_attention_cpu(time_decay, u, k, v, return_state=True)
    out, last, states = wkv4_scan(w, u, k, v, empty_state(3, d), keep_states=True)
    torch.testing.assert_close(out, ref_out, atol=0, rtol=0)
    torch.testing.assert_close(last, torch.stack(ref_state, dim=1), atol=0, rtol=0)
    # The per-position readout reproduces the scan's outputs exactly.
    torch.testing.assert_close(wkv4_readout(states, u, k, v), out, atol=0, rtol=0)
    # From a carried state, and per-row decay/bonus ([b, d]) broadcast like [d].
    out2, _, _ = wkv4_scan(w.expand(3, d), u.expand(3, d), k[:, 4:], v[:, 4:], states[:, 4])
    torch.testing.assert_close(out2, out[:, 4:], atol=0, rtol=0)


def test_scan_skips_invalid_steps() -> None:
    d = 8
    k, v = torch.randn(1, 7, d), torch.randn(1, 7, d)
    w, u = -torch.exp(torch.randn(d)), torch.randn(d)
    valid = torch.tensor([[False, True, True, False, False, True, True]])
    out, last, _ = wkv4_scan(w, u, k, v, empty_state(1, d), valid=valid)
    keep = valid[0]
    out_c, last_c, _ = wkv4_scan(w, u, k[:, keep], v[:, keep], empty_state(1, d))
    torch.testing.assert_close(out[:, keep], out_c, atol=0, rtol=0)
    torch.testing.assert_close(last, last_c, atol=0, rtol=0)


# --- swap and save --------------------------------------------------------------------------------


def test_swap_keeps_parameters_and_state_dict(pair) -> None:
    ref, hooked = pair
    assert type(hooked) is RwkvForCausalLM
    assert isinstance(hooked.rwkv, HookedRwkvModel)
    for block in hooked.rwkv.blocks:
        assert isinstance(block, HookedRwkvBlock)
        assert isinstance(block.attention, HookableRwkv4TimeMix)
        assert isinstance(block.feed_forward, HookableRwkv4ChannelMix)
    assert list(ref.state_dict()) == list(hooked.state_dict())
    for (k, a), b in zip(ref.state_dict().items(), hooked.state_dict().values(), strict=True):
        assert torch.equal(a, b), k


def test_save_pretrained_loads_in_stock_class(pair, ids, tmp_path) -> None:
    ref, hooked = pair
    with torch.no_grad():
        hooked(ids)  # an eval-mode forward: stock would now hold rescaled weights, we never rescale
    hooked.save_pretrained(tmp_path)
    reloaded = RwkvForCausalLM.from_pretrained(tmp_path).train()
    ref.train()
    with torch.no_grad():
        torch.testing.assert_close(reloaded(ids).logits, ref(ids).logits, atol=0, rtol=0)


def test_install_undoes_stock_rescaling(pair, ids) -> None:
    ref, _ = pair
    original = {k: v.clone() for k, v in ref.state_dict().items()}
    with torch.no_grad():
        ref(ids)  # stock eval forward: divides attention.output / feed_forward.value weights in place
    assert ref.rwkv.layers_are_rescaled
    assert not torch.equal(
        ref.rwkv.blocks[1].attention.output.weight, original["rwkv.blocks.1.attention.output.weight"]
    )
    hooked = nnsight_rnn.install(copy.deepcopy(ref))
    for k, v in hooked.state_dict().items():
        assert torch.equal(v, original[k]), k


# --- parity ---------------------------------------------------------------------------------------


def test_logits_hidden_states_and_state_equal_stock_train_mode(pair, ids) -> None:
    ref, hooked = pair
    ref.train()
    with torch.no_grad():
        a = ref(ids, output_hidden_states=True, use_cache=True)
        for mode in ("train", "eval"):
            getattr(hooked, mode)()
            b = hooked(ids, output_hidden_states=True, use_cache=True)
            torch.testing.assert_close(b.logits, a.logits, atol=EXACT, rtol=0)
            assert len(b.hidden_states) == len(a.hidden_states) == N_LAYERS + 1
            for ha, hb in zip(a.hidden_states, b.hidden_states, strict=True):
                torch.testing.assert_close(hb, ha, atol=EXACT, rtol=0)
            for sa, sb in zip(a.state, b.state, strict=True):
                torch.testing.assert_close(sb, sa, atol=EXACT, rtol=0)


def test_eval_mode_rescaling_is_a_noop_up_to_layernorm_eps(pair, ids) -> None:
    ref, hooked = pair
    with torch.no_grad():
        train_logits = copy.deepcopy(ref).train()(ids).logits
        stock = ref(ids, output_hidden_states=True, use_cache=True)
        ours = hooked(ids, output_hidden_states=True, use_cache=True)
    stock_gap = (stock.logits - train_logits).abs().max()
    assert 0 < stock_gap < EVAL_EPS_BOUND  # stock's own eval/train gap: eps acting 4^k times larger
    torch.testing.assert_close(ours.logits, stock.logits, atol=EVAL_EPS_BOUND, rtol=0)
    # Residual hooks see the unscaled stream; stock's eval hidden states are 2^-k of it.
    for i, (hs, ho) in enumerate(zip(stock.hidden_states[:-1], ours.hidden_states[:-1], strict=True)):
        ratio = ho.norm() / hs.norm()
        torch.testing.assert_close(ratio, torch.tensor(2.0 ** (i + 1)), atol=1e-2, rtol=1e-2)

    # With eps = 0 the rescaling is exactly a no-op: our eval logits equal stock's eval logits.
    ref2, hooked2 = copy.deepcopy(ref), copy.deepcopy(hooked)
    _zero_eps(ref2, hooked2)
    with torch.no_grad():
        stock = ref2(ids, output_hidden_states=True)
        ours = hooked2(ids, output_hidden_states=True)
    torch.testing.assert_close(ours.logits, stock.logits, atol=EXACT, rtol=0)
    for i, (hs, ho) in enumerate(zip(stock.hidden_states[:-1], ours.hidden_states[:-1], strict=True)):
        torch.testing.assert_close(ho, hs * 2.0 ** (i + 1), atol=EXACT, rtol=0)


def test_tuple_outputs_and_attentions_match_stock(pair, ids) -> None:
    ref, hooked = pair
    ref.train(), hooked.train()
    with torch.no_grad():
        a = ref(ids, output_attentions=True, return_dict=False)
        b = hooked(ids, output_attentions=True, return_dict=False)
    assert len(a) == len(b)
    torch.testing.assert_close(b[0], a[0], atol=EXACT, rtol=0)
    for x, y in zip(a[-1], b[-1], strict=True):
        torch.testing.assert_close(y, x, atol=EXACT, rtol=0)


def test_attention_hidden_size_differs_from_hidden_size(ids) -> None:
    ref = _stock(attention_hidden_size=16).train()
    hooked = nnsight_rnn.install(copy.deepcopy(ref))
    with torch.no_grad():
        torch.testing.assert_close(hooked(ids).logits, ref(ids).logits, atol=EXACT, rtol=0)
        out = hooked(ids, use_cache=True)  # stock cannot: it sizes num/den/max by hidden_size
        full = hooked(ids).logits
        prefix = hooked(ids[:, :5], use_cache=True)
        suffix = hooked(ids[:, 5:], state=prefix.state)
    assert out.state[2].shape == (2, 16, N_LAYERS)
    torch.testing.assert_close(suffix.logits, full[:, 5:], atol=ATOL, rtol=0)


def test_gradients_match_stock_train_mode(pair, ids) -> None:
    ref, hooked = pair
    ref.train(), hooked.train()
    embeds = ref.get_input_embeddings()(ids).detach()
    grads = []
    for model in (ref, hooked):
        x = embeds.clone().requires_grad_(True)
        model.zero_grad()
        model(inputs_embeds=x, labels=ids).loss.backward()
        grads.append((x.grad, {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}))
    (gx_ref, gp_ref), (gx, gp) = grads
    torch.testing.assert_close(gx, gx_ref, atol=GRAD_ATOL, rtol=0)
    assert gp.keys() == gp_ref.keys() and any("time_decay" in n for n in gp)
    for name in gp_ref:
        torch.testing.assert_close(gp[name], gp_ref[name], atol=GRAD_ATOL, rtol=1e-4, msg=name)


def test_gradient_checkpointing_recomputes_blocks_exactly(pair, ids) -> None:
    _, hooked = pair
    hooked.train()
    grads = []
    for checkpointing in (False, True):
        if checkpointing:
            hooked.gradient_checkpointing_enable()
        hooked.zero_grad()
        hooked(ids, labels=ids).loss.backward()
        grads.append({n: p.grad.clone() for n, p in hooked.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys()
    for name in grads[0]:
        torch.testing.assert_close(grads[1][name], grads[0][name], atol=EXACT, rtol=0, msg=name)


def test_gradient_flows_through_carried_state(pair, ids) -> None:
    _, hooked = pair
    with torch.no_grad():
        prefix = hooked(ids[:, :5], use_cache=True)
    state = [s.clone().requires_grad_(True) for s in prefix.state]
    hooked(ids[:, 5:], state=state).logits.sum().backward()
    assert all(s.grad is not None and s.grad.abs().sum() > 0 for s in state)


# --- generation -----------------------------------------------------------------------------------


def test_greedy_generate_identical_batch_1(pair, ids) -> None:
    ref, hooked = pair
    with torch.no_grad():
        a = ref.generate(ids[:1, :5], max_new_tokens=12, do_sample=False)
        b = hooked.generate(ids[:1, :5], max_new_tokens=12, do_sample=False)
    assert a.tolist() == b.tolist()


def test_batched_decode_fixed_and_batched_generate_equals_rows(pair, ids) -> None:
    ref, hooked = pair
    with torch.no_grad():
        # Stock: a one-token step with batch 3 broadcasts to (B, B, V) logits.
        prompts = torch.randint(0, VOCAB, (3, 5))
        state = ref(prompts[:, :4], use_cache=True).state
        assert ref(prompts[:, 4:], state=state, use_cache=True).logits.shape == (3, 3, VOCAB)
        stock_batched = ref.generate(prompts, max_new_tokens=8, do_sample=False)
        stock_rows = torch.cat([ref.generate(p[None], max_new_tokens=8, do_sample=False) for p in prompts])
        assert not torch.equal(stock_batched, stock_rows)  # upstream bug
        batched = hooked.generate(prompts, max_new_tokens=8, do_sample=False)
        rows = torch.cat([hooked.generate(p[None], max_new_tokens=8, do_sample=False) for p in prompts])
    assert torch.equal(batched, rows)
    assert torch.equal(rows, stock_rows)  # batch 1 is right in stock too


# --- padding --------------------------------------------------------------------------------------


def test_left_padding_equals_rows_alone_and_stock_does_not(pair) -> None:
    ref, hooked = pair
    rows = [torch.randint(0, VOCAB, (n,)) for n in (9, 4, 7)]
    ids, mask = _padded(rows)
    width = ids.shape[1]
    with torch.no_grad():
        batched = hooked(ids, attention_mask=mask, use_cache=True)
        stock = ref(ids, attention_mask=mask, use_cache=True)
        stock_errors = []
        for i, r in enumerate(rows):
            alone = hooked(r[None], use_cache=True)
            torch.testing.assert_close(batched.logits[i, width - len(r) :], alone.logits[0], atol=ATOL, rtol=0)
            for slot, (sb, sa) in enumerate(zip(batched.state, alone.state, strict=True)):
                torch.testing.assert_close(sb[i], sa[0], atol=ATOL, rtol=0, msg=f"row {i} slot {slot}")
            stock_alone = ref(r[None], use_cache=True)
            stock_errors.append((stock.logits[i, width - len(r) :] - stock_alone.logits[0]).abs().max())
    assert max(stock_errors) > 1e-2  # stock ignores the mask: padding poisons the state


def test_padding_in_the_middle_and_in_a_continuation(pair) -> None:
    """Masked positions are skipped wherever they are, also after a carried state."""
    _, hooked = pair
    ids = torch.randint(0, VOCAB, (1, 10))
    mask = torch.tensor([[1, 1, 0, 0, 1, 1, 1, 0, 1, 1]])
    keep = mask[0].bool()
    with torch.no_grad():
        padded = hooked(ids, attention_mask=mask).logits
        compact = hooked(ids[:, keep]).logits
        torch.testing.assert_close(padded[:, keep], compact, atol=ATOL, rtol=0)
        prefix = hooked(ids[:, :4], attention_mask=mask[:, :4], use_cache=True)
        suffix = hooked(ids[:, 4:], attention_mask=mask[:, 4:], state=prefix.state)
        torch.testing.assert_close(suffix.logits[:, keep[4:]], compact[:, 2:], atol=ATOL, rtol=0)


def test_padded_generate_equals_rows_alone(pair) -> None:
    _, hooked = pair
    rows = [torch.randint(0, VOCAB, (n,)) for n in (6, 3)]
    ids, mask = _padded(rows)
    with torch.no_grad():
        out = hooked.generate(ids, attention_mask=mask, max_new_tokens=6, do_sample=False)
        for i, r in enumerate(rows):
            alone = hooked.generate(r[None], max_new_tokens=6, do_sample=False)
            assert out[i, ids.shape[1] :].tolist() == alone[0, len(r) :].tolist()


# --- carried state --------------------------------------------------------------------------------


def test_state_round_trip_does_not_mutate_the_given_state(pair, ids) -> None:
    ref, hooked = pair
    with torch.no_grad():
        full = hooked(ids).logits
        prefix = hooked(ids[:, :6], use_cache=True)
        before = [s.clone() for s in prefix.state]
        suffix = hooked(ids[:, 6:], state=prefix.state, use_cache=True)
        torch.testing.assert_close(suffix.logits, full[:, 6:], atol=ATOL, rtol=0)
        assert all(torch.equal(a, b) for a, b in zip(before, prefix.state, strict=True))
        # Stock mutates the state it is given (so one state cannot seed two continuations).
        stock_prefix = ref(ids[:, :6], use_cache=True)
        stock_before = [s.clone() for s in stock_prefix.state]
        ref(ids[:, 6:], state=stock_prefix.state, use_cache=True)
        assert not all(torch.equal(a, b) for a, b in zip(stock_before, stock_prefix.state, strict=True))


def test_state_round_trip_through_nnsight(pair, ids) -> None:
    _, hooked = pair
    m = nnsight_rnn.load(hooked)
    with torch.no_grad(), m.trace(ids):
        full = m.output.logits.save()
    with torch.no_grad(), m.trace(ids[:, :6], use_cache=True):
        out = m.output.save()
    state = m.state_from_output(out)
    assert state.family == "rwkv4" and len(state.layers) == N_LAYERS
    assert {k: tuple(v.shape) for k, v in state.layers[0].items()} == {
        "att_shift": (2, 32), "ffn_shift": (2, 32), "num": (2, 32), "den": (2, 32), "max": (2, 32),
    }  # fmt: skip
    with torch.no_grad(), m.trace(ids[:, 6:], state=state):
        suffix = m.output.logits.save()
    torch.testing.assert_close(suffix, full[:, 6:], atol=ATOL, rtol=0)
    with torch.no_grad(), m.trace(ids[:, 6:], state=state):
        m.layers[1].mlp.hook_ffn_shift_state_in.output[:] = 0
        edited = m.output.logits.save()
    assert (edited - suffix).abs().max() > 1e-4


# --- state semantics through nnsight --------------------------------------------------------------

T = 5


@pytest.fixture
def m(pair) -> nnsight_rnn.HookedLanguageModel:
    return nnsight_rnn.load(pair[1])


def _positions_changed(a: torch.Tensor, b: torch.Tensor) -> list[int]:
    return ((a - b).abs().amax(dim=(0, 2)) > 0).nonzero().flatten().tolist()


def test_zeroing_write_at_t_changes_t_onwards(m, ids) -> None:
    with torch.no_grad(), m.trace(ids):
        base_mixer = m.layers[1].mixer.output.save()
        base = m.output.logits.save()
    with torch.no_grad(), m.trace(ids):
        m.layers[1].mixer.hook_wkv_write.output[:, T] = 0
        mixer = m.layers[1].mixer.output.save()
        logits = m.output.logits.save()
    length = ids.shape[1]
    assert _positions_changed(mixer, base_mixer) == list(range(T, length))
    assert _positions_changed(logits, base) == list(range(T, length))


def test_readout_edit_at_t_changes_only_t(m, ids) -> None:
    with torch.no_grad(), m.trace(ids):
        base_mixer = m.layers[1].mixer.output.save()
        base = m.output.logits.save()
    with torch.no_grad(), m.trace(ids):
        states = m.layers[1].mixer.hook_wkv_state
        states.output[:, T, 0] = states.output[:, T, 0] * 3.0 + 1.0  # the numerator
        carried_out = m.layers[1].mixer.hook_wkv_state_out.output.save()
        mixer = m.layers[1].mixer.output.save()
    with torch.no_grad(), m.trace(ids):
        carried_base = m.layers[1].mixer.hook_wkv_state_out.output.save()
    assert _positions_changed(mixer, base_mixer) == [T]
    assert torch.equal(carried_out, carried_base)  # a readout edit does not propagate
    # In the last layer the channel-mix still token-shifts the change into t+1: logits change at t, t+1.
    with torch.no_grad(), m.trace(ids):
        states = m.layers[N_LAYERS - 1].mixer.hook_wkv_state
        states.output[:, T, 0] = states.output[:, T, 0] * 3.0 + 1.0
        logits = m.output.logits.save()
    assert _positions_changed(logits, base) == [T, T + 1]


def test_readout_trajectory_starts_at_the_carried_state(m, ids) -> None:
    with torch.no_grad(), m.trace(ids):
        carried_in = m.layers[0].mixer.hook_wkv_state_in.output.save()
        states = m.layers[0].mixer.hook_wkv_state.output.save()
    assert states.shape == (2, ids.shape[1], 3, 32)
    torch.testing.assert_close(states[:, 0], carried_in, atol=0, rtol=0)
    assert torch.all(states[:, 1:, 1] > 0)  # denominators of a non-empty past


def test_selected_positions_match_the_full_hooks(m, ids) -> None:
    """``HookPoint.positions``: states / writes at chosen positions only, same values and edit semantics."""
    mixer = m.layers[1].mixer
    with torch.no_grad(), m.trace(ids):
        full_states = mixer.hook_wkv_state.output.save()
    with torch.no_grad(), m.trace(ids):
        mixer.hook_wkv_write.output[:, T] = 0
        full_zeroed = m.output.logits.save()
    mixer.hook_wkv_state._module.positions = [7, 2]
    mixer.hook_wkv_write._module.positions = [-1, T]
    try:
        with torch.no_grad(), m.trace(ids):
            some_states = mixer.hook_wkv_state.output.save()
        with torch.no_grad(), m.trace(ids):
            mixer.hook_wkv_write.output[:, 1] = 0  # position T
            zeroed = m.output.logits.save()
    finally:
        mixer.hook_wkv_state._module.positions = None
        mixer.hook_wkv_write._module.positions = None
    torch.testing.assert_close(some_states, full_states[:, [7, 2]], atol=0, rtol=0)
    torch.testing.assert_close(zeroed, full_zeroed, atol=0, rtol=0)


def test_carried_state_edit_changes_suffix_only(m, ids) -> None:
    state = m.run_state(ids[:, :6])
    with torch.no_grad(), m.trace(ids[:, 6:], state=state):
        same = m.output.logits.save()
    with torch.no_grad(), m.trace(ids[:, 6:], state=state):
        m.layers[1].mixer.hook_wkv_state_in.output[:, 0] = 0  # empty the numerator
        changed = m.output.logits.save()
    assert (changed - same).abs().max() > 1e-4
    again = m.run_state(ids[:, :6])
    for a, b in zip(state.layers, again.layers, strict=True):
        for k in a:
            assert torch.equal(a[k], b[k]), k


def test_decay_and_bonus_hooks_act(m, ids) -> None:
    with torch.no_grad(), m.trace(ids):
        base = m.output.logits.save()
    with torch.no_grad(), m.trace(ids):
        m.layers[1].mixer.hook_bonus.output[1] = -30.0  # row 1 ignores its current token in the WKV
        bonus = m.output.logits.save()
    with torch.no_grad(), m.trace(ids):
        m.layers[1].mixer.hook_decay.output[:] = -1e4  # forget the past at once
        decay = m.output.logits.save()
    assert torch.equal(bonus[0], base[0]) and (bonus[1] - base[1]).abs().max() > 1e-4
    assert torch.equal(decay[:, 0], base[:, 0]) and (decay[:, 1:] - base[:, 1:]).abs().max() > 1e-4


# --- module surface -------------------------------------------------------------------------------


def test_residual_is_an_unscaled_tensor_and_out_proj_is_reachable(pair, ids) -> None:
    ref, hooked = pair
    m = nnsight_rnn.load(hooked)
    ref.train()
    with torch.no_grad():
        stock = ref(ids, output_hidden_states=True)
    with torch.no_grad(), m.trace(ids):
        resid = list().save()
        for i in range(N_LAYERS - 1):
            resid.append(m.layers[i].output)
        out_proj = m.layers[2].mixer.out_proj.output.save()
        mixer = m.layers[2].mixer.output.save()
        resid.append(m.layers[2].output)
    for i, r in enumerate(resid):
        assert isinstance(r, torch.Tensor) and r.shape == (2, ids.shape[1], 32)
        torch.testing.assert_close(r, stock.hidden_states[i], atol=EXACT, rtol=0)
    torch.testing.assert_close(out_proj, mixer, atol=0, rtol=0)


def test_every_hook_fires_once_per_forward(pair, ids) -> None:
    _, hooked = pair
    points = name_hook_points(hooked, nnsight_rnn.get_card("rwkv4"))
    assert "layers.0.mixer.hook_wkv_state" in points and "layers.2.mlp.hook_k" in points
    calls: dict[str, int] = {}
    handles = [
        p.register_forward_hook(lambda mod, args, out, name=name: calls.__setitem__(name, calls.get(name, 0) + 1))
        for name, p in points.items()
    ]
    try:
        with torch.no_grad():
            state = hooked(ids, use_cache=True).state
            first = dict(calls)
            calls.clear()
            hooked(ids[:, :1], state=state)  # a one-token step
    finally:
        for h in handles:
            h.remove()
    assert set(first) == set(points) and set(first.values()) == {1}
    assert set(calls) == set(points) and set(calls.values()) == {1}


def test_generation_hooks_fire_per_step_and_edit_at_step_k(m) -> None:
    ids = torch.randint(0, VOCAB, (2, 5))
    steps, k = 5, 2
    with torch.no_grad(), m.generate(ids, max_new_tokens=steps, do_sample=False) as tracer:
        seen = list().save()
        for _ in tracer.iter[:steps]:
            for layer in range(N_LAYERS):
                seen.append(tuple(m.layers[layer].mixer.hook_wkv_state_out.output.shape))
                seen.append(tuple(m.layers[layer].mlp.hook_ffn_shift_state_out.output.shape))
        base_tokens = tracer.result.save()
    assert len(seen) == 2 * N_LAYERS * steps
    assert set(seen) == {(2, 32), (2, 3, 32)}

    with torch.no_grad(), m.generate(ids, max_new_tokens=steps, do_sample=False) as tracer:
        logits = list().save()
        for step in tracer.iter[:steps]:
            if step == k:
                for layer in range(N_LAYERS):
                    m.layers[layer].mixer.hook_wkv_state_in.output[:, 0] = 0
            logits.append(m.output.logits[:, -1].clone())
        tokens = tracer.result.save()
    with torch.no_grad(), m.generate(ids, max_new_tokens=steps, do_sample=False) as tracer:
        base_logits = list().save()
        for _ in tracer.iter[:steps]:
            base_logits.append(m.output.logits[:, -1].clone())
    prompt = ids.shape[1]
    assert torch.equal(tokens[:, : prompt + k], base_tokens[:, : prompt + k])
    for step in range(k):
        assert torch.equal(logits[step], base_logits[step])
    assert (logits[k] - base_logits[k]).abs().max() > 1e-4
