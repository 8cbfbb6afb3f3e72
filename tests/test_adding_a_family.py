"""A new Mamba variant is a card and a test factory: nothing else in the package learns about it.

The variant here is test-only (a MambaConfig subclass with its own model_type). Everything below asks
the card and the mixer: install, the upstream contract check, state round trip, generate from a
state, state steering coordinates, the state lens source, the TransformerLens names, grow().
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM, MambaConfig, MambaForCausalLM

import nnsight_rnn
from nnsight_rnn import cards, contract, tl
from nnsight_rnn.elk.adapter import grow
from nnsight_rnn.integrations.state_lens import state_source
from nnsight_rnn.steering import state_space


class VariantConfig(MambaConfig):
    model_type = "test_mamba_variant"


class VariantMambaForCausalLM(MambaForCausalLM):  # "mamba" in the name: transformers <= 5.23 needs it (C8)
    config_class = VariantConfig


CARD = """
family = "test_mamba_variant"
description = "a test-only Mamba variant"
mixer_kind = "mamba1"
hidden_states = "rnn"
residual_writers = ["mixer.out_proj"]

[match]
model_types = ["test_mamba_variant"]

[modules]
embed = "backbone.embeddings"
layers = "backbone.layers"
mixer = "mixer"
final_norm = "backbone.norm_f"
unembed = "lm_head"

[tl]
mixer_out = ["mixer.hook_variant_out"]

[contract]
tiny_config = { vocab_size = 64, hidden_size = 16, state_size = 4, num_hidden_layers = 2, intermediate_size = 32 }
"""


def variant() -> torch.nn.Module:  # the test factory
    cfg = VariantConfig(vocab_size=300, hidden_size=32, state_size=8, num_hidden_layers=3, intermediate_size=64)
    return VariantMambaForCausalLM(cfg).eval()


@pytest.fixture
def card(tmp_path, monkeypatch: pytest.MonkeyPatch) -> Iterator[cards.Card]:
    path = tmp_path / "test_mamba_variant.toml"
    path.write_text(CARD)
    monkeypatch.setattr(contract, "_checked", {})
    # What any new transformers model type does for from_pretrained (grow() saves and reloads):
    AutoConfig.register(VariantConfig.model_type, VariantConfig, exist_ok=True)
    AutoModelForCausalLM.register(VariantConfig, VariantMambaForCausalLM, exist_ok=True)
    card = nnsight_rnn.register_card(path)
    yield card
    cards._CARDS.pop(card.family, None)


def test_a_card_and_a_factory_are_all_a_mamba_variant_needs(card: cards.Card) -> None:
    model = nnsight_rnn.load(variant())  # install + the upstream contract check on the variant's classes
    assert model.card.family == "test_mamba_variant" and contract._checked["test_mamba_variant"] == "ok"
    ids = torch.randint(0, 300, (1, 8))
    with torch.no_grad():
        state = model.run_state(ids[:, :5])
        with model.trace(ids[:, 5:], state=state):
            continued = model.output.logits.save()
        with model.trace(ids):
            whole = model.output.logits.save()
        torch.testing.assert_close(continued, whole[:, 5:], atol=1e-5, rtol=0)
        generated = model.generate(ids[:, 5:], state=state, max_new_tokens=3, do_sample=False, pad_token_id=0)
        assert torch.equal(
            generated[:, 3:], model.generate(ids, max_new_tokens=3, do_sample=False, pad_token_id=0)[:, 8:]
        )
    assert state_space(model).name == "identity"  # from the mamba1 mixer's state_format
    assert state_source(model._module).hooks == ("hook_ssm_state",)
    hooked = tl.load(variant())
    assert "blocks.1.mixer.hook_variant_out" in hooked.hook_names(include_aliases=True)  # the card's [tl] alias
    grown = grow(model)
    assert len(grown.layers) == len(model.layers) + 1
