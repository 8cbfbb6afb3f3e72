"""The checkpoint-format registry: how a non-HF folder is recognised, and its loader.

Each format declares how it is recognised (files and config keys it must have) in
:data:`FORMATS`; a folder matching none is loaded by transformers as usual, one matching two is
an error (never a guess).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass

from torch import nn


@dataclass(frozen=True)
class CheckpointFormat:
    name: str
    description: str
    config_keys: tuple[str, ...]  # keys config.json must have
    forbidden_keys: tuple[str, ...]  # keys that mean another format (e.g. HF's "model_type")
    load: Callable[[str], nn.Module]


FORMATS: dict[str, CheckpointFormat] = {}


def register_format(fmt: CheckpointFormat) -> None:
    FORMATS[fmt.name] = fmt


def detect_format(folder: str) -> CheckpointFormat | None:
    """The non-HF format of ``folder``, or None for an HF folder (or no config.json)."""
    path = os.path.join(folder, "config.json")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        config = json.load(f)
    matches = [
        fmt
        for fmt in FORMATS.values()
        if all(k in config for k in fmt.config_keys) and not any(k in config for k in fmt.forbidden_keys)
    ]
    if len(matches) > 1:
        raise ValueError(f"{folder} matches several checkpoint formats: {[m.name for m in matches]}")
    return matches[0] if matches else None
