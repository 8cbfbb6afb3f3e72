"""Loading from local folders (eager and lazy/meta), offline, with the tokenizer found locally."""

from __future__ import annotations

import pytest
import torch

import nnsight_rnn
from nnsight_rnn.mixers.mamba1 import HookableMamba1Mixer
from nnsight_rnn.tokenizer import byte_tokenizer

from .families import FAMILIES


@pytest.fixture(params=["mamba", "gpt2"])
def saved(request: pytest.FixtureRequest, tmp_path) -> tuple[str, torch.nn.Module]:
    model = FAMILIES[request.param]()
    model.save_pretrained(tmp_path)
    byte_tokenizer().save_pretrained(tmp_path)
    return str(tmp_path), model


def test_eager_folder_load(saved) -> None:
    folder, ref = saved
    model = nnsight_rnn.load(folder)
    ids = torch.randint(0, 257, (1, 7))
    with torch.no_grad(), model.trace(ids):
        logits = model.output.logits.save()
    with torch.no_grad():
        torch.testing.assert_close(logits, ref(ids).logits, atol=1e-5, rtol=0)
    assert model.tokenizer.decode(model.tokenizer("héllo")["input_ids"]) == "héllo"


def test_lazy_meta_load_then_dispatch(saved) -> None:
    folder, ref = saved
    model = nnsight_rnn.load(folder, dispatch=False)
    assert not model.dispatched
    assert next(model._module.parameters()).device.type == "meta"
    if model.card.is_recurrent:
        assert isinstance(model._module.backbone.layers[0].mixer, HookableMamba1Mixer)
        assert "layers.0.mixer.hook_ssm_state" in model.hook_points()
    with torch.no_grad(), model.trace("hello"):
        out = model.layers[0].output.save()
        logits = model.output.logits.save()
    assert model.dispatched and out.shape[:2] == (1, 5)
    with torch.no_grad():
        torch.testing.assert_close(logits, ref(torch.tensor([list(b"hello")])).logits, atol=1e-5, rtol=0)


def test_folder_without_tokenizer_gets_byte_tokenizer(tmp_path) -> None:
    FAMILIES["mamba"]().save_pretrained(tmp_path)
    model = nnsight_rnn.load(str(tmp_path))
    assert len(model.tokenizer) == 257


def test_blinkdl_pth_file_loads_directly(tmp_path) -> None:
    from nnsight_rnn.models.blinkdl import convert_blinkdl

    from .models.blinkdl import random_pth_v7

    sd = random_pth_v7(tmp_path / "rwkv7.pth", vocab=300)
    model = nnsight_rnn.load(str(tmp_path / "rwkv7.pth"))
    assert model.card.family == "rwkv7"
    ref = convert_blinkdl(sd)
    ids = torch.randint(0, 257, (1, 6))
    with torch.no_grad(), model.trace(ids):
        logits = model.output.logits.save()
    with torch.no_grad():
        torch.testing.assert_close(logits, ref(ids).logits, atol=0, rtol=0)


@pytest.mark.parametrize("family", ["rwkv4", "mamba"])
def test_a_model_wrapped_by_plain_nnsight_before_loads_correctly(family) -> None:
    """nnsight's controllers from an earlier wrapper (or a deep copy of one) must not keep running the
    stock forwards around our mixers (RWKV-4 swaps the model's and blocks' classes)."""
    import copy

    from nnsight.modeling.transformers import TransformersModel

    torch.manual_seed(0)
    stock = FAMILIES[family]().eval()
    ids = torch.randint(0, 257, (2, 7))
    expected = nnsight_rnn.load(copy.deepcopy(stock))._module(input_ids=ids).logits

    plain = TransformersModel(stock, tokenizer=byte_tokenizer(), task="text-generation")
    with torch.no_grad(), plain.trace(ids):
        plain.output.save()
    hooked = nnsight_rnn.load(copy.deepcopy(stock))  # the copy carries the plain wrapper's controllers
    with torch.no_grad():
        torch.testing.assert_close(hooked._module(input_ids=ids).logits, expected, atol=1e-6, rtol=1e-6)
        with hooked.trace(ids):
            resid = hooked.layers[0].output.save()
    assert resid.shape == (2, 7, stock.config.hidden_size)
