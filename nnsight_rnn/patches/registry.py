"""The patch registry: patch name (as a card writes it) -> a function that fixes the HF model in place.

A patch mutates the model without touching parameters (the ``state_dict`` must stay loadable by the
stock class). Register more with :func:`register_patch`.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

PATCHES: dict[str, Callable[[nn.Module], None]] = {}


def register_patch(name: str) -> Callable[[Callable[[nn.Module], None]], Callable[[nn.Module], None]]:
    def deco(fn: Callable[[nn.Module], None]) -> Callable[[nn.Module], None]:
        PATCHES[name] = fn
        return fn

    return deco


def apply_patch(name: str, model: nn.Module) -> None:
    if name not in PATCHES:
        raise ValueError(f"card names unknown patch {name!r}; registered patches: {sorted(PATCHES)}")
    PATCHES[name](model)
