"""Parity and state semantics of the hookable Mamba-2 (SSD) mixer (mamba2 card).

Two tiny random configs: ``g1`` (4 heads x head_dim 16, state 8, one group, 2 layers, chunk 8,
conv kernel 4) and ``g2`` (8 heads x head_dim 8, state 16, two groups, 3 layers, chunk 4, conv
kernel 3, biases in in_proj/out_proj). Sequences of 21 tokens span several chunks of both the
hooked scan and HF's.

Tolerances (fp32), all against the untouched HF ``Mamba2ForCausalLM`` (torch path):
- logits, hidden states, per-step decode logits, cache contents: ``ATOL = 1e-5``
  (observed ~1e-6 on logits, ~1e-8 on the SSM state: same maths, other association order);
- gradients w.r.t. input embeddings and every parameter: ``GRAD_ATOL = 1e-4`` (observed ~1e-6);
- state round-trip (prefix -> state -> multi-token suffix vs the full sequence) and left-padded
  rows vs rows alone: ``ATOL`` (observed ~1e-6);
- greedy generation: identical tokens;
- edits: positions an edit cannot reach are compared exactly (``== 0`` difference).
"""

from __future__ import annotations

import copy

import pytest
import torch
from transformers import Mamba2Config, Mamba2ForCausalLM

import nnsight_rnn
import nnsight_rnn.mixers.mamba2 as mamba2_module
from nnsight_rnn.mixers.mamba2 import HookableMamba2Mixer
from nnsight_rnn.scans.ssd import ssd_recurrent
from nnsight_rnn.upstream import mamba_cache_kwargs, output_cache

ATOL = 1e-5
GRAD_ATOL = 1e-4
VOCAB = 300
LENGTH = 21
CONFIGS = {
    "g1": dict(hidden_size=32, num_heads=4, head_dim=16, state_size=8, n_groups=1, num_hidden_layers=2,
               chunk_size=8, conv_kernel=4),
    "g2": dict(hidden_size=32, num_heads=8, head_dim=8, state_size=16, n_groups=2, num_hidden_layers=3,
               chunk_size=4, conv_kernel=3, use_bias=True),
}  # fmt: skip


def _config(name: str, **overrides: object) -> Mamba2Config:
    return Mamba2Config(vocab_size=VOCAB, expand=2, **{**CONFIGS[name], **overrides})


def _reference(name: str, **overrides: object) -> Mamba2ForCausalLM:
    model = Mamba2ForCausalLM(_config(name, **overrides)).eval()
    with torch.no_grad():  # less uniform than HF's init (A = 1..H, D = 1, dt in [1e-3, 0.1])
        for layer in model.backbone.layers:
            layer.mixer.D.copy_(torch.randn_like(layer.mixer.D))
            layer.mixer.dt_bias.add_(torch.randn_like(layer.mixer.dt_bias))
            layer.mixer.norm.weight.copy_(1 + 0.1 * torch.randn_like(layer.mixer.norm.weight))
            for linear in (layer.mixer.in_proj, layer.mixer.out_proj):
                if linear.bias is not None:  # HF initialises biases to zero
                    linear.bias.copy_(0.1 * torch.randn_like(linear.bias))
    return model


@pytest.fixture(params=sorted(CONFIGS))
def cfg_name(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def pair(cfg_name: str) -> tuple[Mamba2ForCausalLM, Mamba2ForCausalLM]:
    """(untouched HF model, hooked deep copy) with identical weights."""
    ref = _reference(cfg_name)
    return ref, nnsight_rnn.install(copy.deepcopy(ref))


@pytest.fixture
def ids() -> torch.Tensor:
    return torch.randint(0, VOCAB, (2, LENGTH))


def _max_diff_per_pos(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a - b).abs().flatten(2).amax(dim=(0, 2))


# --- structure -------------------------------------------------------------------------------


def test_swap_keeps_state_dict(pair):
    ref, hooked = pair
    assert list(ref.state_dict()) == list(hooked.state_dict())
    for (k, a), b in zip(ref.state_dict().items(), hooked.state_dict().values(), strict=True):
        assert torch.equal(a, b), k
    assert all(isinstance(layer.mixer, HookableMamba2Mixer) for layer in hooked.backbone.layers)
    # Adopted by reference: the very same parameter objects.
    assert hooked.backbone.layers[0].mixer.A_log is hooked.backbone.layers[0].mixer.A_log
    assert nnsight_rnn.get_card("mamba2").mixer_kind == "mamba2"


def test_save_pretrained_loads_in_stock_class(pair, tmp_path, ids):
    ref, hooked = pair
    hooked.save_pretrained(tmp_path)
    reloaded = Mamba2ForCausalLM.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        torch.testing.assert_close(reloaded(ids).logits, ref(ids).logits, atol=0, rtol=0)


def test_state_slots_match_cache(pair, ids):
    _, hooked = pair
    slots = HookableMamba2Mixer.state_slots(hooked.config)
    with torch.no_grad():
        cache = output_cache(hooked(ids, use_cache=True))
    for i in range(hooked.config.num_hidden_layers):
        assert tuple(cache.get_conv_state(i).shape) == (2, *slots["conv"])
        assert tuple(cache.get_recurrent_state(i).shape) == (2, *slots["ssm"])


# --- parity with HF ----------------------------------------------------------------------------


def test_logits_and_hidden_states_match(pair, ids):
    ref, hooked = pair
    with torch.no_grad():
        a = ref(ids, output_hidden_states=True)
        b = hooked(ids, output_hidden_states=True)
    torch.testing.assert_close(b.logits, a.logits, atol=ATOL, rtol=0)
    assert len(a.hidden_states) == len(b.hidden_states) == hooked.config.num_hidden_layers + 1
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


def test_decode_steps_match(pair, ids):
    """Prefill, then single-token steps from each model's own cache (HF's recurrent form)."""
    ref, hooked = pair
    with torch.no_grad():
        a = ref(ids[:, :7], use_cache=True)
        b = hooked(ids[:, :7], use_cache=True)
        for t in range(7, 13):
            a = ref(ids[:, t : t + 1], **mamba_cache_kwargs(output_cache(a)), use_cache=True)
            b = hooked(ids[:, t : t + 1], **mamba_cache_kwargs(output_cache(b)), use_cache=True)
            torch.testing.assert_close(b.logits, a.logits, atol=ATOL, rtol=0)
        for i in range(ref.config.num_hidden_layers):
            torch.testing.assert_close(
                output_cache(b).get_recurrent_state(i), output_cache(a).get_recurrent_state(i), atol=ATOL, rtol=0
            )


def test_greedy_generate_identical(pair, ids):
    ref, hooked = pair
    with torch.no_grad():
        a = ref.generate(ids[:, :6], max_new_tokens=12, min_new_tokens=12, do_sample=False)
        b = hooked.generate(ids[:, :6], max_new_tokens=12, min_new_tokens=12, do_sample=False)
    assert a.tolist() == b.tolist()


def test_gradients_match(pair, ids):
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
    assert gp.keys() == gp_ref.keys()
    assert any(".mixer.A_log" in n for n in gp) and any(".mixer.dt_bias" in n for n in gp)
    for name in gp_ref:
        torch.testing.assert_close(gp[name], gp_ref[name], atol=GRAD_ATOL, rtol=1e-4, msg=name)


def test_time_step_limit_clamp_matches_prefill():
    """A finite ``time_step_limit`` clamps dt as HF's chunked path does (HF's decode step skips it)."""
    ref = _reference("g2", time_step_limit=(0.01, 0.05))
    hooked = nnsight_rnn.install(copy.deepcopy(ref))
    ids = torch.randint(0, VOCAB, (2, LENGTH))
    with torch.no_grad():
        torch.testing.assert_close(hooked(ids).logits, ref(ids).logits, atol=ATOL, rtol=0)
        unclamped = nnsight_rnn.install(copy.deepcopy(_reference("g2")))
        unclamped.load_state_dict(ref.state_dict())
        assert (unclamped(ids).logits - ref(ids).logits).abs().max() > 100 * ATOL


# --- carried state ----------------------------------------------------------------------------


def test_multi_token_continuation_is_exact(pair, ids):
    ref, hooked = pair
    with torch.no_grad():
        full = ref(ids).logits
        for cut in (1, 6, 9):  # suffixes start mid-chunk and span several chunks
            prefix = hooked(ids[:, :cut], use_cache=True)
            suffix = hooked(ids[:, cut:], **mamba_cache_kwargs(output_cache(prefix)), use_cache=True)
            torch.testing.assert_close(suffix.logits, full[:, cut:], atol=ATOL, rtol=0)


def test_state_round_trip_through_nnsight(pair, ids):
    ref, _ = pair
    m = nnsight_rnn.load(copy.deepcopy(ref))
    with torch.no_grad(), m.trace(ids):
        full = m.output.logits.save()
    with torch.no_grad(), m.trace(ids[:, :9], use_cache=True):
        out = m.output.save()
    state = m.state_from_output(out)
    assert state.family == "mamba2"
    slots = HookableMamba2Mixer.state_slots(ref.config)
    assert {k: tuple(v.shape[1:]) for k, v in state.layers[0].items()} == slots
    kept = state.clone()
    with torch.no_grad(), m.trace(ids[:, 9:], state=state):
        suffix = m.output.logits.save()
    torch.testing.assert_close(suffix, full[:, 9:], atol=ATOL, rtol=0)
    for a, b in zip(state.layers, kept.layers, strict=True):  # running from a state does not mutate it
        for k in a:
            assert torch.equal(a[k], b[k])
    # A batch-1 state seeds a batch of continuations.
    one = m.run_state(ids[:1, :9])
    with torch.no_grad(), m.trace(ids[:1, 9:].expand(3, -1), state=one.expand(3)):
        three = m.output.logits.save()
    for row in range(3):
        torch.testing.assert_close(three[row], full[0, 9:], atol=ATOL, rtol=0)


def test_carried_state_edit_changes_suffix(pair, ids):
    ref, _ = pair
    m = nnsight_rnn.load(copy.deepcopy(ref))
    state = m.run_state(ids[:, :9])
    with torch.no_grad(), m.trace(ids[:, 9:], state=state):
        same = m.output.logits.save()
    for slot in ("ssm", "conv"):
        edited = state.clone()
        edited.layers[1][slot] = edited.layers[1][slot] * 0.0
        with torch.no_grad(), m.trace(ids[:, 9:], state=edited):
            changed = m.output.logits.save()
        assert (changed - same).abs().max() > 1e-4, slot
    # The same edit through the carried-in hook.
    with torch.no_grad(), m.trace(ids[:, 9:], state=state):
        hook = m.layers[1].mixer.hook_ssm_state_in
        hook.output[:] = hook.output * 0.0
        via_hook = m.output.logits.save()
    edited = state.clone()
    edited.layers[1]["ssm"] = edited.layers[1]["ssm"] * 0.0
    with torch.no_grad(), m.trace(ids[:, 9:], state=edited):
        via_state = m.output.logits.save()
    torch.testing.assert_close(via_hook, via_state, atol=0, rtol=0)


# --- padding ----------------------------------------------------------------------------------


def _left_padded(rows: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.zeros(len(rows), width, dtype=torch.long)
    mask = torch.zeros(len(rows), width, dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, width - len(r) :] = r
        mask[i, width - len(r) :] = 1
    return ids, mask


def test_left_padding_equals_rows_alone(pair):
    """Each padded row equals the row run alone, ours and HF's.

    With ``use_bias`` (config g2), HF's own padded rows do not: it feeds ``in_proj``'s bias into the
    conv window at padded positions (observed max |diff| ~1 on logits).
    """
    ref, hooked = pair
    rows = [torch.randint(0, VOCAB, (n,)) for n in (13, 5, 9, 2)]
    ids, mask = _left_padded(rows)
    width = ids.shape[1]
    dts: list[torch.Tensor] = []
    handle = hooked.backbone.layers[0].mixer.hook_dt.register_forward_hook(lambda mod, a, o: dts.append(o))
    with torch.no_grad():
        batched = hooked(ids, attention_mask=mask, use_cache=True)
        handle.remove()
        assert torch.all(dts[0][mask == 0] == 0) and torch.all(dts[0][mask == 1] > 0)  # padding: dt = 0
        if ref.config.use_bias:
            stock = ref(ids, attention_mask=mask).logits
            assert (stock[1, width - 5 :] - ref(rows[1][None]).logits[0]).abs().max() > 100 * ATOL
        for i, r in enumerate(rows):
            alone = hooked(r[None], use_cache=True)
            stock_alone = ref(r[None]).logits
            torch.testing.assert_close(batched.logits[i, width - len(r) :], alone.logits[0], atol=ATOL, rtol=0)
            torch.testing.assert_close(alone.logits, stock_alone, atol=ATOL, rtol=0)
            for layer in range(hooked.config.num_hidden_layers):
                for get in ("get_recurrent_state", "get_conv_state"):
                    torch.testing.assert_close(
                        getattr(output_cache(batched), get)(layer)[i],
                        getattr(output_cache(alone), get)(layer)[0],
                        atol=ATOL, rtol=0, msg=f"{get} layer {layer} row {i}",
                    )  # fmt: skip


def test_left_padded_generation_equals_rows_alone(pair):
    _, hooked = pair
    rows = [torch.randint(0, VOCAB, (n,)) for n in (7, 3)]
    ids, mask = _left_padded(rows)
    with torch.no_grad():
        batched = hooked.generate(ids, attention_mask=mask, max_new_tokens=8, min_new_tokens=8, do_sample=False)
        for i, r in enumerate(rows):
            alone = hooked.generate(r[None], max_new_tokens=8, min_new_tokens=8, do_sample=False)
            assert batched[i, ids.shape[1] :].tolist() == alone[0, len(r) :].tolist()


def test_padded_batch_cannot_continue_from_a_state(pair):
    _, hooked = pair
    ids, mask = _left_padded([torch.randint(0, VOCAB, (n,)) for n in (6, 3)])
    with torch.no_grad():
        prefix = hooked(ids, attention_mask=mask, use_cache=True)
        with pytest.raises(NotImplementedError, match="padded batch"):
            hooked(ids, attention_mask=mask, **mamba_cache_kwargs(output_cache(prefix)), use_cache=True)


# --- edit semantics ---------------------------------------------------------------------------


T = 9
LAYER = 1


def _trace_logits(m, ids, edit=None, what="logits"):
    with torch.no_grad(), m.trace(ids):
        if edit is not None:
            edit(m)
        mixer = m.layers[LAYER].mixer.output.save()
        logits = m.output.logits.save()
    return mixer if what == "mixer" else logits


def test_zeroing_write_at_t_changes_t_onwards_only(pair, ids):
    ref, _ = pair
    m = nnsight_rnn.load(copy.deepcopy(ref))
    base = _trace_logits(m, ids)

    def edit(model):
        model.layers[LAYER].mixer.hook_ssm_write.output[:, T] = 0

    diff = _max_diff_per_pos(_trace_logits(m, ids, edit), base)
    assert torch.all(diff[:T] == 0), diff
    assert torch.all(diff[T:] > 1e-6), diff


def test_write_edit_matches_an_exact_rerun(pair, ids):
    """Doubling the write at t: y and the carried-out state equal a step-by-step re-run with that write."""
    _, hooked = pair
    mixer = hooked.backbone.layers[LAYER].mixer
    captured = {}

    def grab(module, args, output):
        captured["w"] = output.detach().clone()

    handle = mixer.hook_ssm_write.register_forward_hook(grab)
    try:
        with torch.no_grad():
            hooked(ids)
    finally:
        handle.remove()
    out_h: dict[str, torch.Tensor] = {}
    handles = [
        getattr(mixer, n).register_forward_hook(lambda mod, a, o, n=n: out_h.__setitem__(n, o.detach().clone()))
        for n in ("hook_x_act", "hook_dt", "hook_B", "hook_C", "hook_ssm_state_in", "hook_y", "hook_ssm_state_out")
    ]

    def double_t(module, args, output):
        output = output.clone()
        output[:, T] = output[:, T] * 2
        return output

    handles.append(mixer.hook_ssm_write.register_forward_hook(double_t))
    try:
        with torch.no_grad():
            hooked(ids)
    finally:
        for h in handles:
            h.remove()
    x, dt, B, C = out_h["hook_x_act"], out_h["hook_dt"], out_h["hook_B"], out_h["hook_C"]
    write = captured["w"].clone()
    write[:, T] *= 2
    A = -torch.exp(mixer.A_log.detach().float())
    y, h_last, _ = ssd_recurrent(x, dt, A, B, C, out_h["hook_ssm_state_in"], write=write)
    torch.testing.assert_close(out_h["hook_y"], y + x * mixer.D.detach()[:, None], atol=ATOL, rtol=0)
    torch.testing.assert_close(out_h["hook_ssm_state_out"], h_last, atol=ATOL, rtol=0)
    unedited, _, _ = ssd_recurrent(x, dt, A, B, C, out_h["hook_ssm_state_in"], write=captured["w"])
    assert (unedited - y).abs()[:, T:].amax() > 1e-4  # the edit is not negligible


def test_readout_edit_at_t_changes_only_t(pair, ids):
    ref, _ = pair
    m = nnsight_rnn.load(copy.deepcopy(ref))
    base_mixer = _trace_logits(m, ids, what="mixer")

    def edit(model):
        hook = model.layers[LAYER].mixer.hook_ssm_state
        hook.output[:, T] = hook.output[:, T] * 3.0 + 1.0

    diff = _max_diff_per_pos(_trace_logits(m, ids, edit, what="mixer"), base_mixer)
    assert (diff > 0).nonzero().flatten().tolist() == [T], diff


def test_selected_positions_equal_full_trajectory_and_edit_only_there(pair, ids):
    """``hook_ssm_state.positions`` keeps only those states; an edit there changes only them."""
    ref, _ = pair
    m = nnsight_rnn.load(copy.deepcopy(ref))
    base_mixer = _trace_logits(m, ids, what="mixer")
    with torch.no_grad(), m.trace(ids):
        full = m.layers[LAYER].mixer.hook_ssm_state.output.save()
    hook = m.layers[LAYER].mixer.hook_ssm_state._module
    hook.positions = [12, -1, 3]
    try:
        with torch.no_grad(), m.trace(ids):
            picked = m.layers[LAYER].mixer.hook_ssm_state.output.save()
            same = m.layers[LAYER].mixer.output.save()

        def edit(model):
            h = model.layers[LAYER].mixer.hook_ssm_state
            h.output[:, 0] = h.output[:, 0] * 3.0 + 1.0  # position 12

        edited = _trace_logits(m, ids, edit, what="mixer")
    finally:
        hook.positions = None
    torch.testing.assert_close(picked, full[:, [12, LENGTH - 1, 3]], atol=0, rtol=0)
    assert torch.equal(same, base_mixer)
    diff = _max_diff_per_pos(edited, base_mixer)
    assert (diff > 0).nonzero().flatten().tolist() == [12], diff


def test_state_hooks_unedited_match_fast_path(pair, ids):
    """Reading hook_ssm_state / hook_ssm_write leaves every output bit for bit unchanged."""
    ref, _ = pair
    m = nnsight_rnn.load(copy.deepcopy(ref))
    base = _trace_logits(m, ids)
    with torch.no_grad(), m.trace(ids):
        w = m.layers[LAYER].mixer.hook_ssm_write.output.save()
        s = m.layers[LAYER].mixer.hook_ssm_state.output.save()
        out = m.output.logits.save()
    assert torch.equal(out, base)
    cfg = ref.config
    assert w.shape == s.shape == (2, LENGTH, cfg.num_heads, cfg.head_dim, cfg.state_size)


def test_edit_of_x_propagates_from_t(pair, ids):
    """Replacing hook_x's value (a new tensor, not in place) reaches the conv and the scan."""
    ref, _ = pair
    m = nnsight_rnn.load(copy.deepcopy(ref))
    base = _trace_logits(m, ids)

    def edit(model):
        hook = model.layers[LAYER].mixer.hook_x
        new = hook.output.clone()
        new[:, T] = 0.0
        hook.output = new

    diff = _max_diff_per_pos(_trace_logits(m, ids, edit), base)
    assert torch.all(diff[:T] == 0), diff
    assert torch.all(diff[T:] > 0), diff


def test_expensive_hooks_not_computed_unless_wanted(pair, ids, monkeypatch):
    ref, _ = pair
    m = nnsight_rnn.load(copy.deepcopy(ref))

    def boom(*args, **kwargs):
        raise AssertionError("per-position states computed with nobody listening")

    for name in ("ssd_write", "ssd_states", "ssd_write_delta", "ssd_readout"):
        monkeypatch.setattr(mamba2_module, name, boom)
    with torch.no_grad(), m.trace(ids):
        y = m.layers[LAYER].mixer.hook_y.output.save()
        m.output.logits.save()
    assert y.shape == (2, LENGTH, ref.config.num_heads, ref.config.head_dim)
    with torch.no_grad(), pytest.raises(Exception, match="nobody listening"), m.trace(ids):
        m.layers[LAYER].mixer.hook_ssm_state.output.save()


# --- hooks fire, with the documented shapes ------------------------------------------------------


def _expected_shapes(cfg: Mamba2Config, b: int, L: int) -> dict[str, tuple[int, ...]]:
    H, P, G, N, K = cfg.num_heads, cfg.head_dim, cfg.n_groups, cfg.state_size, cfg.conv_kernel
    conv_dim = H * P + 2 * G * N
    return {
        "hook_ssm_state_in": (b, H, P, N),
        "hook_conv_state_in": (b, conv_dim, K),
        "hook_z": (b, L, H, P),
        "hook_x": (b, L, H, P),
        "hook_conv": (b, L, conv_dim),
        "hook_x_act": (b, L, H, P),
        "hook_dt": (b, L, H),
        "hook_B": (b, L, G, N),
        "hook_C": (b, L, G, N),
        "hook_ssm_write": (b, L, H, P, N),
        "hook_ssm_state": (b, L, H, P, N),
        "hook_y": (b, L, H, P),
        "hook_gated_norm": (b, L, H * P),
        "hook_ssm_state_out": (b, H, P, N),
        "hook_conv_state_out": (b, conv_dim, K),
    }


def test_every_hook_fires_in_order_with_documented_shapes(pair, ids):
    """Prefill and one decode step: every hook point of every layer fires once, in registration order."""
    _, hooked = pair
    mixers = [layer.mixer for layer in hooked.backbone.layers]
    names = list(mixers[0].hook_points())
    assert names == list(_expected_shapes(hooked.config, 1, 1))
    seen: list[tuple[int, str, tuple[int, ...]]] = []
    handles = [
        getattr(mx, n).register_forward_hook(lambda mod, a, o, i=i, n=n: seen.append((i, n, tuple(o.shape))))
        for i, mx in enumerate(mixers)
        for n in names
    ]
    try:
        with torch.no_grad():
            out = hooked(ids[:, :6], use_cache=True)
            prefill = list(seen)
            seen.clear()
            hooked(ids[:, 6:7], **mamba_cache_kwargs(output_cache(out)), use_cache=True)
            decode = list(seen)
    finally:
        for h in handles:
            h.remove()
    for got, length in ((prefill, 6), (decode, 1)):
        shapes = _expected_shapes(hooked.config, 2, length)
        expected = [(i, n, shapes[n]) for i in range(len(mixers)) for n in names]
        assert got == expected


def test_every_hook_readable_in_one_nnsight_trace(pair, ids):
    ref, _ = pair
    m = nnsight_rnn.load(copy.deepcopy(ref))
    shapes = _expected_shapes(ref.config, 2, LENGTH)
    with torch.no_grad(), m.trace(ids):
        values = list().save()
        for name in shapes:
            values.append(m.hook(f"layers.{LAYER}.mixer.{name}").output)
    assert [tuple(v.shape) for v in values] == list(shapes.values())
    with torch.no_grad(), m.trace(ids):  # card aliases resolve to the same hook point
        aliased = m.hook(f"layers.{LAYER}.mixer.hook_h").output.save()
        gated = m.hook(f"layers.{LAYER}.mixer.hook_gated").output.save()
    assert torch.equal(aliased, values[list(shapes).index("hook_ssm_state")])
    assert torch.equal(gated, values[list(shapes).index("hook_gated_norm")])


# --- generation ---------------------------------------------------------------------------------


def test_state_hook_fires_once_per_layer_per_decode_step(pair, ids):
    _, hooked = pair
    n_layers, new = hooked.config.num_hidden_layers, 5
    calls: list[tuple[int, int]] = []  # (layer, length of the call)
    handles = []
    for i, layer in enumerate(hooked.backbone.layers):
        lengths: list[int] = []
        handles.append(layer.mixer.hook_x.register_forward_hook(lambda mod, a, o, ls=lengths: ls.append(o.shape[1])))
        handles.append(
            layer.mixer.hook_ssm_state_out.register_forward_hook(
                lambda mod, a, o, i=i, ls=lengths: calls.append((i, ls[-1]))
            )
        )
    try:
        with torch.no_grad():
            hooked.generate(ids[:1, :6], max_new_tokens=new, min_new_tokens=new, do_sample=False)
    finally:
        for h in handles:
            h.remove()
    # One prefill forward (6 tokens) and new - 1 one-token decode forwards, each visiting every layer once.
    assert calls == [(i, 6) for i in range(n_layers)] + [(i, 1) for i in range(n_layers)] * (new - 1)


def test_edit_at_decode_step_k_changes_outputs_from_k_only(pair, ids):
    _, hooked = pair
    k, new = 3, 6
    mixer = hooked.backbone.layers[LAYER].mixer
    visits = [0]

    def edit(module, args, output):
        visits[0] += 1
        if visits[0] == k + 1:  # forward k (0 = prefill) produces the token of step k
            return output * -50.0
        return output

    def run(with_edit: bool):
        visits[0] = 0
        handle = mixer.hook_y.register_forward_hook(edit) if with_edit else None
        try:
            with torch.no_grad():
                return hooked.generate(
                    ids[:1, :6], max_new_tokens=new, min_new_tokens=new, do_sample=False,
                    output_logits=True, return_dict_in_generate=True,
                )  # fmt: skip
        finally:
            if handle is not None:
                handle.remove()

    base, edited = run(False), run(True)
    for step in range(k):
        assert torch.equal(base.logits[step], edited.logits[step]), step
    for step in range(k, new):
        assert (base.logits[step] - edited.logits[step]).abs().max() > 1e-4, step
    assert base.sequences[0, : 6 + k].tolist() == edited.sequences[0, : 6 + k].tolist()
