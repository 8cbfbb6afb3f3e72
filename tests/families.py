"""Tiny random models of every card, built from configs (no downloads), for cross-family tests.

``FAMILIES`` maps a card family to a factory returning an untouched HF model in eval mode.
``STATE_HOOKS`` names, per recurrent family, the (write, readout, carried-in) hook points of its
main recurrent state, relative to ``layers[i].mixer``. Families whose hookable mixer is not
registered are left out of the recurrent lists automatically.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from transformers import (
    FalconMambaConfig,
    FalconMambaForCausalLM,
    GPT2Config,
    GPT2LMHeadModel,
    GPTNeoXConfig,
    GPTNeoXForCausalLM,
    LlamaConfig,
    LlamaForCausalLM,
    MambaConfig,
    MambaForCausalLM,
)

from nnsight_rnn.mixers import MIXER_KINDS

VOCAB = 300


def mamba() -> torch.nn.Module:
    cfg = MambaConfig(
        vocab_size=VOCAB, hidden_size=32, state_size=8, num_hidden_layers=3, intermediate_size=64,
        conv_kernel=4, time_step_rank=4,
    )  # fmt: skip
    return MambaForCausalLM(cfg).eval()


def falcon_mamba() -> torch.nn.Module:
    cfg = FalconMambaConfig(
        vocab_size=VOCAB, hidden_size=32, state_size=8, num_hidden_layers=3, intermediate_size=64,
        conv_kernel=4, time_step_rank=4,
    )  # fmt: skip
    return FalconMambaForCausalLM(cfg).eval()


def mamba2() -> torch.nn.Module:
    from transformers import Mamba2Config, Mamba2ForCausalLM

    cfg = Mamba2Config(
        vocab_size=VOCAB, hidden_size=32, state_size=8, num_hidden_layers=3, expand=2, head_dim=8,
        num_heads=8, n_groups=1, conv_kernel=4, chunk_size=4,
    )  # fmt: skip
    return Mamba2ForCausalLM(cfg).eval()


def rwkv4() -> torch.nn.Module:
    from transformers import RwkvConfig, RwkvForCausalLM

    cfg = RwkvConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=3, intermediate_size=64, rescale_every=2)
    model = RwkvForCausalLM(cfg)
    with torch.no_grad():  # HF's init leaves the time-mix parameters degenerate for tiny models
        for name, p in model.named_parameters():
            if "time_" in name:
                p.copy_(torch.randn_like(p) * 0.5)
    return model.eval()


def rwkv7() -> torch.nn.Module:
    from nnsight_rnn.models.blinkdl import convert_blinkdl

    from .models.blinkdl import random_sd_v7

    return convert_blinkdl(random_sd_v7(vocab=VOCAB, seed=int(torch.randint(0, 2**31, ()))))


def rwkv6() -> torch.nn.Module:
    from nnsight_rnn.models.blinkdl import convert_blinkdl

    from .models.blinkdl import random_sd_v56

    return convert_blinkdl(random_sd_v56(6, vocab=VOCAB, seed=int(torch.randint(0, 2**31, ()))))


def rwkv5() -> torch.nn.Module:
    from nnsight_rnn.models.blinkdl import convert_blinkdl

    from .models.blinkdl import random_sd_v56

    return convert_blinkdl(random_sd_v56(5, vocab=VOCAB, seed=int(torch.randint(0, 2**31, ()))))


def gpt2() -> torch.nn.Module:
    cfg = GPT2Config(vocab_size=VOCAB, n_embd=32, n_layer=3, n_head=4, n_positions=64)
    return GPT2LMHeadModel(cfg).eval()


def gpt_neox() -> torch.nn.Module:
    cfg = GPTNeoXConfig(
        vocab_size=VOCAB, hidden_size=32, num_hidden_layers=3, num_attention_heads=4, intermediate_size=64,
        max_position_embeddings=64,
    )  # fmt: skip
    return GPTNeoXForCausalLM(cfg).eval()


def llama() -> torch.nn.Module:
    cfg = LlamaConfig(
        vocab_size=VOCAB, hidden_size=32, num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2,
        intermediate_size=64, max_position_embeddings=64,
    )  # fmt: skip
    return LlamaForCausalLM(cfg).eval()


_ALL: dict[str, tuple[Callable[[], torch.nn.Module], str]] = {
    "mamba": (mamba, "mamba1"),
    "falcon_mamba": (falcon_mamba, "mamba1"),
    "mamba2": (mamba2, "mamba2"),
    "rwkv4": (rwkv4, "rwkv4"),
    "rwkv7": (rwkv7, "rwkv7"),
    "rwkv6": (rwkv6, "rwkv6"),
    "rwkv5": (rwkv5, "rwkv5"),
    "gpt2": (gpt2, "none"),
    "gpt_neox": (gpt_neox, "none"),
    "llama": (llama, "none"),
}

FAMILIES: dict[str, Callable[[], torch.nn.Module]] = {
    name: factory for name, (factory, kind) in _ALL.items() if kind == "none" or kind in MIXER_KINDS
}
RECURRENT = [name for name, (_, kind) in _ALL.items() if kind != "none" and kind in MIXER_KINDS]
TRANSFORMERS = [name for name, (_, kind) in _ALL.items() if kind == "none"]

# (write hook, readout hook, carried-in hook) of the main recurrent state, under layers[i].mixer.
STATE_HOOKS: dict[str, tuple[str, str, str]] = {
    "mamba": ("hook_ssm_write", "hook_ssm_state", "hook_ssm_state_in"),
    "falcon_mamba": ("hook_ssm_write", "hook_ssm_state", "hook_ssm_state_in"),
    "mamba2": ("hook_ssm_write", "hook_ssm_state", "hook_ssm_state_in"),
    "rwkv4": ("hook_wkv_write", "hook_wkv_state", "hook_wkv_state_in"),
    "rwkv7": ("hook_wkv_write", "hook_wkv_state", "hook_wkv_state_in"),
    "rwkv6": ("hook_wkv_write", "hook_wkv_state", "hook_wkv_state_in"),
    "rwkv5": ("hook_wkv_write", "hook_wkv_state", "hook_wkv_state_in"),
}

# Positions after t whose logits an edit of the last mixer's output at t reaches, through the rest of the
# last block: none for Mamba-style blocks (position-wise after the mixer); RWKV's channel mix token-shifts
# its input, so the next position sees it too.
LAST_BLOCK_REACH: dict[str, int] = {
    "mamba": 0,
    "falcon_mamba": 0,
    "mamba2": 0,
    "rwkv4": 1,
    "rwkv7": 1,
    "rwkv6": 1,
    "rwkv5": 1,
}

# Mixer hooks through which a layer reads an earlier layer's activations other than the residual stream
# (RWKV-7's value residual: every layer mixes layer 0's value in). Patching a residual alone does not
# screen off the clean run there.
CROSS_LAYER_HOOKS: dict[str, str] = {"rwkv7": "hook_v_first"}
