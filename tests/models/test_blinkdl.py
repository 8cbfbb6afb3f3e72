"""BlinkDL ``.pth`` conversion: version detection and clear errors for what is not supported."""

from __future__ import annotations

import pytest
import torch

from nnsight_rnn.models.blinkdl import blinkdl_version, convert_blinkdl

from .blinkdl import random_sd_v7, random_sd_v56


def test_versions_are_told_by_the_keys() -> None:
    assert blinkdl_version(random_sd_v7(layers=1)) == 7
    assert blinkdl_version(random_sd_v56(6, layers=1)) == 6
    assert blinkdl_version(random_sd_v56(5, layers=1)) == 5
    assert blinkdl_version({"blocks.0.att.time_first": torch.zeros(2), "emb.weight": torch.zeros(2, 2)}) == 4
    with pytest.raises(ValueError, match="not a BlinkDL RWKV checkpoint"):
        blinkdl_version({"model.embed_tokens.weight": torch.zeros(1)})


def test_unsupported_checkpoints_name_the_problem() -> None:
    with pytest.raises(ValueError, match=r"RWKV-4 checkpoint.*convert_rwkv_checkpoint_to_hf"):
        convert_blinkdl({"blocks.0.att.time_first": torch.zeros(2), "emb.weight": torch.zeros(2, 2)})
    old_v5 = random_sd_v56(5, layers=1)
    old_v5["blocks.0.att.time_first"] = old_v5.pop("blocks.0.att.time_faaaa")
    with pytest.raises(NotImplementedError, match=r"RWKV-5\.0/5\.1"):
        convert_blinkdl(old_v5)
    tuned = random_sd_v56(6, layers=1)
    tuned["blocks.0.att.time_state"] = torch.zeros(4, 8, 8)
    with pytest.raises(NotImplementedError, match="time_state"):
        convert_blinkdl(tuned)
    deep_embed = random_sd_v7(layers=1)
    deep_embed["blocks.0.ffn.s_emb.weight"] = torch.zeros(300, 1024)
    with pytest.raises(KeyError, match="DeepEmbed"):
        convert_blinkdl(deep_embed)
    missing = random_sd_v7(layers=2)
    del missing["blocks.1.att.r_k"]
    with pytest.raises(KeyError, match=r"lacks tensors for \['model.layers.1.attn.r_k'\]"):
        convert_blinkdl(missing)


def test_one_layer_rwkv7_has_no_value_residual() -> None:
    model = convert_blinkdl(random_sd_v7(layers=1))
    assert model.config.num_hidden_layers == 1 and not hasattr(model.model.layers[0].attn, "v_lora")
    with torch.no_grad():
        assert model(torch.randint(0, 300, (1, 5))).logits.shape == (1, 5, 300)
