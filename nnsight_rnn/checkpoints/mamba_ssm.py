"""Original mamba-ssm checkpoints (``state-spaces/mamba-*``, ``mamba2-*``) as HF models.

A mamba-ssm folder has a ``config.json`` with ``d_model``, ``n_layer``, ``vocab_size``,
``ssm_cfg`` (``{"layer": "Mamba2", ...}`` for Mamba-2), ``pad_vocab_size_multiple``, ... and a
``pytorch_model.bin`` (or ``model.safetensors``). Name mapping: every parameter keeps its name
(``backbone.layers.{i}.mixer.*``, ``backbone.layers.{i}.norm.weight``, ``backbone.norm_f.weight``,
``lm_head.weight``) except ``backbone.embedding.weight`` -> ``backbone.embeddings.weight``.
Hyper-parameters map to ``MambaConfig`` / ``Mamba2Config`` as in :func:`hf_config`; layouts with
attention layers or an MLP (``attn_layer_idx``, ``d_intermediate > 0``) are refused.

``pytorch_model.bin`` is read with ``torch.load(weights_only=True)``: tensors only, never
arbitrary pickled objects.
"""

from __future__ import annotations

import json
import math
import os
from typing import Any

import torch
from torch import nn

from .formats import CheckpointFormat, register_format


def hf_config(original: dict[str, Any], vocab_size: int) -> Any:
    """The transformers config equivalent to a mamba-ssm ``config.json``."""
    from transformers import Mamba2Config, MambaConfig

    ssm = dict(original.get("ssm_cfg") or {})
    layer = ssm.pop("layer", "Mamba1")
    if original.get("attn_layer_idx") or original.get("d_intermediate", 0):
        raise ValueError(
            "this mamba-ssm checkpoint has attention layers or an MLP (attn_layer_idx / d_intermediate); "
            "only pure Mamba / Mamba-2 stacks convert to transformers' MambaForCausalLM / Mamba2ForCausalLM"
        )
    d_model = original["d_model"]
    common = dict(
        vocab_size=vocab_size,
        hidden_size=d_model,
        num_hidden_layers=original["n_layer"],
        layer_norm_epsilon=original.get("norm_epsilon", 1e-5),
        residual_in_fp32=original.get("residual_in_fp32", True),
        tie_word_embeddings=original.get("tie_embeddings", True),
        expand=ssm.get("expand", 2),
        conv_kernel=ssm.get("d_conv", 4),
        use_conv_bias=ssm.get("conv_bias", True),
        use_bias=ssm.get("bias", False),
    )
    if not original.get("rms_norm", True):
        raise ValueError("mamba-ssm checkpoints with LayerNorm (rms_norm=false) have no transformers equivalent")
    if layer == "Mamba1":
        rank = ssm.get("dt_rank", "auto")
        return MambaConfig(
            **common,
            state_size=ssm.get("d_state", 16),
            intermediate_size=common["expand"] * d_model,
            time_step_rank=math.ceil(d_model / 16) if rank == "auto" else rank,
        )
    if layer == "Mamba2":
        head_dim = ssm.get("headdim", 64)
        d_inner = common["expand"] * d_model
        return Mamba2Config(
            **common,
            state_size=ssm.get("d_state", 128),
            head_dim=head_dim,
            num_heads=d_inner // head_dim,
            n_groups=ssm.get("ngroups", 1),
            chunk_size=ssm.get("chunk_size", 256),
            rms_norm=True,
            norm_before_gate=ssm.get("norm_before_gate", False),
        )
    raise ValueError(f"unknown mamba-ssm layer type {layer!r} in ssm_cfg (known: Mamba1, Mamba2)")


def read_weights(folder: str) -> dict[str, torch.Tensor]:
    """The state dict of a mamba-ssm folder (safetensors preferred; .bin read tensors-only)."""
    st = os.path.join(folder, "model.safetensors")
    if os.path.exists(st):
        from safetensors.torch import load_file

        return load_file(st)
    path = os.path.join(folder, "pytorch_model.bin")
    if not os.path.exists(path):
        raise FileNotFoundError(f"{folder} has neither model.safetensors nor pytorch_model.bin")
    return torch.load(path, map_location="cpu", weights_only=True)


def load_mamba_ssm_folder(folder: str) -> nn.Module:
    """Build the HF model (``MambaForCausalLM`` / ``Mamba2ForCausalLM``) with the folder's weights."""
    from transformers import AutoModelForCausalLM

    with open(os.path.join(folder, "config.json")) as f:
        original = json.load(f)
    weights = read_weights(folder)
    renamed = {k.replace("backbone.embedding.", "backbone.embeddings."): v for k, v in weights.items()}
    vocab = renamed["backbone.embeddings.weight"].shape[0]
    config = hf_config(original, vocab)
    config._name_or_path = folder
    model = AutoModelForCausalLM.from_config(config)
    if "lm_head.weight" not in renamed:
        renamed["lm_head.weight"] = renamed["backbone.embeddings.weight"]
    missing, unexpected = model.load_state_dict(renamed, strict=False)
    missing = [k for k in missing if k != "lm_head.weight"]
    if missing or unexpected:
        raise ValueError(
            f"mamba-ssm checkpoint {folder} does not map cleanly: missing {missing}, unexpected {unexpected}"
        )
    model.tie_weights()
    return model.eval()


register_format(
    CheckpointFormat(
        name="mamba_ssm",
        description="original mamba-ssm checkpoint (config.json with d_model / n_layer / ssm_cfg)",
        config_keys=("d_model", "n_layer"),
        forbidden_keys=("model_type",),
        load=load_mamba_ssm_folder,
    )
)
