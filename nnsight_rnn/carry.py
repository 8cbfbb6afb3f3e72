"""Carrying a :class:`~nnsight_rnn.state.RecurrentState` into and out of an HF model run.

Each hookable mixer declares what its state means (``HookableMixer.state_format``, a
:class:`~nnsight_rnn.mixers.base.StateFormat`); this module asks it for the card's mixer kind.
No per-family table lives here.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from .cards import Card
from .mixers import mixer_class
from .mixers.base import StateFormat
from .state import RecurrentState


def state_format(card: Card) -> StateFormat:
    """The :class:`StateFormat` of ``card``'s mixer kind; a clear error for a family without carried state."""
    fmt = mixer_class(card.mixer_kind).state_format if card.is_recurrent else None
    if fmt is None:
        raise ValueError(
            f"{card.family!r} models have no carried state (mixer kind {card.mixer_kind!r}); "
            "state= and state vectors need a recurrent model (Mamba, Mamba-2, RWKV)"
        )
    return fmt


def state_to_forward_kwargs(model: nn.Module, card: Card, state: RecurrentState, batch: int | None) -> dict[str, Any]:
    """Validate ``state`` and turn it into the HF forward kwargs that start from it (copies)."""
    if not isinstance(state, RecurrentState):
        raise TypeError(f"state= must be a nnsight_rnn.RecurrentState, got {type(state).__name__}")
    fmt = state_format(card)
    state.validate(model, card.family, mixer_class(card.mixer_kind).state_slots(model.config), batch)
    return fmt.to_forward_kwargs(model, state)


def state_from_output(model: nn.Module, card: Card, output: Any) -> RecurrentState:
    """The state an HF forward output carries out (``use_cache=True`` runs), as copies."""
    return state_format(card).from_output(model, card.family, output)
