"""The Mamba authors' pure-torch reference functions, loaded from the mamba-ssm source distribution.

mamba-ssm cannot be imported on a CPU machine (its modules import the CUDA extension and triton at
the top), but ``selective_scan_ref`` and ``ssd_minimal_discrete`` are plain torch + einops. We
fetch the sdist from PyPI once (``pip download``, cached under ``~/.cache/nnsight_rnn/refs``),
and execute just those source files with the CUDA-only imports stubbed out. Nothing of mamba-ssm is
vendored into this repository.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
import types
from pathlib import Path
from typing import Any

VERSION = "2.3.2.post1"
CACHE = Path(os.environ.get("NNSIGHT_RNN_REFS", Path.home() / ".cache" / "nnsight_rnn" / "refs"))


def mamba_ssm_source() -> Path:
    """Folder of the extracted mamba-ssm sdist (downloaded from PyPI on first use)."""
    root = CACHE / f"mamba_ssm-{VERSION}"
    if (root / "mamba_ssm").is_dir():
        return root
    CACHE.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "MAMBA_FORCE_BUILD": "TRUE", "MAMBA_SKIP_CUDA_BUILD": "TRUE"}
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--no-build-isolation", "--no-binary", ":all:",
         f"mamba-ssm=={VERSION}", "-d", str(CACHE)],
        check=True, env=env, capture_output=True,
    )  # fmt: skip
    with tarfile.open(CACHE / f"mamba_ssm-{VERSION}.tar.gz") as tar:
        tar.extractall(CACHE, filter="data")
    return root


def _exec(path: Path, stubs: dict[str, Any]) -> dict[str, Any]:
    saved = {name: sys.modules.get(name) for name in stubs}
    sys.modules.update(stubs)
    try:
        namespace: dict[str, Any] = {"__name__": f"mamba_ssm_ref_{path.stem}"}
        exec(compile(path.read_text(), str(path), "exec"), namespace)  # PyPI source; torch-only functions
        return namespace
    finally:
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module


def _stub(name: str, **attrs: Any) -> types.ModuleType:
    module = types.ModuleType(name)
    for key, value in attrs.items():
        setattr(module, key, value)
    return module


def selective_scan_ref() -> Any:
    """mamba-ssm's ``selective_scan_ref(u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state)``."""
    src = mamba_ssm_source() / "mamba_ssm" / "ops" / "selective_scan_interface.py"

    def passthrough(*args: Any, **kwargs: Any) -> Any:
        return args[0] if args and callable(args[0]) else (lambda fn: fn)

    stubs = {
        "selective_scan_cuda": _stub("selective_scan_cuda"),
        "causal_conv1d_cuda": _stub("causal_conv1d_cuda"),
        "causal_conv1d": _stub("causal_conv1d", causal_conv1d_fn=None),
        "mamba_ssm": _stub("mamba_ssm"),
        "mamba_ssm.utils": _stub("mamba_ssm.utils"),
        "mamba_ssm.utils.torch": _stub("mamba_ssm.utils.torch", custom_bwd=passthrough, custom_fwd=passthrough),
        "mamba_ssm.ops": _stub("mamba_ssm.ops"),
        "mamba_ssm.ops.triton": _stub("mamba_ssm.ops.triton"),
        "mamba_ssm.ops.triton.layer_norm": _stub("mamba_ssm.ops.triton.layer_norm", _layer_norm_fwd=None),
    }
    return _exec(src, stubs)["selective_scan_ref"]


def ssd_minimal_discrete() -> Any:
    """mamba-ssm's ``ssd_minimal_discrete(X, A, B, C, block_len, initial_states=None)``."""
    src = mamba_ssm_source() / "mamba_ssm" / "modules" / "ssd_minimal.py"
    stubs = {
        "mamba_ssm": _stub("mamba_ssm"),
        "mamba_ssm.ops": _stub("mamba_ssm.ops"),
        "mamba_ssm.ops.triton": _stub("mamba_ssm.ops.triton"),
        "mamba_ssm.ops.triton.ssd_combined": _stub("mamba_ssm.ops.triton.ssd_combined", mamba_chunk_scan_combined=None),
    }
    return _exec(src, stubs)["ssd_minimal_discrete"]
