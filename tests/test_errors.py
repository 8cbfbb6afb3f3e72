"""Bad input gets an error that names the problem and the fix."""

from __future__ import annotations

import pytest
import torch
from transformers import BertConfig, BertForMaskedLM

import nnsight_rnn
from nnsight_rnn import RecurrentState, StateShapeError, UnknownHookError, UnsupportedArchitectureError

from .families import mamba


def test_unknown_architecture_lists_supported_families():
    model = BertForMaskedLM(
        BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32)
    )
    with pytest.raises(UnsupportedArchitectureError) as err:
        nnsight_rnn.load(model)
    message = str(err.value)
    assert "'bert'" in message and "mamba" in message and "gpt2" in message
    assert "register_card" in message


def test_unknown_card_name_suggests():
    with pytest.raises(UnsupportedArchitectureError, match=r"Did you mean.*mamba"):
        nnsight_rnn.get_card("mambo")


def test_card_with_wrong_module_path_names_entry():
    card = {
        "family": "broken", "description": "x", "mixer_kind": "mamba1", "match": {"model_types": ["mamba"]},
        "modules": {"embed": "backbone.embeddings", "layers": "backbone.blocks", "mixer": "mixer",
                    "final_norm": "backbone.norm_f", "unembed": "lm_head"},
    }  # fmt: skip
    with pytest.raises(AttributeError, match=r"backbone.blocks"):
        nnsight_rnn.install(mamba(), nnsight_rnn.Card.from_dict(card))


def test_card_clash_is_refused():
    card = nnsight_rnn.get_card("mamba")
    clone = {"family": "mamba_copy", "description": "x", "match": {"model_types": list(card.model_types)},
             "modules": dict(card.modules)}  # fmt: skip
    with pytest.raises(ValueError, match="already matched by 'mamba'"):
        nnsight_rnn.register_card(clone)


def test_unknown_hook_name_suggests_nearest():
    model = nnsight_rnn.load(mamba())
    with pytest.raises(UnknownHookError) as err:
        model.hook("layers.1.mixer.hook_ssm_stat")
    assert "layers.1.mixer.hook_ssm_state" in str(err.value)
    # Aliases from the card resolve.
    assert model.hook("layers.1.mixer.hook_h") is model.layers[1].mixer.hook_ssm_state


def _state(model: nnsight_rnn.HookedLanguageModel) -> RecurrentState:
    return model.run_state(torch.randint(0, 257, (1, 4)))


def test_state_of_wrong_shape():
    model = nnsight_rnn.load(mamba())
    state = _state(model)
    state.layers[1]["ssm"] = state.layers[1]["ssm"][:, :10]
    with pytest.raises(StateShapeError, match=r"layer 1 slot 'ssm' has shape \(1, 10, 8\); expected \(1, 64, 8\)"):
        with model.trace(torch.randint(0, 257, (1, 3)), state=state):
            model.output.save()


def test_state_of_wrong_batch_suggests_expand():
    model = nnsight_rnn.load(mamba())
    state = _state(model)
    with pytest.raises(StateShapeError, match=r"state.expand"):
        with model.trace(torch.randint(0, 257, (3, 3)), state=state):
            model.output.save()
    with model.trace(torch.randint(0, 257, (3, 3)), state=state.expand(3)):
        out = model.output.logits.save()
    assert out.shape[0] == 3


def test_state_of_wrong_dtype_and_layers():
    model = nnsight_rnn.load(mamba())
    state = _state(model)
    bad = state.clone()
    bad.layers[0]["conv"] = bad.layers[0]["conv"].long()
    with pytest.raises(StateShapeError, match=r"dtype torch.int64"):
        model.run_state(torch.randint(0, 257, (1, 3)), state=bad)
    short = RecurrentState(state.family, state.layers[:2])
    with pytest.raises(StateShapeError, match="2 layers; the model has 3"):
        model.run_state(torch.randint(0, 257, (1, 3)), state=short)
    other = RecurrentState("rwkv4", state.layers)
    with pytest.raises(StateShapeError, match=r"made for a 'rwkv4' model, not 'mamba'.*model\.run_state\(prefix\)"):
        model.run_state(torch.randint(0, 257, (1, 3)), state=other)


def test_state_on_transformer_is_refused():
    from .families import gpt2

    model = nnsight_rnn.load(gpt2())
    state = RecurrentState("gpt2", [{}] * 3)
    with pytest.raises((StateShapeError, ValueError), match=r"no carried state|slots"):
        model.run_state(torch.randint(0, 257, (1, 3)), state=state)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16])
def test_state_of_another_float_dtype_is_an_error_not_a_cast(dtype: torch.dtype) -> None:
    model = nnsight_rnn.load(mamba())
    bad = _state(model)
    bad.layers[2]["ssm"] = bad.layers[2]["ssm"].to(dtype)
    with pytest.raises(
        StateShapeError, match=rf"layer 2 slot 'ssm' has dtype {dtype}; .*use state.to\(torch.float32\)"
    ):
        model.run_state(torch.randint(0, 257, (1, 3)), state=bad)


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_state_with_nan_or_inf_is_reported(value: float) -> None:
    model = nnsight_rnn.load(mamba())
    bad = _state(model)
    bad.layers[1]["conv"][0, 3, 0] = value
    with pytest.raises(StateShapeError, match="layer 1 slot 'conv' holds NaN or inf"):
        with model.trace(torch.randint(0, 257, (1, 3)), state=bad):
            model.output.save()


def test_state_on_the_meta_device_is_an_error() -> None:
    model = nnsight_rnn.load(mamba())
    bad = _state(model).to("meta")
    with pytest.raises(StateShapeError, match=r"is on meta; the model is on cpu: use state.to\('cpu'\)"):
        model.run_state(torch.randint(0, 257, (1, 3)), state=bad)


def test_an_edit_of_the_wrong_shape_names_the_hook_and_the_shape():
    model = nnsight_rnn.load(mamba())
    with pytest.raises(
        ValueError, match=r"hook 'layers\.1\.mixer\.hook_ssm_write' returned shape \(3,\); expected \(1, 5,"
    ):
        with model.trace(torch.randint(0, 257, (1, 5))):
            model.layers[1].mixer.hook_ssm_write.output = torch.zeros(3)
            model.output.save()


def test_an_edit_that_brings_nan_is_reported():
    model = nnsight_rnn.load(mamba())
    with pytest.raises(ValueError, match=r"edit of hook 'layers\.1\.mixer\.hook_x' put NaN or inf"):
        with model.trace(torch.randint(0, 257, (1, 5))):
            model.layers[1].mixer.hook_x.output = model.layers[1].mixer.hook_x.output * float("nan")
            model.output.save()
    with model.trace(torch.randint(0, 257, (1, 5))):  # edits of the right shape still work
        model.layers[1].mixer.hook_x.output = model.layers[1].mixer.hook_x.output * 0
        logits = model.output.logits.save()
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize("family", ["mamba", "rwkv4", "rwkv7", "gpt2"])
def test_empty_prompts_and_ids_outside_the_vocabulary_are_named(family: str) -> None:
    from .families import FAMILIES

    model = nnsight_rnn.load(FAMILIES[family]())
    vocab = model.config.vocab_size
    with pytest.raises(
        ValueError, match=rf"token id {vocab + 5} is outside this model's vocabulary \(ids 0\.\.{vocab - 1}\)"
    ):
        with model.trace(torch.tensor([[1, vocab + 5, 2]])):
            model.output.save()
    with pytest.raises(ValueError, match=r"the input has no tokens .*pass a non-empty prompt"):
        with model.trace(torch.zeros(1, 0, dtype=torch.long)):
            model.output.save()


def test_a_misspelled_hook_attribute_suggests_the_nearest_names():
    model = nnsight_rnn.load(mamba())
    with pytest.raises(AttributeError, match=r"has no attribute 'hook_ssm_stat'\. Nearest: \['hook_ssm_state'"):
        with model.trace(torch.randint(0, 257, (1, 3))):
            model.layers[1].mixer.hook_ssm_stat.output.save()
    with pytest.raises(AttributeError, match=r"Nearest: \['mixer'\]"):
        model.layers[0].mixr  # noqa: B018


def test_a_card_for_another_model_type_is_refused_with_the_right_card() -> None:
    from .families import rwkv4

    with pytest.raises(
        UnsupportedArchitectureError, match=r"card 'rwkv4' is for model types \['rwkv'\].*pass card='mamba'"
    ):
        nnsight_rnn.load(mamba(), card="rwkv4")
    with pytest.raises(UnsupportedArchitectureError, match=r"pass card='rwkv4', or leave card= out"):
        nnsight_rnn.load(rwkv4(), card="mamba")
    assert nnsight_rnn.load(mamba(), card="mamba").card.family == "mamba"  # the right card is accepted


def test_positions_set_on_a_hook_envoy_select_positions_and_are_refused_inside_a_trace() -> None:
    """``envoy.positions = [...]`` was a silent no-op (it set an attribute on the envoy only)."""
    model = nnsight_rnn.load(mamba())
    ids = torch.randint(0, 257, (2, 8))
    hook = model.layers[0].mixer.hook_ssm_state
    hook.positions = [1, -1]
    try:
        assert hook._module.positions == [1, -1]
        with model.trace(ids):
            picked = hook.output.save()
        assert picked.shape[1] == 2
        hook.positions = [99]
        with pytest.raises(
            IndexError, match=r"position 99 is out of range .* this call has 8 positions \(valid: -8\.\.7\)"
        ):
            with model.trace(ids):
                hook.output.save()
        hook.positions = None
        with pytest.raises(ValueError, match=r"cannot change inside a trace.*set them before the trace"):
            with model.trace(ids):
                model.layers[0].mixer.hook_ssm_state.positions = [1]
                model.layers[0].mixer.hook_ssm_state.output.save()
    finally:
        hook._module.positions = None
    assert hook._module.positions is None


def test_layers_and_positions_out_of_range_name_the_valid_range() -> None:
    from nnsight_rnn import tl
    from nnsight_rnn.capture import capture_states

    model = nnsight_rnn.load(mamba())
    ids = torch.randint(0, 257, (1, 8))
    with pytest.raises(IndexError, match="layer 5 is out of range: the model has 3 layers"):
        capture_states(model, ids, layers=[5])
    with pytest.raises(IndexError, match=r"position 50 is out of range .*\(valid: -8\.\.7\)"):
        capture_states(model, ids, layers=[0], positions=[50])
    with pytest.raises(AttributeError, match=r"has no attribute '7'\. Its submodules: \['0', '1', '2'\]"):
        model.layers[7]
    hooked = tl.load(mamba())
    with pytest.raises(IndexError, match=r"stop_at_layer=9 is out of range for 3 layers \(valid: -4\.\.3\)"):
        hooked(ids, stop_at_layer=9)
    with pytest.raises(ValueError, match="return_type must be 'logits', 'loss', 'both' or None; got 'logit'"):
        hooked(ids, return_type="logit")


def test_state_artifacts_on_another_model_or_missing_are_named(tmp_path) -> None:
    from nnsight_rnn.errors import ArtifactMismatchError
    from nnsight_rnn.state import load_state, save_state

    from .families import rwkv4

    model = nnsight_rnn.load(mamba())
    save_state(_state(model), str(tmp_path / "s"), model)
    with pytest.raises(ArtifactMismatchError, match=r"different architecture.*'family': \('mamba', 'rwkv4'\)"):
        load_state(str(tmp_path / "s"), nnsight_rnn.load(rwkv4()))
    with pytest.raises(ArtifactMismatchError, match="other weights; pass allow_other_weights=True"):
        load_state(str(tmp_path / "s"), nnsight_rnn.load(mamba()))
    with pytest.raises(FileNotFoundError, match=r"is not an nnsight-rnn artifact: artifact\.json is missing"):
        load_state(str(tmp_path / "nothing"), model)


def test_a_card_with_an_unknown_mixer_kind_lists_the_registered_kinds() -> None:
    card = dict(nnsight_rnn.get_card("mamba").__dict__)
    data = {"family": "mamba3_test", "description": "x", "mixer_kind": "mamba3", "match": {"model_types": ["mamba"]},
            "modules": card["modules"]}  # fmt: skip
    with pytest.raises(
        ValueError, match=r"unknown mixer kind 'mamba3' .*registered kinds: \[.*'mamba1'.*register_mixer_kind"
    ):
        nnsight_rnn.install(mamba(), nnsight_rnn.Card.from_dict(data))
