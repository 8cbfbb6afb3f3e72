"""BlinkDL's ``rwkv`` package (the RWKV authors' inference code) as a reference, and random checkpoints in its format.

``rwkv.model`` picks its RWKV version at import time from environment variables (``RWKV_V7_ON=1``
replaces the ``RWKV`` class by the RWKV-7 one), so :func:`blinkdl_module` executes the installed
``rwkv/model.py`` under a private module name per version with the variables set for that version
only (pure torch, CPU, no CUDA kernels). :func:`random_pth` writes random weights with the names and
shapes of BlinkDL's training code (``blocks.{i}.att.*``, ``blocks.{i}.ffn.*``, ``emb``, ``head``,
``ln_out``, ``blocks.0.ln0``), independent of nnsight-rnn's converters, so that converter bugs show.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from types import ModuleType
from typing import Any

import torch

_MODULES: dict[int, ModuleType] = {}


def blinkdl_module(version: int) -> ModuleType:
    """``rwkv.model`` executed for RWKV-``version`` (7: ``RWKV_V7_ON=1``; 5/6: the generic class)."""
    if version in _MODULES:
        return _MODULES[version]
    spec_origin = importlib.util.find_spec("rwkv").submodule_search_locations[0]
    path = Path(spec_origin) / "model.py"
    # The RWKV class also reads RWKV_JIT_ON / RWKV_CUDA_ON when called: those stay set (CPU path).
    os.environ.setdefault("RWKV_JIT_ON", "1")
    os.environ["RWKV_CUDA_ON"] = "0"
    env = {"RWKV_V7_ON": "1" if version == 7 else "0"}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        spec = importlib.util.spec_from_file_location(f"_blinkdl_rwkv_model_v{version}", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    _MODULES[version] = module
    return module


def blinkdl_model(path: str | Path, version: int) -> Any:
    """BlinkDL's model for a ``.pth`` file (fp32, CPU)."""
    module = blinkdl_module(version)
    name = str(path)[: -len(".pth")] if str(path).endswith(".pth") else str(path)
    if version == 7:
        return module.RWKV_x070(name, "cpu fp32")
    return module.RWKV(name, "cpu fp32", verbose=False)


def _vec(c: int, scale: float = 0.5, shift: float = 0.0) -> torch.Tensor:
    return (torch.randn(1, 1, c) * scale + shift).float()


def random_pth_v7(path: str | Path, **kwargs: Any) -> dict[str, torch.Tensor]:
    """A random RWKV-7 (x070) checkpoint in BlinkDL's training layout, saved to ``path`` (see :func:`random_sd_v7`)."""
    sd = random_sd_v7(**kwargs)
    torch.save(sd, str(path))
    return sd


def random_sd_v7(
    *, vocab: int = 300, d: int = 32, layers: int = 3, head: int = 8, ffn: int = 64,
    d_w: int = 8, d_a: int = 8, d_v: int = 6, d_g: int = 10, seed: int = 0,
) -> dict[str, torch.Tensor]:  # fmt: skip
    """A random RWKV-7 (x070) ``state_dict`` with BlinkDL's names and shapes (fp32)."""
    g = torch.Generator().manual_seed(seed)

    def r(*shape: int, s: float = 1.0) -> torch.Tensor:
        return torch.randn(*shape, generator=g) * s

    sd: dict[str, torch.Tensor] = {"emb.weight": r(vocab, d)}
    h = d // head
    for i in range(layers):
        p = f"blocks.{i}."
        if i == 0:
            sd[p + "ln0.weight"], sd[p + "ln0.bias"] = 1 + r(d, s=0.1), r(d, s=0.1)
        for ln in ("ln1", "ln2"):
            sd[p + f"{ln}.weight"], sd[p + f"{ln}.bias"] = 1 + r(d, s=0.1), r(d, s=0.1)
        a = p + "att."
        for name in ("x_r", "x_w", "x_k", "x_v", "x_a", "x_g"):
            sd[a + name] = r(1, 1, d, s=0.3) + 0.5
        sd[a + "w0"] = r(1, 1, d, s=1.0) - 0.5
        sd[a + "w1"], sd[a + "w2"] = r(d, d_w, s=0.3), r(d_w, d, s=0.3)
        sd[a + "a0"] = r(1, 1, d, s=0.5)
        sd[a + "a1"], sd[a + "a2"] = r(d, d_a, s=0.3), r(d_a, d, s=0.3)
        sd[a + "v0"] = r(1, 1, d, s=0.5) + 1.0
        sd[a + "v1"], sd[a + "v2"] = r(d, d_v, s=0.3), r(d_v, d, s=0.3)
        sd[a + "g1"], sd[a + "g2"] = r(d, d_g, s=0.3), r(d_g, d, s=0.3)
        sd[a + "k_k"] = r(1, 1, d, s=0.2) + 0.85
        sd[a + "k_a"] = r(1, 1, d, s=0.2) + 1.0
        sd[a + "r_k"] = r(h, head, s=0.3)
        for name in ("receptance", "key", "value", "output"):
            sd[a + f"{name}.weight"] = r(d, d, s=d**-0.5)
        sd[a + "ln_x.weight"], sd[a + "ln_x.bias"] = 1 + r(d, s=0.1), r(d, s=0.1)
        f = p + "ffn."
        sd[f + "x_k"] = r(1, 1, d, s=0.3) + 0.5
        sd[f + "key.weight"] = r(ffn, d, s=d**-0.5)
        sd[f + "value.weight"] = r(d, ffn, s=ffn**-0.5)
    sd["ln_out.weight"], sd["ln_out.bias"] = 1 + r(d, s=0.1), r(d, s=0.1)
    sd["head.weight"] = r(vocab, d, s=d**-0.5)
    return sd


def random_sd_v56(
    version: int, *, vocab: int = 300, d: int = 32, layers: int = 3, head: int = 8, ffn: int = 64,
    d_mix: int = 6, d_decay: int = 10, seed: int = 0,
) -> dict[str, torch.Tensor]:  # fmt: skip
    """A random RWKV-6 (x060) or RWKV-5.2 ``state_dict`` with BlinkDL's names and shapes (fp32)."""
    g = torch.Generator().manual_seed(seed)

    def r(*shape: int, s: float = 1.0) -> torch.Tensor:
        return torch.randn(*shape, generator=g) * s

    h = d // head
    sd: dict[str, torch.Tensor] = {"emb.weight": r(vocab, d)}
    for i in range(layers):
        p = f"blocks.{i}."
        if i == 0:
            sd[p + "ln0.weight"], sd[p + "ln0.bias"] = 1 + r(d, s=0.1), r(d, s=0.1)
        for ln in ("ln1", "ln2"):
            sd[p + f"{ln}.weight"], sd[p + f"{ln}.bias"] = 1 + r(d, s=0.1), r(d, s=0.1)
        a = p + "att."
        if version == 6:
            for name in ("x", "w", "k", "v", "r", "g"):
                sd[a + f"time_maa_{name}"] = r(1, 1, d, s=0.3) + 0.5
            sd[a + "time_maa_w1"], sd[a + "time_maa_w2"] = r(d, d_mix * 5, s=0.3), r(5, d_mix, d, s=0.3)
            sd[a + "time_decay"] = r(1, 1, d, s=0.7) - 1.5
            sd[a + "time_decay_w1"], sd[a + "time_decay_w2"] = r(d, d_decay, s=0.3), r(d_decay, d, s=0.3)
        else:
            for name in ("k", "v", "r", "g"):
                sd[a + f"time_mix_{name}"] = r(1, 1, d, s=0.3) + 0.5
            sd[a + "time_decay"] = r(h, head, s=0.7) - 1.5
        sd[a + "time_faaaa"] = r(h, head, s=0.5)
        for name in ("receptance", "key", "value", "gate", "output"):
            sd[a + f"{name}.weight"] = r(d, d, s=d**-0.5)
        sd[a + "ln_x.weight"], sd[a + "ln_x.bias"] = 1 + r(d, s=0.1), r(d, s=0.1)
        f = p + "ffn."
        mix = ("time_maa_k", "time_maa_r") if version == 6 else ("time_mix_k", "time_mix_r")
        for name in mix:
            sd[f + name] = r(1, 1, d, s=0.3) + 0.5
        sd[f + "key.weight"] = r(ffn, d, s=d**-0.5)
        sd[f + "receptance.weight"] = r(d, d, s=d**-0.5)
        sd[f + "value.weight"] = r(d, ffn, s=ffn**-0.5)
    sd["ln_out.weight"], sd["ln_out.bias"] = 1 + r(d, s=0.1), r(d, s=0.1)
    sd["head.weight"] = r(vocab, d, s=d**-0.5)
    return sd


def random_pth_v56(path: str | Path, version: int, **kwargs: Any) -> dict[str, torch.Tensor]:
    """A random RWKV-6 / RWKV-5.2 checkpoint saved to ``path`` (see :func:`random_sd_v56`)."""
    sd = random_sd_v56(version, **kwargs)
    torch.save(sd, str(path))
    return sd
