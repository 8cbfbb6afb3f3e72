"""Hookable RWKV-6 and RWKV-5 (``Rwkv6ForCausalLM``, ``Rwkv5ForCausalLM``) against BlinkDL's ``rwkv`` package.

Reference: BlinkDL's ``rwkv`` 0.8.x generic ``RWKV`` class (versions 6.0 and 5.2, TorchScript, pure torch, fp32,
CPU) on random checkpoints written in its ``.pth`` layout by tests/models/blinkdl.py (independent of our converter).
Hub layout: a folder written by hand with the RWKV "-hf" repos' ``config.json`` keys and ``state_dict`` names.

Tolerances (fp32): logits and final state vs BlinkDL within 1e-4 over 64 tokens (observed 0: the same ops in the
same order), decode steps 1e-4; padding, round-trip and batched decode 1e-5; greedy tokens identical. Gradients:
the WKV recurrence is checked against fla's naive reference under autograd in tests/models/test_wkv.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

import nnsight_rnn
from nnsight_rnn.mixers.rwkv_cache import RwkvCache
from nnsight_rnn.models.blinkdl import blinkdl_version, load_blinkdl, to_blinkdl_state_dict
from nnsight_rnn.models.rwkv5 import Rwkv5ForCausalLM
from nnsight_rnn.models.rwkv6 import Rwkv6ForCausalLM

from ..blinkdl import blinkdl_model, random_pth_v56

REF_ATOL = 1e-4
ATOL = 1e-5
VOCAB = 300
N_LAYERS = 3
CLASSES = {5: Rwkv5ForCausalLM, 6: Rwkv6ForCausalLM}


@pytest.fixture(params=[6, 5], ids=["rwkv6", "rwkv5"])
def version(request: pytest.FixtureRequest) -> int:
    return request.param


@pytest.fixture
def pth(tmp_path: Path, version: int) -> Path:
    path = tmp_path / f"rwkv{version}-random.pth"
    random_pth_v56(path, version, vocab=VOCAB, layers=N_LAYERS, seed=2)
    return path


@pytest.fixture
def model(pth: Path) -> torch.nn.Module:
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


def _assert_state_equals_blinkdl(cache: RwkvCache, blink_state: list[torch.Tensor], atol: float) -> None:
    for i, layer in enumerate(cache.layers):  # BlinkDL's RWKV-5/6 WKV state is [H, K, V] like ours
        torch.testing.assert_close(layer["att_shift"][0], blink_state[3 * i], atol=atol, rtol=0)
        torch.testing.assert_close(layer["wkv"][0], blink_state[3 * i + 1], atol=atol, rtol=0)
        torch.testing.assert_close(layer["ffn_shift"][0], blink_state[3 * i + 2], atol=atol, rtol=0)


def test_logits_and_state_match_blinkdl_over_64_tokens(pth: Path, model, version: int) -> None:
    ref = blinkdl_model(pth, version)
    assert ref.version == (6.0 if version == 6 else 5.2)
    assert isinstance(model, CLASSES[version])
    tokens = torch.randint(0, VOCAB, (64,))
    ref_logits, ref_state = ref.forward(tokens.tolist(), None, full_output=True)
    with torch.no_grad():
        out = model(tokens[None], use_cache=True)
    torch.testing.assert_close(out.logits[0], ref_logits, atol=REF_ATOL, rtol=0)
    assert ref_logits.abs().max() > 1.0
    _assert_state_equals_blinkdl(out.past_key_values, ref_state, REF_ATOL)


def test_decode_steps_and_greedy_tokens_match_blinkdl(pth: Path, model, version: int) -> None:
    ref = blinkdl_model(pth, version)
    prompt = torch.randint(0, VOCAB, (10,))
    ref_logits, ref_state = ref.forward(prompt.tolist(), None)
    ref_tokens = []
    for _ in range(12):  # BlinkDL's one-token path (att_one / ffn_one), greedy
        ref_tokens.append(int(ref_logits.argmax()))
        ref_logits, ref_state = ref.forward([ref_tokens[-1]], ref_state)
    with torch.no_grad():
        generated = model.generate(prompt[None], max_new_tokens=12, do_sample=False)
    assert generated[0, 10:].tolist() == ref_tokens
    ref_logits, ref_state = ref.forward(prompt.tolist(), None)
    with torch.no_grad():
        out = model(prompt[None], use_cache=True)
        for tok in ref_tokens[:5]:
            torch.testing.assert_close(out.logits[0, -1], ref_logits, atol=REF_ATOL, rtol=0)
            ref_logits, ref_state = ref.forward([tok], ref_state)
            out = model(torch.tensor([[tok]]), past_key_values=out.past_key_values, use_cache=True)
    _assert_state_equals_blinkdl(out.past_key_values, ref_state, REF_ATOL)


def test_pth_conversion_round_trips(pth: Path, model, version: int) -> None:
    original = torch.load(pth, weights_only=True)
    assert blinkdl_version(original) == version
    back = to_blinkdl_state_dict(model)
    assert set(back) == set(original)
    for key, value in back.items():
        assert torch.equal(value, original[key]), key


def _hf_name(name: str) -> str:
    """BlinkDL name -> the RWKV '-hf' repos' name (written out here, independently of the converter)."""
    v5 = {"time_mix_k": "time_mix_key", "time_mix_v": "time_mix_value", "time_mix_r": "time_mix_receptance",
          "time_mix_g": "time_mix_gate"}  # fmt: skip
    if name == "head.weight":
        return name
    name = "rwkv." + name.replace("emb.", "embeddings.").replace(".ln0.", ".pre_ln.")
    name = name.replace(".att.", ".attention.").replace(".ffn.", ".feed_forward.")
    head, _, leaf = name.rpartition(".")
    return f"{head}.{v5.get(leaf, leaf)}"


def test_hf_hub_layout_folder_loads(pth: Path, version: int, tmp_path: Path) -> None:
    original = torch.load(pth, weights_only=True)
    folder = tmp_path / "hf"
    folder.mkdir()
    config = {
        "architectures": [f"Rwkv{version}ForCausalLM"], "model_type": f"rwkv{version}",
        "auto_map": {"AutoConfig": f"configuration_rwkv{version}.Rwkv{version}Config"},
        "attention_hidden_size": 32, "head_size": 8, "head_size_divisor": 8, "hidden_size": 32,
        "intermediate_size": 64, "layer_norm_epsilon": 1e-05, "num_hidden_layers": N_LAYERS, "rescale_every": 6,
        "tie_word_embeddings": False, "vocab_size": VOCAB, "bos_token_id": 0, "eos_token_id": 0,
    }  # fmt: skip
    if version == 6:
        config.update(time_mix_extra_dim=6, time_decay_extra_dim=10)
    (folder / "config.json").write_text(json.dumps(config))
    save_file({_hf_name(k): v.contiguous() for k, v in original.items()}, str(folder / "model.safetensors"))
    m = nnsight_rnn.load(str(folder))
    assert isinstance(m._module, CLASSES[version]) and m.card.family == f"rwkv{version}"
    tokens = torch.randint(0, VOCAB, (1, 20))
    with torch.no_grad(), m.trace(tokens):
        logits = m.output.logits.save()
    ref_logits, _ = blinkdl_model(pth, version).forward(tokens[0].tolist(), None, full_output=True)
    torch.testing.assert_close(logits[0], ref_logits, atol=REF_ATOL, rtol=0)


def test_state_round_trip_and_the_given_cache_is_not_mutated(model, ids) -> None:
    with torch.no_grad():
        full = model(ids).logits
        prefix = model(ids[:, :6], use_cache=True)
        before = prefix.past_key_values.clone()
        suffix = model(ids[:, 6:], past_key_values=prefix.past_key_values)
    torch.testing.assert_close(suffix.logits, full[:, 6:], atol=ATOL, rtol=0)
    for a, b in zip(before.layers, prefix.past_key_values.layers, strict=True):
        assert all(torch.equal(a[k], b[k]) for k in a)


def test_left_padding_and_batched_generate_equal_rows_alone(model) -> None:
    rows = [torch.randint(1, VOCAB, (n,)) for n in (9, 4, 7)]
    ids, mask = _padded(rows)
    width = ids.shape[1]
    with torch.no_grad():
        batched = model(ids, attention_mask=mask, use_cache=True)
        generated = model.generate(ids, attention_mask=mask, max_new_tokens=6, do_sample=False, pad_token_id=0)
        for i, r in enumerate(rows):
            alone = model(r[None], use_cache=True)
            torch.testing.assert_close(batched.logits[i, width - len(r) :], alone.logits[0], atol=ATOL, rtol=0)
            for lb, la in zip(batched.past_key_values.layers, alone.past_key_values.layers, strict=True):
                for slot in lb:
                    torch.testing.assert_close(lb[slot][i], la[slot][0], atol=ATOL, rtol=0, msg=slot)
            gen_alone = model.generate(r[None], max_new_tokens=6, do_sample=False, pad_token_id=0)
            assert generated[i, width:].tolist() == gen_alone[0, len(r) :].tolist()


def test_gradient_flows_through_the_carried_state_and_parameters(model, ids) -> None:
    with torch.no_grad():
        cache = model(ids[:, :5], use_cache=True).past_key_values
    leaves = RwkvCache([{k: v.clone().requires_grad_(True) for k, v in layer.items()} for layer in cache.layers])
    model(ids[:, 5:], past_key_values=leaves, labels=ids[:, 5:]).loss.backward()
    for layer in leaves.layers:
        assert all(t.grad is not None and t.grad.abs().sum() > 0 for t in layer.values())
    decay = model.rwkv.blocks[1].attention.time_decay
    assert decay.grad is not None and decay.grad.abs().sum() > 0


def test_hook_shapes_and_decay(model, ids, version: int) -> None:
    m = nnsight_rnn.load(model)
    with torch.no_grad(), m.trace(ids):
        mixer = m.layers[1].mixer
        shapes = list().save()
        for name in ("hook_wkv_state_in", "hook_xk", "hook_g", "hook_decay", "hook_bonus", "hook_wkv_state"):
            if name == "hook_decay":
                w = mixer.hook_decay.output.save()
            shapes.append(tuple(mixer.get(name).output.shape))
        out_proj = mixer.out_proj.output.save()
        mixer_out = mixer.output.save()
    decay_shape = (2, 11, 32) if version == 6 else (2, 32)
    assert shapes == [(2, 4, 8, 8), (2, 11, 32), (2, 11, 32), decay_shape, (2, 32), (2, 11, 4, 8, 8)]
    assert torch.all((w > 0) & (w < 1))
    assert torch.equal(out_proj, mixer_out)  # the `output` projection, renamed out_proj in nnsight


def test_bonus_edit_acts_on_one_row_only(model, ids) -> None:
    m = nnsight_rnn.load(model)
    with torch.no_grad(), m.trace(ids):
        base = m.output.logits.save()
    with torch.no_grad(), m.trace(ids):
        m.layers[1].mixer.hook_bonus.output[1] = 0.0  # row 1 ignores its current token in the WKV
        edited = m.output.logits.save()
    assert torch.equal(edited[0], base[0]) and (edited[1] - base[1]).abs().max() > 1e-4
