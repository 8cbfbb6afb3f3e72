"""Checkpoint formats other than transformers' own, converted to HF models on load.

Each format declares how it is recognised (files and config keys it must have) in
:data:`FORMATS`; a folder matching none is loaded by transformers as usual, one matching two is
an error (never a guess).
"""

from __future__ import annotations

from . import mamba_ssm  # noqa: F401  (registers the mamba-ssm format)
from .formats import FORMATS, CheckpointFormat, detect_format, register_format

__all__ = ["FORMATS", "CheckpointFormat", "detect_format", "register_format"]
