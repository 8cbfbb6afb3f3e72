"""The sync test (TransformerLens's idea): every card is complete and every name in it resolves.

A card is data; these checks catch a card that names a module, a hook or an upstream class that is
not there, before a user's first trace does.
"""

from __future__ import annotations

import pytest
from transformers import AutoConfig

import nnsight_rnn
from nnsight_rnn.cards import all_cards, get_card
from nnsight_rnn.mixers import MIXER_KINDS, mixer_class
from nnsight_rnn.surgery import get_module, layers_of

from .families import FAMILIES


def test_every_card_has_a_test_factory() -> None:
    missing = sorted(set(all_cards()) - set(FAMILIES))
    assert not missing, f"cards without a tiny config factory in tests/families.py: {missing}"


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_the_card_resolves_on_its_model(family: str) -> None:
    card = get_card(family)
    model = FAMILIES[family]()
    assert model.config.model_type in card.model_types
    if card.is_recurrent:
        assert card.mixer_kind in MIXER_KINDS, f"{family}: mixer kind {card.mixer_kind!r} is not registered"
        mixer = mixer_class(card.mixer_kind)
        assert mixer.state_format is not None, f"{family}: {mixer.__name__} declares no state_format"
        slots = mixer.state_slots(model.config)
        assert slots and all(isinstance(shape, tuple) for shape in slots.values())
        assert card.contract_config, f"{family}: a recurrent card needs [contract] tiny_config"
        tiny = AutoConfig.for_model(card.model_types[0], **card.contract_config)
        assert all(getattr(tiny, key) == value for key, value in card.contract_config.items())
    hooked = nnsight_rnn.load(model)
    for layer in layers_of(hooked._module, card):
        for path in card.residual_writers:  # each must be a module of every block
            get_module(layer, path)
    if card.tl_bridge is not None:
        assert card.tl_bridge.architecture == type(model).__name__


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_the_cards_transformer_lens_names_resolve(family: str) -> None:
    pytest.importorskip("transformer_lens")
    from nnsight_rnn import tl

    card = get_card(family)
    hooked = tl.load(FAMILIES[family]())
    names = set(hooked.hook_names(include_aliases=True))
    for key, aliases in card.tl_aliases.items():
        for alias in aliases:
            assert f"blocks.0.{alias}" in names, (family, key, alias)
    for alias in card.aliases:  # hook aliases relative to the mixer
        assert f"blocks.0.mixer.{alias}" in names, (family, alias)
