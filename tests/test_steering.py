"""CAA steering on the residual stream and on the carried state (nnsight_rnn.steering).

Effect tests run on the zoo's tiny trained models (built on first use, then cached) with the zoo's
disposition task as CAA items: behaviour = choosing the kind act, prompts tagged ``[?]`` so the
unsteered model sits near 50 / 50. Mechanics (save / load / refusal, state coordinates, zero
vectors, agreement of the two scoring paths) run on tiny random models.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import torch

import nnsight_rnn
from nnsight_rnn import steering as S
from nnsight_rnn.artifacts import ArtifactMismatchError

from .families import gpt2, mamba, mamba2, rwkv4

MULTIPLIERS = (-2.0, -1.0, -0.5, 0.0, 0.5, 1.0, 2.0)  # three on each side of 0
# llama-tiny is the transformer baseline: zoo/gpt2-tiny does not learn the disposition task in its budget
# (docs/zoo.md), so there is nothing to steer on it.
ZOO = {
    "llama": "zoo/llama-tiny",
    "mamba": "zoo/mamba-tiny",
    "mamba2": "zoo/mamba2-tiny",
    "rwkv4": "zoo/rwkv4-tiny",
    "rwkv7": "zoo/rwkv7-tiny",
}
RANDOM = {"mamba": mamba, "mamba2": mamba2, "rwkv4": rwkv4, "gpt2": gpt2}
_cache: dict[str, object] = {}


def zoo_model(family: str):
    if family not in _cache:
        _cache[family] = nnsight_rnn.load(ZOO[family])
    return _cache[family]


def random_model(family: str):
    return nnsight_rnn.load(RANDOM[family]())


def data(model, n_train: int = 64, n_test: int = 48) -> tuple[S.EncodedItems, S.EncodedItems]:
    train = S.encode_items(model.tokenizer, S.disposition_dataset("train", n_train))
    test = S.encode_items(model.tokenizer, S.disposition_dataset("test", n_test))
    return train, test


# --- data ----------------------------------------------------------------------------------------


def test_items_load_save_hash_and_errors(tmp_path):
    items = S.disposition_dataset("train", 8)
    path = tmp_path / "items.json"
    S.save_items(items, str(path))
    assert S.load_items(str(path)) == items
    reordered = [dict(reversed(list(item.items()))) for item in items]
    assert S.dataset_sha256(reordered) == S.dataset_sha256(items)
    assert S.dataset_sha256(items[:-1]) != S.dataset_sha256(items)
    assert S.disposition_dataset("train", 8) == items  # deterministic
    test_questions = {i["question"] for i in S.disposition_dataset("test", 64)}
    assert not test_questions & {i["question"] for i in S.disposition_dataset("train", 64)}
    # balanced as CAA sets are: the matching letter alternates, so it cancels in a mean difference
    letters = [i["answer_matching_behavior"] for i in S.disposition_dataset("train", 9)]
    assert letters == [" (A)", " (B)"] * 4 + [" (A)"]

    path.write_text(json.dumps([{"question": "q", "answer_matching_behavior": "(A)"}]))
    with pytest.raises(S.SteeringDataError, match=r"lacks \['answer_not_matching_behavior'\]"):
        S.load_items(str(path))
    path.write_text("{not json")
    with pytest.raises(S.SteeringDataError, match="not valid JSON"):
        S.load_items(str(path))
    path.write_text("[]")
    with pytest.raises(S.SteeringDataError, match="non-empty JSON list"):
        S.load_items(str(path))
    bad = [{"question": "q", "answer_matching_behavior": "(1)", "answer_not_matching_behavior": "(B)"}]
    with pytest.raises(S.SteeringDataError, match="cannot find the answer letter"):
        S.validate_items(bad)


def test_split_answer_and_encoding():
    assert S.split_answer(" (A)") == (" (", "A")
    assert S.split_answer("(B)") == ("(", "B")
    assert S.split_answer("(A) Yes") == ("(", "A")
    assert S.split_answer(" Answer: (B)") == (" Answer: (", "B")
    assert S.split_answer("A") == ("", "A")
    model = random_model("gpt2")
    item = {"question": "[?] a dog is lost. (A) help (B) kick. Answer:", "answer_matching_behavior": " (A)",
            "answer_not_matching_behavior": " (B)"}  # fmt: skip
    enc = S.encode_items(model.tokenizer, [item])
    text = model.tokenizer.decode(enc.prompts[0] + enc.prefixes[0])
    assert text == item["question"] + " ("
    assert model.tokenizer.decode([enc.matching[0]]) == "A" and model.tokenizer.decode([enc.other[0]]) == "B"
    with pytest.raises(S.SteeringDataError, match="different prefixes"):
        S.encode_items(model.tokenizer, [{**item, "answer_not_matching_behavior": "(B)"}])
    with pytest.raises(S.SteeringDataError, match="no prefix before its letter"):
        S.encode_items(
            model.tokenizer, [{**item, "answer_matching_behavior": "A", "answer_not_matching_behavior": "B"}]
        )
    with pytest.raises(S.SteeringDataError, match="both answers have the letter"):
        S.encode_items(model.tokenizer, [{**item, "answer_not_matching_behavior": " (A)"}])
    with pytest.raises(S.SteeringDataError, match="must contain"):
        S.encode_items(model.tokenizer, [item], template="no placeholder")


# --- mechanics on random models -----------------------------------------------------------------


@pytest.mark.parametrize("family", ["mamba", "mamba2", "rwkv4"])
def test_zero_state_vector_leaves_logits_and_generation_identical(family):
    model = random_model(family)
    train, test = data(model, 8, 6)
    vectors = S.state_vectors(model, train)
    zero = S.Steer(vectors.zeros_like(), 1, 1.0)
    m0, o0 = S.letter_logits(model, test)  # one pass over prompt + prefix
    mz, oz = S.letter_logits(model, test, zero)  # prompt -> state (+0) -> prefix
    torch.testing.assert_close(mz, m0, atol=1e-5, rtol=0)  # the two paths agree (state continuation is exact)
    torch.testing.assert_close(oz, o0, atol=1e-5, rtol=0)
    # A zero multiplier is also a no-op, bitwise, on the state itself.
    state = model.run_state(torch.tensor([test.prompts[0]]))
    same = S.steer_state(model, state, S.Steer(vectors, 1, 0.0), zero)
    for a, b in zip(state.layers, same.layers, strict=True):
        for k in a:
            assert torch.equal(a[k], b[k]), k
    # Generation from the (zero-)steered state continues exactly as plain greedy generate.
    ids = torch.tensor([test.prompts[0]])
    with torch.no_grad(), model.generate(ids, max_new_tokens=8, min_new_tokens=8, do_sample=False,
                                         pad_token_id=test.pad_id) as tracer:  # fmt: skip
        plain = tracer.result.save()
    assert S.generate(model, test.prompts[0], zero, max_new_tokens=8) == plain[0, ids.shape[1] :].tolist()
    # ... and a real state steer changes it.
    strong = S.Steer(vectors, 1, 50.0 / max(vectors.norms()[1], 1e-6))
    assert (S.score(model, test, strong) - torch.sigmoid(m0 - o0)).abs().max() > 1e-4


@pytest.mark.parametrize("family", ["gpt2", "mamba", "rwkv4"])
def test_residual_steer_paths_agree_and_zero_is_identity(family):
    model = random_model(family)
    train, test = data(model, 8, 6)
    vectors = S.residual_vectors(model, train)
    assert set(vectors.layers) == set(range(len(model.layers)))
    assert vectors.at(0).shape == (model._module.config.hidden_size,)
    base = S.score(model, test)
    torch.testing.assert_close(S.score(model, test, S.Steer(vectors.zeros_like(), 1, 3.0)), base, atol=0, rtol=0)
    steer = S.Steer(vectors, 1, 4.0 / max(vectors.norms()[1], 1e-6))
    moved = S.score(model, test, steer)
    assert (moved - base).abs().max() > 1e-4
    if model.card.is_recurrent:  # residual steer on the prefix through the state path == one pass
        zero_state = S.Steer(S.state_vectors(model, train).zeros_like(), 0, 1.0)
        torch.testing.assert_close(S.score(model, test, steer, zero_state), moved, atol=1e-5, rtol=0)
    # Generation: a zero residual steer equals plain greedy generation; a strong one changes it.
    ids = torch.tensor([test.prompts[0]])
    with torch.no_grad(), model.generate(ids, max_new_tokens=6, min_new_tokens=6, do_sample=False,
                                         pad_token_id=test.pad_id) as tracer:  # fmt: skip
        plain = tracer.result.save()
    zero = S.Steer(vectors.zeros_like(), 1, 1.0)
    assert S.generate(model, test.prompts[0], zero, max_new_tokens=6) == plain[0, ids.shape[1] :].tolist()


def test_steering_only_after_the_prompt():
    """Steering edits the positions after the prompt: the first generated token (read at the prompt's
    last position) never changes, whatever the vector."""
    model = random_model("mamba")
    train, test = data(model, 8, 4)
    for vectors in (S.residual_vectors(model, train), S.state_vectors(model, train)):
        big = S.Steer(vectors, 1, 100.0 / max(vectors.norms()[1], 1e-6))
        plain = S.generate(model, test.prompts[0], max_new_tokens=4)
        steered = S.generate(model, test.prompts[0], big, max_new_tokens=4)
        assert steered[0] == plain[0]


def test_rwkv4_state_coordinates():
    """RWKV-4's WKV state is averaged in linear coordinates (num * e^max, den * e^max)."""
    model = random_model("rwkv4")
    space = S.state_space(model)
    assert space.name == "rwkv4_linear_wkv"
    a = model.run_state(torch.randint(0, 257, (1, 7)))
    b = model.run_state(torch.randint(0, 257, (1, 9)))
    la, lb = space.to_linear(a.layers[1]), space.to_linear(b.layers[1])
    assert set(la) == {"att_shift", "ffn_shift", "num", "den"}
    delta = {k: lb[k] - la[k] for k in la}
    moved = space.to_linear(space.add(a.layers[1], delta, 1.0))  # a + (b - a) == b in linear coordinates
    for k in la:
        torch.testing.assert_close(moved[k], lb[k], atol=1e-5, rtol=1e-5)
    assert torch.equal(space.add(a.layers[1], delta, 0.0)["max"], a.layers[1]["max"])


def test_state_steering_needs_a_recurrent_model():
    model = random_model("gpt2")
    train, _ = data(model, 4, 2)
    with pytest.raises(ValueError, match="carry no recurrent state"):
        S.state_vectors(model, train)
    vectors = S.residual_vectors(model, train)
    with pytest.raises(IndexError, match="out of range"):
        S.score(model, train, S.Steer(vectors, 7, 1.0))


def test_vectors_save_load_and_refusal(tmp_path):
    model = random_model("mamba")
    train, _ = data(model, 8, 2)
    resid = S.residual_vectors(model, train, layers=[0, 2])
    state = S.state_vectors(model, train)
    resid.save(str(tmp_path / "resid"), model)
    state.save(str(tmp_path / "state"), model)

    loaded = S.SteeringVectors.load(str(tmp_path / "resid"), model)
    assert loaded.kind == "residual" and loaded.layers == [0, 2]
    for i in (0, 2):
        assert torch.equal(loaded.at(i), resid.at(i))
    meta = json.loads((tmp_path / "resid" / "artifact.json").read_text())
    assert meta["meta"]["dataset_sha256"] == S.dataset_sha256(train.items)
    assert meta["meta"]["card"] == "mamba" and meta["meta"]["hook"] == "layers.{layer}.output"
    assert meta["meta"]["layers"] == [0, 2] and meta["model"]["architecture"]["family"] == "mamba"

    loaded_state = S.SteeringVectors.load(str(tmp_path / "state"), model)
    assert loaded_state.kind == "state" and loaded_state.meta["state_space"] == "identity"
    for i in state.layers:
        assert loaded_state.at(i).keys() == {"conv", "ssm"}
        for k, v in state.at(i).items():
            assert torch.equal(loaded_state.at(i)[k], v)
    torch.testing.assert_close(
        S.score(model, train, S.Steer(loaded_state, 1, 2.0)),
        S.score(model, train, S.Steer(state, 1, 2.0)),
        atol=0,
        rtol=0,
    )

    with pytest.raises(ArtifactMismatchError, match="different architecture"):
        S.SteeringVectors.load(str(tmp_path / "resid"), random_model("rwkv4"))
    other = random_model("mamba")  # same architecture, other weights
    with pytest.raises(ArtifactMismatchError, match="allow_other_weights=True"):
        S.SteeringVectors.load(str(tmp_path / "resid"), other)
    assert S.SteeringVectors.load(str(tmp_path / "resid"), other, allow_other_weights=True).layers == [0, 2]
    from nnsight_rnn.state import load_state

    with pytest.raises(ArtifactMismatchError, match="holds a 'steering_vectors'"):
        load_state(str(tmp_path / "state"), model)


# --- effects on the zoo's trained models --------------------------------------------------------

# Measured effects (p(matching) at +2 minus at -2, best layer, and the paired t statistic of the
# per-item shift) are printed by these tests (pytest -s) and recorded in docs/recipes/steering.md.


# Where the zoo's tiny models miss the bar (issue 7, blocked): strict, so that a rebuilt zoo that meets it fails
# here and the docs get updated. Why they miss it: docs/recipes/steering.md ("Results on the zoo").
NOT_STEERABLE = pytest.mark.xfail(
    strict=True,
    reason="the tiny zoo model does not store the disposition it shows in an answer (follow-on 45-55 %), so the "
    "letter contrast is no steerable direction in it; measured curves in docs/recipes/steering.md",
)


def _params(families: tuple[str, ...], not_steerable: set[str]) -> list[Any]:
    return [pytest.param(f, marks=NOT_STEERABLE) if f in not_steerable else f for f in families]


@pytest.mark.slow  # trained zoo models; see the module docstring
@pytest.mark.parametrize(
    "family", _params(("llama", "mamba", "mamba2", "rwkv4", "rwkv7"), {"mamba2", "rwkv4", "rwkv7"})
)
def test_residual_caa_monotonic_at_best_layer(family):
    model = zoo_model(family)
    train, test = data(model)
    vectors = S.residual_vectors(model, train)
    rows = S.sweep(model, test, vectors, vectors.layers, MULTIPLIERS, progress=False)
    best = S.best_layer(rows)
    curve = S.curve(rows, best)
    t = S.effect_t(rows, best)
    print(f"\n{family} residual CAA, layer {best}: " + " ".join(f"{m:+g}:{p:.3f}" for m, p in curve) + f" t={t:.1f}")
    assert S.is_monotonic(rows, best), curve  # strictly, three multipliers on each side of 0
    assert S.effect(rows, best) > 0 and t > 3, (curve, t)  # a reliable (paired) shift in the right direction


@pytest.mark.slow  # trained zoo models; see the module docstring
@pytest.mark.parametrize(
    "family", _params(("mamba", "mamba2", "rwkv4", "rwkv7"), {"mamba", "mamba2", "rwkv4", "rwkv7"})
)  # rwkv4: +0.1 points (t 15.7) on the zoo built before the weights shipped; flat on the shipped one
def test_state_steering_shifts_p_matching(family):
    model = zoo_model(family)
    train, test = data(model)
    vectors = S.state_vectors(model, train)
    rows = S.sweep(model, test, vectors, vectors.layers, (-2.0, 0.0, 2.0), progress=False)
    best = S.best_layer(rows)
    (_, low), (_, mid), (_, high) = S.curve(rows, best)
    t = S.effect_t(rows, best)
    print(f"\n{family} state steering, layer {best}: -2:{low:.3f} 0:{mid:.3f} +2:{high:.3f} t={t:.1f}")
    assert high > mid > low  # sign: adding the (matching - other) state raises p(matching)
    assert t > 3, t  # the per-item shift is reliable (a vector unrelated to the behaviour gives |t| ~ 1)


def test_contrast_vectors_generic_and_caa_special_case():
    """CAA is contrast_vectors with prompt + prefix + letter rows; identical sets give zero vectors."""
    model = random_model("rwkv4")
    train, _ = data(model, 6, 2)
    rows = [p + q + [m] for p, q, m in zip(train.prompts, train.prefixes, train.matching, strict=True)]
    others = [p + q + [o] for p, q, o in zip(train.prompts, train.prefixes, train.other, strict=True)]
    for kind, caa in (("residual", S.residual_vectors(model, train)), ("state", S.state_vectors(model, train))):
        generic = S.contrast_vectors(model, rows, others, kind, batch_size=4)  # other chunking, same means
        for i in caa.layers:
            a, b = caa.at(i), generic.at(i)
            for k in a if kind == "state" else [None]:
                torch.testing.assert_close(a[k] if k else a, b[k] if k else b, atol=1e-5, rtol=1e-5)
        same = S.contrast_vectors(model, rows, rows, kind)
        assert all(v == 0 for v in same.norms().values())
    # A prompt-level contrast (the demo's [kind] vs [cruel] tags) of unequal sizes.
    kind = [model.tokenizer(f"[kind] q{i}")["input_ids"] for i in range(3)]
    cruel = [model.tokenizer(f"[cruel] question {i}")["input_ids"] for i in range(5)]
    vec = S.contrast_vectors(model, kind, cruel, "state", layers=[1])
    assert vec.layers == [1] and vec.meta["n_positive"] == 3 and vec.meta["n_negative"] == 5
    with pytest.raises(ValueError, match="kind must be"):
        S.contrast_vectors(model, kind, cruel, "mlp")


@pytest.mark.parametrize("family", ["gpt2", "mamba", "rwkv4"])
def test_residual_steer_sign_along_the_unembedding(family):
    """A known direction: at the last layer, ``unembed[A] - unembed[B]`` with matching = A must raise
    p(matching) monotonically with the multiplier (checks where and with which sign steers apply)."""
    model = random_model(family)
    items = [{**item, "answer_matching_behavior": " (A)", "answer_not_matching_behavior": " (B)"}
             for item in S.disposition_dataset("test", 6)]  # fmt: skip
    enc = S.encode_items(model.tokenizer, items)
    weight = model.unembed._module.weight.detach()
    last = len(model.layers) - 1
    direction = weight[enc.matching[0]] - weight[enc.other[0]]
    vectors = S.SteeringVectors("residual", {last: direction / direction.norm()})
    rows = S.sweep(model, enc, vectors, [last], (-8.0, -4.0, 0.0, 4.0, 8.0), progress=False)
    assert S.is_monotonic(rows, last), S.curve(rows, last)
    assert S.effect(rows, last) > 0.05


def _module_hooks(model) -> dict[str, tuple[Any, ...]]:
    """Per submodule: hook counts and any forward patched onto the instance."""
    kinds = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")
    return {
        name: (*(len(getattr(m, k)) for k in kinds), m.__dict__.get("forward"))
        for name, m in model._module.named_modules()
    }


@pytest.mark.parametrize("family", ["mamba", "rwkv4"])
def test_steering_leaves_no_global_state(family):
    """Vectors, scoring and steered generation restore grad mode and leave no hooks behind;
    the model still trains afterwards."""
    model = random_model(family)
    grad, inference, hooks = torch.is_grad_enabled(), torch.is_inference_mode_enabled(), _module_hooks(model)
    train, test = data(model, n_train=4, n_test=2)
    steers = [S.Steer(S.residual_vectors(model, train), 1, 1.0), S.Steer(S.state_vectors(model, train), 1, 1.0)]
    S.letter_logits(model, test, *steers)
    S.generate(model, test.prompts[0], *steers, max_new_tokens=2)
    assert (torch.is_grad_enabled(), torch.is_inference_mode_enabled()) == (grad, inference)
    assert _module_hooks(model) == hooks
    model._module(torch.tensor([[1, 2, 3]])).logits.sum().backward()
    assert all(p.grad is not None for p in model._module.parameters() if p.requires_grad)


def test_effect_statistics():
    rows = [
        {"layer": 0, "multiplier": -1.0, "p_matching": 0.4, "p_items": [0.40, 0.38, 0.42]},
        {"layer": 0, "multiplier": 0.0, "p_matching": 0.5, "p_items": [0.50, 0.50, 0.50]},
        {"layer": 0, "multiplier": 1.0, "p_matching": 0.6, "p_items": [0.61, 0.60, 0.59]},
        {"layer": 1, "multiplier": -1.0, "p_matching": 0.5, "p_items": [0.3, 0.7, 0.5]},
        {"layer": 1, "multiplier": 0.0, "p_matching": 0.5, "p_items": [0.5, 0.5, 0.5]},
        {"layer": 1, "multiplier": 1.0, "p_matching": 0.5, "p_items": [0.7, 0.3, 0.5]},
    ]
    assert S.curve(rows, 0) == [(-1.0, 0.4), (0.0, 0.5), (1.0, 0.6)]
    assert S.effect(rows, 0) == pytest.approx(0.2) and S.best_layer(rows) == 0
    assert S.is_monotonic(rows, 0) and not S.is_monotonic(rows, 1)
    assert S.effect_t(rows, 0) > 10  # every item moves up by about 0.2
    assert S.effect_t(rows, 1) == pytest.approx(0.0, abs=1e-9)  # items move in opposite directions


def test_a_residual_vector_of_the_wrong_width_names_the_problem():
    model = random_model("mamba")
    enc, _ = data(model, 4, 2)
    wrong = S.SteeringVectors("residual", {0: torch.ones(7)})
    with pytest.raises(
        ValueError, match=r"layer 0 has shape \(7,\); this model's residual stream is \[batch, pos, 32\]"
    ):
        S.score(model, enc, S.Steer(wrong, 0, 1.0))
