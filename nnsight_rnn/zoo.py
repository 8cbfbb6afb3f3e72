"""Tiny trained models shipped by name (``zoo/mamba-tiny``). Filled in by the model-zoo work."""

from __future__ import annotations

ZOO_PREFIX = "zoo/"


def is_zoo_name(name: str) -> bool:
    return name.startswith(ZOO_PREFIX)


def zoo_path(name: str) -> str:
    raise NotImplementedError(f"the model zoo is not built yet ({name!r})")
