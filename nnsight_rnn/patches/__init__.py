"""Model-level fixes that cards name (``patches = [...]``), applied after the mixer swap.

Each patch takes the HF model and mutates it in place without touching parameters (the
``state_dict`` must stay loadable by the stock class). The registry is :mod:`.registry`; importing
this package registers the shipped patches (RWKV-4's, :mod:`.rwkv4`).
"""

from . import rwkv4  # noqa: F401  (registers rwkv4_blocks and rwkv4_no_rescale)
from .registry import PATCHES, apply_patch, register_patch

__all__ = ["PATCHES", "apply_patch", "register_patch"]
