"""Upstream fused GPU kernels (mamba-ssm, causal-conv1d): found lazily, used only where they are exact.

The hookable mixers are the default path. On a CUDA device, a mixer whose internal hooks are all
idle may instead run the Mamba authors' fused kernels (:func:`mamba1_kernels`), as stock HF does on
GPU; the moment any internal hook is wanted (an nnsight ``.output`` access, a TransformerLens hook,
a capture helper) that layer takes the hookable path for that call, so a requested hook is never
skipped. Per-layer, per-call: other layers keep the fused path.

Why lazy: importing ``mamba_ssm`` needs triton and its compiled CUDA extension, and transformers binds
these kernels at import time with no device check (upstream-notes: HF Mamba then crashes on CPU). We
never import them at import time, and never on a CPU tensor; an import that fails (missing package,
no GPU driver, ABI mismatch) just means the hookable path, with the reason kept in
:func:`kernel_status` for ``nnsight-rnn info`` / debugging.

``NNSIGHT_RNN_FUSED=0`` turns the fused path off everywhere (e.g. to compare against it).
Tolerance: the fused kernels compute in fp32 with another summation order; expect the usual
kernel-vs-reference differences (mamba-ssm's own tests allow ~1e-3 relative in fp32 for the scan).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch

FUSED_ENV = "NNSIGHT_RNN_FUSED"


@dataclass(frozen=True)
class Mamba1Kernels:
    """The three functions HF's ``MambaMixer.cuda_kernels_forward`` uses, with mamba-ssm's signatures.

    Attributes:
        causal_conv1d_fn: ``(x [b, D, L], weight [D, K], bias [D] | None, activation=None | "silu") -> [b, D, L]``.
        selective_scan_fn: ``(u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state)``
            with ``u, delta, z [b, D, L]``, ``B, C [b, N, L]`` -> ``(y [b, D, L], last_state [b, D, N])``;
            ``y`` includes the ``D * u`` skip and the ``silu(z)`` gate.
        selective_state_update: one decode step ``(state [b, D, N] (updated in place), x [b, D],
            dt [b, D], A, B [b, N], C [b, N], D, z [b, D], dt_bias, dt_softplus) -> y [b, D]``.
        causal_conv1d_update: one decode step of the conv ``(x [b, D], conv_state [b, D, K] (in place),
            weight [D, K], bias, activation) -> [b, D]``.
    """

    causal_conv1d_fn: Callable[..., torch.Tensor]
    selective_scan_fn: Callable[..., Any]
    selective_state_update: Callable[..., torch.Tensor]
    causal_conv1d_update: Callable[..., torch.Tensor]


_cache: dict[str, Mamba1Kernels | None] = {}
_status: dict[str, str] = {}
_override: dict[str, Mamba1Kernels | None] = {}


def _load_mamba1() -> Mamba1Kernels | None:
    try:
        from causal_conv1d import causal_conv1d_fn, causal_conv1d_update
        from mamba_ssm.ops.selective_scan_interface import selective_scan_fn
        from mamba_ssm.ops.triton.selective_state_update import selective_state_update
    except Exception as exc:  # any failure to import means "no fused path", never a crash
        _status["mamba1"] = f"unavailable: {type(exc).__name__}: {exc}"
        return None
    _status["mamba1"] = "available (mamba-ssm + causal-conv1d)"
    return Mamba1Kernels(causal_conv1d_fn, selective_scan_fn, selective_state_update, causal_conv1d_update)


def fused_enabled() -> bool:
    """False when ``NNSIGHT_RNN_FUSED=0`` (read on every call, so tests and users can flip it)."""
    return os.environ.get(FUSED_ENV, "1") != "0"


def mamba1_kernels(device: torch.device) -> Mamba1Kernels | None:
    """The fused Mamba-1 kernels usable on ``device``, or None (CPU, meta, disabled, not installed)."""
    if "mamba1" in _override:
        return _override["mamba1"]
    if device.type != "cuda" or not fused_enabled():
        return None
    if "mamba1" not in _cache:
        _cache["mamba1"] = _load_mamba1()
    return _cache["mamba1"]


def kernel_status() -> dict[str, str]:
    """What was found so far per kernel family (``"not probed"`` until a CUDA forward asked)."""
    return {"mamba1": _status.get("mamba1", "not probed (probed on the first CUDA forward)")}


@contextlib.contextmanager
def use_kernels(**families: Mamba1Kernels | None) -> Iterator[None]:
    """Force the kernels a family uses, whatever the device (tests; a custom kernel build).

    ``with use_kernels(mamba1=my_kernels): model(ids)``; ``mamba1=None`` forces the hookable path.
    """
    unknown = set(families) - {"mamba1"}
    if unknown:
        raise ValueError(f"no fused kernels for {sorted(unknown)}; known: ['mamba1']")
    before = dict(_override)
    _override.update(families)
    try:
        yield
    finally:
        _override.clear()
        _override.update(before)
