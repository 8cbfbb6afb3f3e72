"""BlinkDL's original ``.pth`` checkpoints (RWKV-LM / ChatRWKV / the ``rwkv`` package) <-> our HF models.

A ``.pth`` file is a flat ``state_dict`` with BlinkDL's names (``emb.weight``, ``blocks.{i}.ln0``
(block 0), ``blocks.{i}.ln1/ln2``, ``blocks.{i}.att.*``, ``blocks.{i}.ffn.*``, ``ln_out``,
``head.weight``). The RWKV version is told by the keys, as BlinkDL's loader does: ``att.r_k`` ->
RWKV-7 (x070), ``att.time_maa_x`` -> RWKV-6, ``att.ln_x`` -> RWKV-5 (5.2, the released "Eagle"
layout with per-head ``time_decay``/``time_faaaa``), otherwise RWKV-4 (use transformers'
``RwkvForCausalLM`` and its converter).

Conversions are exact (renames, transposes, reshapes; no arithmetic on values), so a converted
model saved back with :func:`save_blinkdl` gives the same tensors.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

PthDict = dict[str, torch.Tensor]


def blinkdl_version(sd: PthDict) -> int:
    """RWKV version of a BlinkDL ``state_dict`` (7, 6, 5 or 4), from its keys."""
    keys = set(sd)
    if "blocks.0.att.r_k" in keys:
        return 7
    if "blocks.0.att.time_maa_x" in keys:
        return 6
    if "blocks.0.att.ln_x.weight" in keys:
        return 5
    if "blocks.0.att.time_first" in keys or "blocks.0.att.time_decay" in keys:
        return 4
    raise ValueError(
        "not a BlinkDL RWKV checkpoint: expected keys like blocks.0.att.r_k (v7), blocks.0.att.time_maa_x (v6), "
        f"blocks.0.att.ln_x.weight (v5); got {sorted(keys)[:8]}..."
    )


def _n_layers(sd: PthDict) -> int:
    return 1 + max(int(m.group(1)) for k in sd if (m := re.match(r"blocks\.(\d+)\.", k)))


@dataclass(frozen=True)
class _Layout:
    """Where a version's HF model keeps BlinkDL's tensors (the module names of its hub folders)."""

    version: str  # for errors: "RWKV-7"
    fixed: dict[str, str]  # emb.weight, ln_out.*, head.weight -> our names
    blocks: str  # the block list: "model.layers"
    norms: dict[str, str]  # ln0 (block 0), ln1, ln2 -> the block's norms
    mixers: dict[str, str]  # att, ffn -> the block's time-mix, channel-mix
    # (name, block index, "att" | "ffn", rest) -> (our name under the mixer or None to drop, transform)
    mixer_key: Callable[[str, str, str, str], tuple[str | None, str]]

    def rename(self, name: str) -> tuple[str | None, str]:
        """(our name or None to drop, transform) for one BlinkDL key; transform in {"", "T", "flat", "r_k"}."""
        if name in self.fixed:
            return self.fixed[name], ""
        m = re.fullmatch(r"blocks\.(\d+)\.(ln0|ln1|ln2)\.(weight|bias)", name)
        if m:
            return f"{self.blocks}.{m.group(1)}.{self.norms[m.group(2)]}.{m.group(3)}", ""
        m = re.fullmatch(r"blocks\.(\d+)\.(att|ffn)\.(.+)", name)
        if not m:
            raise KeyError(f"unexpected key {name!r} in an {self.version} checkpoint")
        i, part, rest = m.groups()
        ours, how = self.mixer_key(name, i, part, rest)
        return (None if ours is None else f"{self.blocks}.{i}.{self.mixers[part]}.{ours}"), how


# --- RWKV-7 --------------------------------------------------------------------------------------

_V7_LORAS = {"w": "w_lora", "a": "a_lora", "v": "v_lora", "g": "g_lora"}
_V7_PROJ = {"receptance": "r_proj", "key": "k_proj", "value": "v_proj", "output": "o_proj"}


def _v7_mixer_key(name: str, i: str, part: str, rest: str) -> tuple[str | None, str]:
    if part == "ffn":
        if rest == "x_k":
            return "x_k", "flat"
        if rest in ("key.weight", "value.weight"):
            return rest, ""
        raise KeyError(f"unsupported RWKV-7 channel-mix key {name!r} (DeepEmbed / other variants are not supported)")
    if rest in ("x_r", "x_w", "x_k", "x_v", "x_a", "x_g"):
        return rest, ""
    if rest in ("k_k", "k_a"):
        return rest, "flat"
    if rest == "r_k":
        return rest, "r_k"
    lm = re.fullmatch(r"([wavg])([012])", rest)
    if lm:
        if lm.group(1) == "v" and i == "0":
            return None, ""  # layer 0 has no value residual (BlinkDL keeps unused v0/v1/v2)
        lora = _V7_LORAS[lm.group(1)] + ".lora."
        return {"0": (lora + "2.bias", "flat"), "1": (lora + "0.weight", "T"), "2": (lora + "2.weight", "T")}[
            lm.group(2)
        ]
    pm = re.fullmatch(r"(receptance|key|value|output)\.weight", rest)
    if pm:
        return _V7_PROJ[pm.group(1)] + ".weight", ""
    if rest in ("ln_x.weight", "ln_x.bias"):
        return "g_norm." + rest.split(".")[1], ""
    raise KeyError(f"unsupported RWKV-7 time-mix key {name!r}")


_V7 = _Layout(
    version="RWKV-7",
    fixed={
        "emb.weight": "model.embeddings.weight", "ln_out.weight": "model.norm.weight",
        "ln_out.bias": "model.norm.bias", "head.weight": "lm_head.weight",
    },
    blocks="model.layers",
    norms={"ln0": "pre_norm", "ln1": "attn_norm", "ln2": "ffn_norm"},
    mixers={"att": "attn", "ffn": "ffn"},
    mixer_key=_v7_mixer_key,
)  # fmt: skip


def _v7_config(sd: PthDict, **overrides: Any) -> Any:
    from .rwkv7 import Rwkv7Config

    vocab, d = sd["emb.weight"].shape
    r_k = sd["blocks.0.att.r_k"]
    heads, head_dim = r_k.shape[-2:]
    n = _n_layers(sd)
    v_rank = sd["blocks.1.att.v1"].shape[1] if n > 1 else sd.get("blocks.0.att.v1", torch.empty(0, 32)).shape[1]
    cfg = dict(
        vocab_size=vocab, hidden_size=d, num_hidden_layers=n, head_dim=head_dim, num_heads=heads,
        intermediate_size=sd["blocks.0.ffn.key.weight"].shape[0],
        decay_low_rank_dim=sd["blocks.0.att.w1"].shape[1], a_low_rank_dim=sd["blocks.0.att.a1"].shape[1],
        v_low_rank_dim=v_rank, gate_low_rank_dim=sd["blocks.0.att.g1"].shape[1],
        norm_eps=1e-5, group_norm_eps=64e-5,  # BlinkDL: F.layer_norm default, group_norm eps=64e-5
    )  # fmt: skip
    cfg.update(overrides)
    return Rwkv7Config(**cfg)


def _transform(t: torch.Tensor, how: str, target_shape: torch.Size) -> torch.Tensor:
    if how == "T":
        t = t.t()
    return t.reshape(target_shape).contiguous() if how in ("flat", "r_k") else t.contiguous()


def convert_v7(sd: PthDict, **config_overrides: Any) -> nn.Module:
    """An :class:`Rwkv7ForCausalLM` holding a BlinkDL RWKV-7 ``state_dict`` (fp32)."""
    from .rwkv7 import Rwkv7ForCausalLM

    return _load_converted(Rwkv7ForCausalLM, _v7_config(sd, **config_overrides), sd, _V7)


# --- RWKV-5 / RWKV-6 -------------------------------------------------------------------------------

_V5_MIX = {"time_mix_k": "time_mix_key", "time_mix_v": "time_mix_value", "time_mix_r": "time_mix_receptance",
           "time_mix_g": "time_mix_gate"}  # fmt: skip


def _v56_mixer_key(name: str, i: str, part: str, rest: str) -> tuple[str | None, str]:
    if rest == "time_state":
        raise NotImplementedError(f"{name}: state-tuned checkpoints (att.time_state) are not supported yet")
    if part == "ffn" and rest in ("time_mix_k", "time_mix_r"):
        rest = _V5_MIX[rest]
    elif part == "att" and rest in _V5_MIX:
        rest = _V5_MIX[rest]
    return rest, "flat" if rest.startswith("time_") else ""


_V56 = _Layout(  # the "-hf" layout, renames only
    version="RWKV-5/6",
    fixed={
        "emb.weight": "rwkv.embeddings.weight", "ln_out.weight": "rwkv.ln_out.weight",
        "ln_out.bias": "rwkv.ln_out.bias", "head.weight": "head.weight",
    },
    blocks="rwkv.blocks",
    norms={"ln0": "pre_ln", "ln1": "ln1", "ln2": "ln2"},
    mixers={"att": "attention", "ffn": "feed_forward"},
    mixer_key=_v56_mixer_key,
)  # fmt: skip


def _v56_config(sd: PthDict, version: int, **overrides: Any) -> Any:
    vocab, d = sd["emb.weight"].shape
    attention = sd["blocks.0.att.key.weight"].shape[0]
    heads = sd["blocks.0.att.time_faaaa"].shape[0]
    cfg: dict[str, Any] = dict(
        vocab_size=vocab, hidden_size=d, num_hidden_layers=_n_layers(sd), attention_hidden_size=attention,
        head_size=attention // heads, intermediate_size=sd["blocks.0.ffn.key.weight"].shape[0],
        layer_norm_epsilon=1e-5, group_norm_eps=64e-5,  # BlinkDL: F.layer_norm default, group_norm eps=64e-5
    )  # fmt: skip
    if version == 6:
        from .rwkv6 import Rwkv6Config

        cfg["time_mix_extra_dim"] = sd["blocks.0.att.time_maa_w1"].shape[1] // 5
        cfg["time_decay_extra_dim"] = sd["blocks.0.att.time_decay_w1"].shape[1]
        cfg.update(overrides)
        return Rwkv6Config(**cfg)
    from .rwkv5 import Rwkv5Config

    cfg.update(overrides)
    return Rwkv5Config(**cfg)


def _convert_v56(sd: PthDict, version: int, **config_overrides: Any) -> nn.Module:
    if "blocks.0.att.time_faaaa" not in sd:
        raise NotImplementedError(
            "RWKV-5.0/5.1 checkpoints (time_first instead of time_faaaa) are not supported; RWKV-5 World (5.2) is"
        )
    if version == 6:
        from .rwkv6 import Rwkv6ForCausalLM as cls
    else:
        from .rwkv5 import Rwkv5ForCausalLM as cls
    return _load_converted(cls, _v56_config(sd, version, **config_overrides), sd, _V56)


def convert_v6(sd: PthDict, **config_overrides: Any) -> nn.Module:
    """An :class:`Rwkv6ForCausalLM` holding a BlinkDL RWKV-6 ``state_dict`` (fp32)."""
    return _convert_v56(sd, 6, **config_overrides)


def convert_v5(sd: PthDict, **config_overrides: Any) -> nn.Module:
    """An :class:`Rwkv5ForCausalLM` holding a BlinkDL RWKV-5.2 ``state_dict`` (fp32)."""
    return _convert_v56(sd, 5, **config_overrides)


# --- shared ---------------------------------------------------------------------------------------


def _load_converted(model_cls: type[nn.Module], config: Any, sd: PthDict, layout: _Layout) -> nn.Module:
    """A ``model_cls(config)`` (built on the meta device) holding ``sd``'s tensors, renamed by ``layout``."""
    with torch.device("meta"):
        model = model_cls(config)
    targets = {k: v.shape for k, v in model.state_dict().items()}
    out: PthDict = {}
    for name, tensor in sd.items():
        ours, how = layout.rename(name)
        if ours is None:
            continue
        if ours not in targets:
            raise KeyError(f"{name!r} maps to {ours!r}, which the {type(model).__name__} does not have")
        t = _transform(tensor.float(), how, targets[ours])
        if t.shape != targets[ours]:
            raise ValueError(f"{name!r} has shape {tuple(tensor.shape)}; {ours!r} needs {tuple(targets[ours])}")
        out[ours] = t
    missing = sorted(set(targets) - set(out))
    if missing:
        raise KeyError(f"the checkpoint lacks tensors for {missing[:6]}{' ...' if len(missing) > 6 else ''}")
    model.load_state_dict(out, assign=True, strict=True)
    return model.eval()


_CONVERTERS: dict[int, Callable[..., nn.Module]] = {5: convert_v5, 6: convert_v6, 7: convert_v7}


def convert_blinkdl(sd: PthDict, **config_overrides: Any) -> nn.Module:
    """The hookable HF model (RWKV-5/6/7, picked from the keys) holding a BlinkDL ``state_dict``."""
    version = blinkdl_version(sd)
    if version == 4:
        raise ValueError(
            "this is an RWKV-4 checkpoint: convert it with transformers' "
            "models/rwkv/convert_rwkv_checkpoint_to_hf.py and load the folder with nnsight_rnn.load"
        )
    if version not in _CONVERTERS:
        raise NotImplementedError(f"RWKV-{version} .pth checkpoints are not supported yet")
    return _CONVERTERS[version](sd, **config_overrides)


def load_blinkdl(path: str | Path, **config_overrides: Any) -> nn.Module:
    """Load a BlinkDL ``.pth`` file as the matching hookable HF model (fp32, eval mode).

    Pass the result to ``nnsight_rnn.load(model)``; ``model.save_pretrained(folder)`` writes an HF
    folder that ``nnsight_rnn.load(folder)`` reads directly afterwards.
    """
    sd = torch.load(str(path), map_location="cpu", weights_only=True)
    return convert_blinkdl(sd, **config_overrides)


def _v56_inverse(model: nn.Module) -> PthDict:
    inverse = {v: k for k, v in _V5_MIX.items()}
    out: PthDict = {}
    for name, t in model.state_dict().items():
        name = name.removeprefix("rwkv.").replace("embeddings.", "emb.").replace(".pre_ln.", ".ln0.")
        name = name.replace(".attention.", ".att.").replace(".feed_forward.", ".ffn.")
        last = name.rsplit(".", 1)
        if last[-1] in inverse:
            name = f"{last[0]}.{inverse[last[-1]]}"
        out[name] = t.detach().cpu().contiguous()
    return out


def to_blinkdl_state_dict(model: nn.Module) -> PthDict:
    """The BlinkDL ``state_dict`` of one of our RWKV-5/6/7 models (inverse of :func:`convert_blinkdl`)."""
    ours = model.state_dict()
    model_type = getattr(model.config, "model_type", None)
    if model_type in ("rwkv5", "rwkv6"):
        return _v56_inverse(model)
    if model_type != "rwkv7":
        raise NotImplementedError(f"to_blinkdl_state_dict supports RWKV-5/6/7 models, not {model_type!r}")
    d, n = model.config.hidden_size, model.config.num_hidden_layers
    shapes = _v7_blinkdl_shapes(model.config)
    out: PthDict = {}
    for name, shape in shapes.items():
        target, how = _V7.rename(name)
        if target is None:
            continue
        t = ours[target].detach().cpu()
        out[name] = (t.t() if how == "T" else t).reshape(shape).contiguous()
    assert len(out) == len(ours), (len(out), len(ours), d, n)
    return out


def _v7_blinkdl_shapes(cfg: Any) -> dict[str, tuple[int, ...]]:
    d, A, H, N = cfg.hidden_size, cfg.attention_hidden_size, cfg.num_heads, cfg.head_dim
    shapes: dict[str, tuple[int, ...]] = {"emb.weight": (cfg.vocab_size, d)}
    ranks = {"w": cfg.decay_low_rank_dim, "a": cfg.a_low_rank_dim, "v": cfg.v_low_rank_dim, "g": cfg.gate_low_rank_dim}
    for i in range(cfg.num_hidden_layers):
        p = f"blocks.{i}."
        for ln in ("ln0", "ln1", "ln2") if i == 0 else ("ln1", "ln2"):
            shapes[p + ln + ".weight"] = shapes[p + ln + ".bias"] = (d,)
        for x in ("x_r", "x_w", "x_k", "x_v", "x_a", "x_g"):
            shapes[p + "att." + x] = (1, 1, d)
        for key, rank in ranks.items():
            if key == "v" and i == 0:
                continue
            if key != "g":
                shapes[p + f"att.{key}0"] = (1, 1, A)
            shapes[p + f"att.{key}1"], shapes[p + f"att.{key}2"] = (d, rank), (rank, A)
        shapes[p + "att.k_k"] = shapes[p + "att.k_a"] = (1, 1, A)
        shapes[p + "att.r_k"] = (H, N)
        shapes[p + "att.receptance.weight"] = shapes[p + "att.key.weight"] = shapes[p + "att.value.weight"] = (A, d)
        shapes[p + "att.output.weight"] = (d, A)
        shapes[p + "att.ln_x.weight"] = shapes[p + "att.ln_x.bias"] = (A,)
        shapes[p + "ffn.x_k"] = (1, 1, d)
        shapes[p + "ffn.key.weight"] = (cfg.intermediate_size, d)
        shapes[p + "ffn.value.weight"] = (d, cfg.intermediate_size)
    shapes["ln_out.weight"] = shapes["ln_out.bias"] = (d,)
    shapes["head.weight"] = (cfg.vocab_size, d)
    return shapes


def save_blinkdl(model: nn.Module, path: str | Path) -> None:
    """Write one of our RWKV-5/6/7 models as a BlinkDL ``.pth`` (loadable by the ``rwkv`` package)."""
    torch.save(to_blinkdl_state_dict(model), str(path))
