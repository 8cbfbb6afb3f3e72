"""Hookable RWKV-7 (``Rwkv7ForCausalLM``) against BlinkDL's ``rwkv`` package and rwkv7-hf, and its state contracts.

References:
- BlinkDL's ``rwkv`` 0.8.x (``RWKV_V7_ON=1``, pure torch, fp32, CPU) on random checkpoints written in its
  ``.pth`` layout by tests/models/blinkdl.py (independent of our converter);
- rwkv7-hf (pure-torch HF model, fla's ``state_dict`` layout) on random weights saved as a hub folder.

Tolerances (fp32): logits and final state vs BlinkDL within 1e-4 over 64 tokens (observed ~3e-6; the
same products, summed in another order), decode steps within 1e-4; vs rwkv7-hf logits 1e-5 (observed
~4e-6), state 1e-5 absolute + 1e-5 relative (entries up to ~3), gradients 1e-4; padding, round-trip and batched decode 1e-5 (observed <= 2e-6);
greedy tokens identical.
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

import nnsight_rnn
from nnsight_rnn.mixers.rwkv_cache import RwkvCache
from nnsight_rnn.models.blinkdl import blinkdl_version, load_blinkdl, save_blinkdl, to_blinkdl_state_dict
from nnsight_rnn.models.rwkv7 import Rwkv7Config, Rwkv7ForCausalLM, Rwkv7TimeMix
from nnsight_rnn.surgery import name_hook_points
from nnsight_rnn.upstream import output_cache

from ..blinkdl import blinkdl_model, random_pth_v7

REF_ATOL = 1e-4
ATOL = 1e-5
GRAD_ATOL = 1e-4
VOCAB = 300
N_LAYERS = 3


@pytest.fixture
def pth(tmp_path: Path) -> Path:
    path = tmp_path / "rwkv7-random.pth"
    random_pth_v7(path, vocab=VOCAB, layers=N_LAYERS, seed=1)
    return path


@pytest.fixture
def model(pth: Path) -> Rwkv7ForCausalLM:
    return load_blinkdl(pth)


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


def _assert_state_equals_blinkdl(cache: RwkvCache, row: int, blink_state: list[torch.Tensor], atol: float) -> None:
    for i, layer in enumerate(cache.layers):
        torch.testing.assert_close(layer["att_shift"][row], blink_state[3 * i], atol=atol, rtol=0)
        # BlinkDL stores the WKV state [H, V, K]; ours is [H, K, V].
        torch.testing.assert_close(layer["wkv"][row], blink_state[3 * i + 1].transpose(-1, -2), atol=atol, rtol=0)
        torch.testing.assert_close(layer["ffn_shift"][row], blink_state[3 * i + 2], atol=atol, rtol=0)


# --- BlinkDL's rwkv package ----------------------------------------------------------------------


def test_logits_and_state_match_blinkdl_over_64_tokens(pth: Path, model: Rwkv7ForCausalLM) -> None:
    ref = blinkdl_model(pth, 7)
    tokens = torch.randint(0, VOCAB, (64,))
    ref_logits, ref_state = ref.forward(tokens.tolist(), None, full_output=True)
    with torch.no_grad():
        out = model(tokens[None], use_cache=True)
    torch.testing.assert_close(out.logits[0], ref_logits, atol=REF_ATOL, rtol=0)
    assert ref_logits.abs().max() > 1.0  # a meaningful comparison, not of near-zero logits
    _assert_state_equals_blinkdl(output_cache(out), 0, ref_state, REF_ATOL)


def test_decode_steps_and_greedy_tokens_match_blinkdl(pth: Path, model: Rwkv7ForCausalLM) -> None:
    ref = blinkdl_model(pth, 7)
    prompt = torch.randint(0, VOCAB, (10,))
    ref_logits, ref_state = ref.forward(prompt.tolist(), None)
    ref_tokens = []
    for _ in range(12):  # BlinkDL's one-token path (forward_one), greedy
        ref_tokens.append(int(ref_logits.argmax()))
        ref_logits, ref_state = ref.forward([ref_tokens[-1]], ref_state)
    with torch.no_grad():
        generated = model.generate(prompt[None], max_new_tokens=12, do_sample=False)
    assert generated[0, 10:].tolist() == ref_tokens
    # Step by step through our cache: same logits and state as BlinkDL's one-token path.
    ref_logits, ref_state = ref.forward(prompt.tolist(), None)
    with torch.no_grad():
        out = model(prompt[None], use_cache=True)
        for tok in ref_tokens[:5]:
            torch.testing.assert_close(out.logits[0, -1], ref_logits, atol=REF_ATOL, rtol=0)
            ref_logits, ref_state = ref.forward([tok], ref_state)
            out = model(torch.tensor([[tok]]), past_key_values=output_cache(out), use_cache=True)
    _assert_state_equals_blinkdl(output_cache(out), 0, ref_state, REF_ATOL)


def test_pth_conversion_round_trips(pth: Path, model: Rwkv7ForCausalLM, tmp_path: Path) -> None:
    original = torch.load(pth, weights_only=True)
    assert blinkdl_version(original) == 7
    assert model.config.num_heads == 4 and model.config.head_dim == 8 and model.config.group_norm_eps == 64e-5
    back = to_blinkdl_state_dict(model)
    # Layer 0 has no value residual: BlinkDL's unused blocks.0.att.v0/v1/v2 are dropped.
    assert set(original) - set(back) == {"blocks.0.att.v0", "blocks.0.att.v1", "blocks.0.att.v2"}
    for key, value in back.items():
        assert torch.equal(value, original[key]), key
    save_blinkdl(model, tmp_path / "again.pth")
    again = load_blinkdl(tmp_path / "again.pth")
    for (k, a), b in zip(model.state_dict().items(), again.state_dict().values(), strict=True):
        assert torch.equal(a, b), k


# --- rwkv7-hf (fla's layout) -----------------------------------------------------------------------


@pytest.fixture
def rwkv7_hf(tmp_path: Path) -> tuple[torch.nn.Module, Path]:
    """A random rwkv7-hf model (eval) and the hub folder it saved."""
    configuration = pytest.importorskip("rwkv7_hf.configuration_rwkv7")
    modeling = pytest.importorskip("rwkv7_hf.modeling_rwkv7")
    cfg = configuration.RWKV7Config(
        vocab_size=VOCAB, hidden_size=32, num_hidden_layers=N_LAYERS, head_dim=8, decay_low_rank_dim=8,
        gate_low_rank_dim=10, a_low_rank_dim=8, v_low_rank_dim=6, intermediate_size=64,
    )  # fmt: skip
    ref = modeling.RWKV7ForCausalLM(cfg).eval()
    with torch.no_grad():
        for name, p in ref.named_parameters():
            p.copy_(torch.randn_like(p) * 0.3 + (1.0 if "norm.weight" in name else 0.0))
    ref.save_pretrained(tmp_path / "hf")
    return ref, tmp_path / "hf"


def test_rwkv7_hf_folder_loads_into_our_class_and_matches(rwkv7_hf, ids) -> None:
    ref, folder = rwkv7_hf
    m = nnsight_rnn.load(str(folder))  # its config.json has an auto_map: our registered class wins, offline
    assert isinstance(m._module, Rwkv7ForCausalLM)
    with torch.no_grad(), m.trace(ids, use_cache=True):
        out = m.output.save()
    with torch.no_grad():
        expected = ref(ids, use_cache=True)
    torch.testing.assert_close(out.logits, expected.logits, atol=ATOL, rtol=0)
    for i, layer in enumerate(output_cache(out).layers):
        wkv = output_cache(expected).recurrent_state[i]  # entries up to ~3: relative tolerance too
        torch.testing.assert_close(layer["wkv"], wkv, atol=ATOL, rtol=ATOL)
        torch.testing.assert_close(layer["att_shift"], output_cache(expected).attention_shift[i], atol=ATOL, rtol=0)
        torch.testing.assert_close(layer["ffn_shift"], output_cache(expected).ffn_shift[i], atol=ATOL, rtol=0)


def test_gradients_match_rwkv7_hf(rwkv7_hf, ids) -> None:
    ref, folder = rwkv7_hf
    ours = Rwkv7ForCausalLM.from_pretrained(folder)
    embeds = ref.get_input_embeddings()(ids).detach()
    grads = []
    for model in (ref, ours):
        x = embeds.clone().requires_grad_(True)
        model.zero_grad()
        model(inputs_embeds=x, labels=ids, use_cache=False).loss.backward()
        grads.append((x.grad, {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}))
    (gx_ref, gp_ref), (gx, gp) = grads
    torch.testing.assert_close(gx, gx_ref, atol=GRAD_ATOL, rtol=0)
    assert set(gp) == set(gp_ref) - {"model.embeddings.weight"} and any("w_lora" in n for n in gp)
    for name in gp:
        torch.testing.assert_close(gp[name], gp_ref[name], atol=GRAD_ATOL, rtol=1e-4, msg=name)


# --- HF surface ----------------------------------------------------------------------------------


def test_save_pretrained_and_auto_classes(model: Rwkv7ForCausalLM, ids, tmp_path: Path) -> None:
    from transformers import AutoConfig, AutoModelForCausalLM

    model.save_pretrained(tmp_path / "m")
    assert isinstance(AutoConfig.from_pretrained(tmp_path / "m"), Rwkv7Config)
    again = AutoModelForCausalLM.from_pretrained(tmp_path / "m")
    assert isinstance(again, Rwkv7ForCausalLM)
    with torch.no_grad():
        torch.testing.assert_close(again(ids).logits, model(ids).logits, atol=0, rtol=0)
    m = nnsight_rnn.load(str(tmp_path / "m"))
    assert m.card.family == "rwkv7"


def test_hidden_states_follow_the_transformer_convention(model: Rwkv7ForCausalLM, ids) -> None:
    with torch.no_grad():
        out = model(ids, output_hidden_states=True)
    hs = out.hidden_states
    assert len(hs) == N_LAYERS + 1
    torch.testing.assert_close(hs[0], model.model.embeddings(ids), atol=0, rtol=0)
    torch.testing.assert_close(model.lm_head(hs[-1]), out.logits, atol=0, rtol=0)


def test_tuple_outputs_and_loss(model: Rwkv7ForCausalLM, ids) -> None:
    with torch.no_grad():
        loss, logits, cache = model(ids, labels=ids, use_cache=True, return_dict=False)
        ref = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, VOCAB), ids[:, 1:].reshape(-1))
    assert isinstance(cache, RwkvCache)
    torch.testing.assert_close(loss, ref, atol=1e-6, rtol=0)


# --- carried state, padding, generation ----------------------------------------------------------


def test_state_round_trip_and_the_given_cache_is_not_mutated(model: Rwkv7ForCausalLM, ids) -> None:
    with torch.no_grad():
        full = model(ids).logits
        prefix = model(ids[:, :6], use_cache=True)
        before = output_cache(prefix).clone()
        suffix = model(ids[:, 6:], past_key_values=output_cache(prefix))
        again = model(ids[:, 6:], past_key_values=output_cache(prefix))
    torch.testing.assert_close(suffix.logits, full[:, 6:], atol=ATOL, rtol=0)
    torch.testing.assert_close(again.logits, suffix.logits, atol=0, rtol=0)
    for a, b in zip(before.layers, output_cache(prefix).layers, strict=True):
        assert all(torch.equal(a[k], b[k]) for k in a)
    assert output_cache(suffix).seen_tokens == ids.shape[1]


def test_left_padding_equals_rows_alone(model: Rwkv7ForCausalLM) -> None:
    rows = [torch.randint(0, VOCAB, (n,)) for n in (9, 4, 7)]
    ids, mask = _padded(rows)
    width = ids.shape[1]
    with torch.no_grad():
        batched = model(ids, attention_mask=mask, use_cache=True)
        for i, r in enumerate(rows):
            alone = model(r[None], use_cache=True)
            torch.testing.assert_close(batched.logits[i, width - len(r) :], alone.logits[0], atol=ATOL, rtol=0)
            for lb, la in zip(output_cache(batched).layers, output_cache(alone).layers, strict=True):
                for slot in lb:
                    torch.testing.assert_close(lb[slot][i], la[slot][0], atol=ATOL, rtol=0, msg=slot)


def test_padding_in_the_middle_and_in_a_continuation(model: Rwkv7ForCausalLM) -> None:
    ids = torch.randint(0, VOCAB, (1, 10))
    mask = torch.tensor([[1, 1, 0, 0, 1, 1, 1, 0, 1, 1]])
    keep = mask[0].bool()
    with torch.no_grad():
        padded = model(ids, attention_mask=mask).logits
        compact = model(ids[:, keep]).logits
        torch.testing.assert_close(padded[:, keep], compact, atol=ATOL, rtol=0)
        prefix = model(ids[:, :4], attention_mask=mask[:, :4], use_cache=True)
        suffix = model(ids[:, 4:], attention_mask=mask, past_key_values=output_cache(prefix))  # whole-prefix mask
        torch.testing.assert_close(suffix.logits[:, keep[4:]], compact[:, 2:], atol=ATOL, rtol=0)


def test_batched_generate_with_padding_equals_rows(model: Rwkv7ForCausalLM) -> None:
    rows = [torch.randint(1, VOCAB, (n,)) for n in (5, 3, 6)]
    ids, mask = _padded(rows)
    with torch.no_grad():
        batched = model.generate(ids, attention_mask=mask, max_new_tokens=8, do_sample=False, pad_token_id=0)
        for i, r in enumerate(rows):
            alone = model.generate(r[None], max_new_tokens=8, do_sample=False, pad_token_id=0)
            assert batched[i, ids.shape[1] :].tolist() == alone[0, len(r) :].tolist()


def test_gradient_flows_through_the_carried_state(model: Rwkv7ForCausalLM, ids) -> None:
    with torch.no_grad():
        cache = output_cache(model(ids[:, :5], use_cache=True))
    leaves = RwkvCache([{k: v.clone().requires_grad_(True) for k, v in layer.items()} for layer in cache.layers])
    model(ids[:, 5:], past_key_values=leaves).logits.sum().backward()
    for layer in leaves.layers:
        assert all(t.grad is not None and t.grad.abs().sum() > 0 for t in layer.values())


def test_cache_errors_name_the_problem(model: Rwkv7ForCausalLM, ids) -> None:
    with torch.no_grad():
        cache = output_cache(model(ids[:1, :4], use_cache=True))
        with pytest.raises(ValueError, match=r"state for batch 1 but the input has batch 2.*expand"):
            model(ids, past_key_values=cache)
        with pytest.raises(TypeError, match="RwkvCache"):
            model(ids, past_key_values=[torch.zeros(1)])
    with pytest.raises(TypeError, match="load_blinkdl"):
        Rwkv7TimeMix.from_original(torch.nn.Linear(2, 2), model.config, 0)


# --- hooks ---------------------------------------------------------------------------------------


def test_every_hook_fires_once_per_forward_and_per_decode_step(model: Rwkv7ForCausalLM, ids) -> None:
    points = name_hook_points(model, nnsight_rnn.get_card("rwkv7"))
    assert {"layers.0.mixer.hook_wkv_state", "layers.1.mixer.hook_b", "layers.2.mlp.hook_k"} <= set(points)
    calls: dict[str, int] = {}
    handles = [
        p.register_forward_hook(lambda mod, args, out, name=name: calls.__setitem__(name, calls.get(name, 0) + 1))
        for name, p in points.items()
    ]
    try:
        with torch.no_grad():
            cache = output_cache(model(ids, use_cache=True))
            first = dict(calls)
            calls.clear()
            model(ids[:, :1], past_key_values=cache)
    finally:
        for h in handles:
            h.remove()
    assert set(first) == set(points) and set(first.values()) == {1}
    assert set(calls) == set(points) and set(calls.values()) == {1}


def test_hook_shapes(model: Rwkv7ForCausalLM, ids) -> None:
    m = nnsight_rnn.load(model)
    with torch.no_grad(), m.trace(ids):
        mixer = m.layers[1].mixer
        shapes = list().save()
        for name in ("hook_wkv_state_in", "hook_xr", "hook_decay", "hook_kk", "hook_wkv_write", "hook_wkv_state"):
            shapes.append(tuple(mixer.get(name).output.shape))
        shapes.append(tuple(m.layers[1].mlp.hook_k.output.shape))
    assert shapes == [
        (2, 4, 8, 8),
        (2, 11, 32),
        (2, 11, 32),
        (2, 11, 32),
        (2, 11, 4, 8, 8),
        (2, 11, 4, 8, 8),
        (2, 11, 64),
    ]


def test_decay_is_in_unit_interval_and_layer0_v_first_reaches_later_layers_only(model: Rwkv7ForCausalLM, ids) -> None:
    m = nnsight_rnn.load(model)
    with torch.no_grad(), m.trace(ids):
        w = m.layers[1].mixer.hook_decay.output.save()
    assert torch.all((w > 0) & (w < 1))
    with torch.no_grad(), m.trace(ids):
        base = list().save()
        for i in range(N_LAYERS):
            base.append(m.layers[i].mixer.output)
    with torch.no_grad(), m.trace(ids):
        m.layers[0].mixer.hook_v_first.output[:] = 0  # what layer 0 hands on, not its own value
        edited = list().save()
        for i in range(N_LAYERS):
            edited.append(m.layers[i].mixer.output)
    assert torch.equal(edited[0], base[0])
    assert all((edited[i] - base[i]).abs().max() > 1e-4 for i in (1, 2))


def test_readout_edit_recomputes_only_that_position(model: Rwkv7ForCausalLM, ids) -> None:
    m = nnsight_rnn.load(model)
    t = 4
    with torch.no_grad(), m.trace(ids):
        base_wkv = m.layers[1].mixer.hook_wkv.output.save()
        base_out = m.layers[1].mixer.hook_wkv_state_out.output.save()
    with torch.no_grad(), m.trace(ids):
        m.layers[1].mixer.hook_wkv_state.output[:, t] = 0  # an empty state at t: S_t^T r_t = 0
        wkv = m.layers[1].mixer.hook_wkv.output.save()
        out = m.layers[1].mixer.hook_wkv_state_out.output.save()
    changed = ((wkv - base_wkv).abs().amax(dim=(0, 2)) > 0).nonzero().flatten().tolist()
    assert changed == [t] and torch.all(wkv[:, t] == 0)
    assert torch.equal(out, base_out)


def test_selected_write_positions_equal_full_write_edits(model: Rwkv7ForCausalLM, ids) -> None:
    m = nnsight_rnn.load(model)
    hook = m.layers[1].mixer.hook_wkv_write
    with torch.no_grad(), m.trace(ids):
        hook.output[:, 5] = hook.output[:, 5] * 2.0
        full = m.output.logits.save()
    hook._module.positions = [-1, 5]
    try:
        with torch.no_grad(), m.trace(ids):
            assert_shape = hook.output.shape.save()
            hook.output[:, 1] = hook.output[:, 1] * 2.0
            some = m.output.logits.save()
    finally:
        hook._module.positions = None
    assert tuple(assert_shape) == (2, 2, 4, 8, 8)
    torch.testing.assert_close(some, full, atol=1e-6, rtol=0)


def test_copy_is_independent(model: Rwkv7ForCausalLM, ids) -> None:
    twin = copy.deepcopy(model)
    with torch.no_grad():
        twin.model.layers[0].attn.r_k.add_(1.0)
        assert (twin(ids).logits - model(ids).logits).abs().max() > 1e-4
