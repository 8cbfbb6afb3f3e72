"""tuned-lens (unmodified, 0.2.0) on every card: model surgery, hidden-state convention, activation, refusals.

Tiny random models of every card (tests/families.py), fp32. Hidden states and logits are compared
exactly (the conversion only re-indexes tensors; nothing is recomputed). The zoo-model tests
(training, tuned < logit lens) are in test_tuned_lens_zoo.py.
"""

from __future__ import annotations

import logging
from typing import Any

import pytest
import torch
from torch import nn

pytest.importorskip("tuned_lens", reason="optional extra: pip install 'nnsight-rnn[tuned-lens]'")

import tuned_lens.model_surgery as ms
from tuned_lens import TunedLens
from tuned_lens.nn.lenses import LogitLens
from tuned_lens.plotting import PredictionTrajectory

import nnsight_rnn
from nnsight_rnn.carry import state_from_output
from nnsight_rnn.integrations import tuned_lens as tl_rnn
from nnsight_rnn.surgery import get_module

from ..families import FAMILIES, RECURRENT

NATIVE = ("gpt2", "gpt_neox", "llama")  # families tuned-lens 0.2.0 supports itself
# Recurrent families whose HF hidden states are [out_0 .. out_{n-1}, norm(out_{n-1})] (prepare_model re-indexes them).
RNN_CONVENTION = [f for f in RECURRENT if nnsight_rnn.get_card(f).hidden_states == "rnn"]


@pytest.fixture(autouse=True)
def enabled() -> Any:
    tl_rnn.enable()
    yield
    tl_rnn.disable()


@pytest.fixture(params=list(FAMILIES))
def family(request: pytest.FixtureRequest) -> str:
    return request.param


def _ids(batch: int = 2, length: int = 7) -> torch.Tensor:
    return torch.randint(0, 257, (batch, length))


def _capture_stream(model: nn.Module, ids: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor, Any]:
    """Layer inputs / outputs and the final norm's output, read with torch hooks during one forward."""
    card = nnsight_rnn.card_for(model)
    layers = get_module(model, card.modules["layers"])
    seen: dict[str, torch.Tensor] = {}

    def first_input(_m: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        seen.setdefault("in0", args[0] if args else kwargs["hidden_states"])

    handles = [
        layers[0].register_forward_pre_hook(first_input, with_kwargs=True),
        get_module(model, card.modules["final_norm"]).register_forward_hook(
            lambda m, a, o: seen.__setitem__("norm", o)
        ),
    ]
    for i, layer in enumerate(layers):
        handles.append(
            layer.register_forward_hook(
                lambda m, a, o, i=i: seen.__setitem__(f"out{i}", o[0] if isinstance(o, tuple) else o)
            )
        )
    try:
        out = model(ids, output_hidden_states=True)
    finally:
        for h in handles:
            h.remove()
    outs = [seen[f"out{i}"] for i in range(len(layers))]
    return [seen["in0"], *outs], seen["norm"], out


def test_the_rnn_convention_families_are_covered() -> None:
    assert {"mamba", "mamba2", "rwkv4"} <= set(RNN_CONVENTION)


# -- model surgery from cards ------------------------------------------------------------------


def test_surgery_finds_card_modules_for_every_card(family: str) -> None:
    model = FAMILIES[family]()
    tl_rnn.enable(model)
    card = nnsight_rnn.card_for(model)
    path, layers = ms.get_transformer_layers(model)
    assert layers is get_module(model, card.modules["layers"])
    assert ms.get_key_path(model, path) is layers
    assert ms.get_final_norm(model) is get_module(model, card.modules["final_norm"])
    assert ms.get_unembedding_matrix(model) is get_module(model, card.modules["unembed"])
    lens = TunedLens.from_model(model)
    assert len(lens) == model.config.num_hidden_layers == len(layers)


@pytest.mark.parametrize("family", NATIVE)
def test_models_tuned_lens_supports_get_its_own_answers(family: str) -> None:
    model = FAMILIES[family]()
    before = {n: m for n, m in model.named_modules()}
    tl_rnn.enable(model)
    assert not tl_rnn.is_prepared(model)
    assert not model._forward_hooks and not model._forward_pre_hooks
    assert {n: m for n, m in model.named_modules()} == before  # nothing swapped, nothing installed
    for name in ("get_final_norm", "get_transformer_layers", "get_unembedding_matrix"):
        ours, theirs = getattr(ms, name)(model), tl_rnn._ORIGINALS[name](model)
        assert ours == theirs if isinstance(ours, tuple) else ours is theirs
    # ... and the card agrees with tuned-lens's own surgery.
    found = tl_rnn.card_modules(model)
    assert found["layers"] is tl_rnn._ORIGINALS["get_transformer_layers"](model)[1]
    assert found["final_norm"] is tl_rnn._ORIGINALS["get_final_norm"](model)


def test_a_registered_transformer_card_is_enough() -> None:
    """A transformer tuned-lens does not know (Qwen2) becomes usable with one nnsight-rnn card."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from nnsight_rnn import cards

    model = Qwen2ForCausalLM(
        Qwen2Config(
            vocab_size=300,
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            intermediate_size=64,
            max_position_embeddings=64,
        )
    ).eval()
    with pytest.raises(NotImplementedError):
        tl_rnn._ORIGINALS["get_final_norm"](model)
    card = nnsight_rnn.register_card(
        {
            "family": "qwen2_test",
            "description": "test",
            "match": {"model_types": ["qwen2"]},
            "modules": {
                "embed": "model.embed_tokens",
                "layers": "model.layers",
                "mixer": "self_attn",
                "final_norm": "model.norm",
                "unembed": "lm_head",
            },
        }
    )
    try:
        lens = TunedLens.from_model(tl_rnn.enable(model))
        assert ms.get_final_norm(model) is model.model.norm
        traj = PredictionTrajectory.from_lens_and_model(lens, model, _ids(1, 6)[0].tolist())
        assert traj.log_probs.shape == (3, 6, 300)
    finally:
        cards._CARDS.pop(card.family)


def test_unknown_models_keep_tuned_lens_error() -> None:
    class Plain(nn.Module):
        config = None

    with pytest.raises(ValueError, match="base_model"):
        ms.get_final_norm(Plain())


# -- hidden-state convention -----------------------------------------------------------------


def test_hidden_states_follow_the_transformer_convention(family: str) -> None:
    """hidden_states == [layers[0].input, out_0, ..., out_{n-2}, final_norm(out_{n-1})] exactly, for every card."""
    model = FAMILIES[family]()
    nnsight_rnn.install(model)
    ids = _ids()
    with torch.no_grad():
        before = model(ids, output_hidden_states=True)
    tl_rnn.enable(model)
    assert tl_rnn.is_prepared(model) == (nnsight_rnn.card_for(model).hidden_states == "rnn")
    with torch.no_grad():
        stream, normed, out = _capture_stream(model, ids)
    n = model.config.num_hidden_layers
    hs = out.hidden_states
    assert len(hs) == n + 1
    assert torch.equal(hs[0], stream[0])
    for i in range(1, n):
        assert torch.equal(hs[i], stream[i]), i  # out_{i-1}
    assert torch.equal(hs[n], normed)
    assert torch.equal(out.logits, before.logits)
    if tl_rnn.is_prepared(model):  # recorded, not recomputed: the very tensors the modules returned
        assert all(a is b for a, b in zip(hs[:n], stream[:n], strict=True))
        assert hs[n] is normed
        assert torch.equal(hs[n], before.hidden_states[n])  # HF's last entry is norm(out_{n-1}) in every release


@pytest.mark.parametrize("family", RNN_CONVENTION)
def test_prepare_changes_nothing_else(family: str) -> None:
    model = FAMILIES[family]()
    nnsight_rnn.install(model)
    ids = _ids()
    with torch.no_grad():
        ref = model(ids, use_cache=True)
    hooks_before = (dict(model._forward_hooks), dict(model._forward_pre_hooks))
    tl_rnn.enable(model)
    tl_rnn.enable(model)  # idempotent: one set of hooks
    # one set of hooks: the model (2), layer 0's input, layers 0..n-2's outputs, the final norm
    assert len(model.__dict__[tl_rnn._HANDLES_ATTR]) == model.config.num_hidden_layers + 3
    with torch.no_grad():
        out = model(ids, use_cache=True)
    assert out.hidden_states is None
    assert torch.equal(out.logits, ref.logits)
    st_ref = state_from_output(model, nnsight_rnn.card_for(model), ref)
    st = state_from_output(model, nnsight_rnn.card_for(model), out)
    for layer_ref, layer in zip(st_ref.layers, st.layers, strict=True):
        assert all(torch.equal(layer_ref[k], layer[k]) for k in layer_ref)
    with pytest.raises(NotImplementedError, match="return_dict=True"):
        model(ids, output_hidden_states=True, return_dict=False)
    tl_rnn.disable(model)
    assert not tl_rnn.is_prepared(model)
    assert (dict(model._forward_hooks), dict(model._forward_pre_hooks)) == hooks_before
    with torch.no_grad():
        assert len(model(ids, output_hidden_states=True).hidden_states) == model.config.num_hidden_layers + 1


@pytest.mark.parametrize("family", RNN_CONVENTION)
def test_unprepared_recurrent_model_is_refused(family: str) -> None:
    model = FAMILIES[family]()
    with pytest.raises(tl_rnn.ModelNotPreparedError, match=r"enable\(model\)"):
        TunedLens.from_model(model)


@pytest.mark.parametrize("family", ["mamba", "rwkv4"])
def test_nnsight_traces_and_edits_still_work_on_a_prepared_model(family: str) -> None:
    hooked = nnsight_rnn.load(FAMILIES[family]())
    tl_rnn.enable(hooked._module)
    ids = _ids()
    with hooked.trace(ids):
        clean = hooked.output.logits.save()
    with hooked.trace(ids):
        hooked.layers[0].output[:] = 0
        edited = hooked.output.logits.save()
    with torch.no_grad():
        direct = hooked._module(ids).logits
    assert torch.allclose(clean, direct, atol=1e-6)
    assert (edited - clean).abs().max() > 1e-3


def test_nnsight_wrapper_gets_a_clear_error() -> None:
    hooked = nnsight_rnn.load(FAMILIES["mamba"]())
    with pytest.raises(TypeError, match=r"_module"):
        TunedLens.from_model(hooked)


# -- tuned-lens's API end to end ----------------------------------------------------------------


def test_lens_api_round_trip(family: str, tmp_path: Any) -> None:
    model = tl_rnn.enable(FAMILIES[family]())
    lens = TunedLens.from_model(model)
    with torch.no_grad():
        for translator in lens:
            translator.weight.normal_(0, 0.02)
    lens.save(tmp_path)
    loaded = TunedLens.from_model_and_pretrained(model, str(tmp_path))
    for a, b in zip(lens.parameters(), loaded.parameters(), strict=True):
        assert torch.equal(a, b)
    ids = _ids(1, 6)[0].tolist()
    traj = PredictionTrajectory.from_lens_and_model(loaded, model, ids)
    n = model.config.num_hidden_layers
    assert traj.log_probs.shape == (n + 1, 6, 300)
    with torch.no_grad():
        out = model(torch.tensor([ids]), output_hidden_states=True)
        expected = loaded(out.hidden_states[1], 1).log_softmax(-1)[0]
        assert torch.allclose(torch.from_numpy(traj.log_probs[1]), expected, atol=1e-6)
        assert torch.allclose(torch.from_numpy(traj.log_probs[-1]), out.logits.log_softmax(-1)[0], atol=1e-6)
    assert len(traj.entropy().figure(title=family).data) == 1  # tuned-lens's plotly heatmap (plotly >= 6 too)
    logit = PredictionTrajectory.from_lens_and_model(LogitLens.from_model(model), model, ids)
    # The logit lens of the embeddings: nothing from any layer, whatever the architecture.
    emb = model.get_input_embeddings()(torch.tensor([ids]))
    if family not in ("gpt2", "rwkv4", "rwkv5", "rwkv6", "rwkv7"):  # GPT-2 adds positions; RWKV pre-norms in block 0
        with torch.no_grad():
            direct = LogitLens.from_model(model)(emb, 0).log_softmax(-1)[0]
        assert torch.allclose(torch.from_numpy(logit.log_probs[0]), direct, atol=1e-6)


# -- refusing foreign lenses --------------------------------------------------------------------


@pytest.mark.parametrize("family", RECURRENT)
def test_lens_of_another_model_is_refused(family: str, tmp_path: Any) -> None:
    a, b = tl_rnn.enable(FAMILIES[family]()), tl_rnn.enable(FAMILIES[family]())  # same shapes, other weights
    TunedLens.from_model(a).save(tmp_path / "a")
    TunedLens.from_model_and_pretrained(a, str(tmp_path / "a"))  # its own model: fine
    with pytest.raises(tl_rnn.LensMismatchError, match="unembedding hash") as info:
        TunedLens.from_model_and_pretrained(b, str(tmp_path / "a"))
    assert "train one for this model" in str(info.value)
    other = tl_rnn.enable(FAMILIES["gpt2"]())
    TunedLens.from_model(other).save(tmp_path / "gpt2")
    with pytest.raises(tl_rnn.LensMismatchError, match=r"gpt2|hash"):
        TunedLens.from_model_and_pretrained(a, str(tmp_path / "gpt2"))


def test_models_tuned_lens_supports_keep_its_warning(tmp_path: Any, caplog: pytest.LogCaptureFixture) -> None:
    a, b = FAMILIES["gpt2"](), FAMILIES["gpt2"]()
    TunedLens.from_model(a).save(tmp_path)
    with caplog.at_level(logging.WARNING):
        TunedLens.from_model_and_pretrained(b, str(tmp_path))
    assert "hash does not match" in caplog.text


# -- activation ---------------------------------------------------------------------------------


def test_enable_is_idempotent_and_disable_restores() -> None:
    wrapped = {n: getattr(ms, n) for n in ("get_final_norm", "get_transformer_layers", "get_unembedding_matrix")}
    tl_rnn.enable()
    assert {n: getattr(ms, n) for n in wrapped} == wrapped
    assert tl_rnn.is_enabled()
    tl_rnn.disable()
    assert not tl_rnn.is_enabled()
    assert all(getattr(ms, n) is tl_rnn._ORIGINALS[n] for n in wrapped)
    with pytest.raises(NotImplementedError):
        ms.get_final_norm(FAMILIES["mamba"]())
    tl_rnn.enable()
    assert ms.get_final_norm(tl_rnn.enable(FAMILIES["mamba"]())) is not None


def test_cli_modules_see_the_wrappers() -> None:
    """`from tuned_lens.model_surgery import get_transformer_layers` bindings are rebound, also after import."""
    from nnsight_rnn.integrations.tuned_lens_cli import install_shims

    install_shims()
    import tuned_lens.causal.ablation as ablation
    import tuned_lens.scripts.ingredients as ing

    tl_rnn.enable()
    assert ing.get_transformer_layers is ms.get_transformer_layers
    assert ablation.get_transformer_layers is ms.get_transformer_layers
    assert getattr(ms.get_transformer_layers, tl_rnn._PATCHED_FLAG)


def test_rwkv4_hidden_states_are_unscaled() -> None:
    """Stock RWKV-4 halves the residual every `rescale_every` blocks in eval mode; tuned-lens must not see that."""
    model = FAMILIES["rwkv4"]()  # rescale_every=2, eval mode
    assert model.config.rescale_every == 2
    ids = _ids()
    tl_rnn.enable(model)
    with torch.no_grad():
        eval_hs = model(ids, output_hidden_states=True).hidden_states
        model.train()
        train_hs = model(ids, output_hidden_states=True).hidden_states
    model.eval()
    assert len(eval_hs) == 4
    for a, b in zip(eval_hs, train_hs, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    assert eval_hs[3].abs().max() > 0.1  # not vanishing
