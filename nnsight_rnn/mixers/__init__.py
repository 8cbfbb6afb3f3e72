"""Hookable mixers, one per family, registered by kind name (the ``mixer_kind`` of a card).

Add a kind with :func:`register_mixer_kind`; cards then refer to it by name.
"""

from __future__ import annotations

from .base import HookableMixer
from .mamba1 import HookableMamba1Mixer
from .mamba2 import HookableMamba2Mixer
from .rwkv4 import HookableRwkv4TimeMix

MIXER_KINDS: dict[str, type[HookableMixer]] = {}


def register_mixer_kind(cls: type[HookableMixer]) -> type[HookableMixer]:
    """Register a :class:`HookableMixer` subclass under ``cls.kind`` (usable as a decorator)."""
    if not cls.kind:
        raise ValueError(f"{cls.__name__} must set a non-empty `kind`")
    MIXER_KINDS[cls.kind] = cls
    return cls


def mixer_class(kind: str) -> type[HookableMixer]:
    """The hookable mixer class registered under ``kind`` (a card's ``mixer_kind``)."""
    if kind not in MIXER_KINDS:
        raise ValueError(
            f"unknown mixer kind {kind!r} (a card's mixer_kind); registered kinds: {sorted(MIXER_KINDS)}. A new kind is "
            "a HookableMixer subclass registered with nnsight_rnn.mixers.register_mixer_kind "
            "(docs/adding-an-architecture.md)"
        )
    return MIXER_KINDS[kind]


register_mixer_kind(HookableMamba1Mixer)
register_mixer_kind(HookableMamba2Mixer)
register_mixer_kind(HookableRwkv4TimeMix)

__all__ = ["MIXER_KINDS", "HookableMixer", "mixer_class", "register_mixer_kind"]
