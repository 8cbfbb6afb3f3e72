"""fla's (flash-linear-attention) pure-torch reference recurrences, loaded from the installed package's files.

``import fla`` needs triton (GPU); its naive reference functions are plain torch (+ einops). They are
executed here from their source files without importing the package: ``dplr_recurrence`` (the
generalised delta rule fla runs RWKV-7 with) and ``naive_recurrent_rwkv6`` (RWKV-6; RWKV-5 is the
case of a decay constant over time). Skipped (never silently passed) where fla is not installed.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path

import pytest


def _fla_file(relative: str) -> Path:
    spec = importlib.util.find_spec("fla")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("flash-linear-attention is not installed (pip install flash-linear-attention)")
    return Path(spec.submodule_search_locations[0]) / relative


def _load(relative: str, name: str) -> Callable:
    path = _fla_file(relative)
    namespace: dict = {"__name__": f"fla_ref_{path.stem}"}
    exec(compile(path.read_text(), str(path), "exec"), namespace)  # fla source: torch-only reference functions
    return namespace[name]


def dplr_recurrence() -> Callable:
    """``dplr_recurrence(q, k, v, alpha, beta, gk, initial_state, output_final_state)``; [B, H, T, D] inputs."""
    return _load("ops/generalized_delta_rule/dplr/naive.py", "dplr_recurrence")


def naive_recurrent_rwkv6() -> Callable:
    """``naive_recurrent_rwkv6(q, k, v, w, u, scale, initial_state, output_final_state)``; [B, H, T, D] inputs."""
    return _load("ops/rwkv6/recurrent_naive.py", "naive_recurrent_rwkv6")
