"""Tiny random models of every card, built from configs (no downloads), for cross-family tests.

``FAMILIES`` maps a card family to a factory returning an untouched HF model in eval mode: adding a
family's tests is one factory here (its mixer kind, state hooks and block reach are read off the card
and the mixer). ``STATE_HOOKS[family]`` names the (write, readout, carried-in) hook points of its main
recurrent state, relative to ``layers[i].mixer``. Families whose hookable mixer is not registered are
left out of the recurrent lists automatically.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

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

import nnsight_rnn
from nnsight_rnn.cards import get_card
from nnsight_rnn.hooks import HookPoint
from nnsight_rnn.mixers import MIXER_KINDS
from nnsight_rnn.mixers.token_shift import TokenShiftMixer
from nnsight_rnn.surgery import get_module, layers_of

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


# Family -> tiny model factory. The mixer kind comes from the family's card (no second table).
_FACTORIES: dict[str, Callable[[], torch.nn.Module]] = {
    "mamba": mamba,
    "falcon_mamba": falcon_mamba,
    "mamba2": mamba2,
    "rwkv4": rwkv4,
    "rwkv7": rwkv7,
    "rwkv6": rwkv6,
    "rwkv5": rwkv5,
    "gpt2": gpt2,
    "gpt_neox": gpt_neox,
    "llama": llama,
}
_ALL: dict[str, tuple[Callable[[], torch.nn.Module], str]] = {
    name: (factory, get_card(name).mixer_kind) for name, factory in _FACTORIES.items()
}

FAMILIES: dict[str, Callable[[], torch.nn.Module]] = {
    name: factory for name, (factory, kind) in _ALL.items() if kind == "none" or kind in MIXER_KINDS
}
RECURRENT = [name for name, (_, kind) in _ALL.items() if kind != "none" and kind in MIXER_KINDS]
TRANSFORMERS = [name for name, (_, kind) in _ALL.items() if kind == "none"]


@functools.cache
def state_hooks(family: str) -> tuple[str, str, str]:
    """(write hook, readout hook, carried-in hook) of the main recurrent state, under ``layers[i].mixer``.

    Read off the family's mixer: its one ``state_write`` and one ``state_readout`` hook point, and the
    carried-in hook named after the readout (``hook_ssm_state`` -> ``hook_ssm_state_in``).
    """
    model = nnsight_rnn.install(FAMILIES[family]())
    card = nnsight_rnn.get_card(family)
    mixer = get_module(layers_of(model, card)[0], card.modules["mixer"])
    points = {name: hp for name, hp in mixer.named_children() if isinstance(hp, HookPoint)}
    (write,) = [n for n, hp in points.items() if hp.kind == "state_write"]
    (readout,) = [n for n, hp in points.items() if hp.kind == "state_readout"]
    assert f"{readout}_in" in points, f"{family}: no carried-in hook {readout}_in"
    return write, readout, f"{readout}_in"


class _StateHooks:
    """``STATE_HOOKS[family]`` -> :func:`state_hooks` (computed from the mixer on first use)."""

    def __getitem__(self, family: str) -> tuple[str, str, str]:
        return state_hooks(family)

    def get(self, family: str | None, default: Any = None) -> Any:
        return state_hooks(family) if family in RECURRENT else default

    def __contains__(self, family: object) -> bool:
        return family in RECURRENT

    def __iter__(self) -> Any:
        return iter(RECURRENT)


STATE_HOOKS = _StateHooks()


def last_block_reach(model: torch.nn.Module) -> int:
    """Positions after t whose logits an edit of the last mixer's output at t reaches through the rest of the
    last block: 0 where the block is position-wise after the mixer (Mamba), 1 where its MLP token-shifts its
    input (RWKV's channel mix), read off the model."""
    card = nnsight_rnn.card_for(model)
    mlp = card.modules.get("mlp")
    layer = layers_of(model, card)[-1]
    return 1 if mlp and isinstance(get_module(layer, mlp), TokenShiftMixer) else 0


class _CrossLayerHooks:
    """``CROSS_LAYER_HOOKS.get(family)``: the mixer hook through which a layer reads an earlier layer's
    activations other than the residual stream (RWKV-7's value residual), declared by the mixer class
    (``cross_layer_hooks``). Patching a residual alone does not screen off the clean run there."""

    def get(self, family: str | None, default: Any = None) -> Any:
        card = get_card(family) if family in FAMILIES else None
        hooks = MIXER_KINDS[card.mixer_kind].cross_layer_hooks if card and card.mixer_kind in MIXER_KINDS else ()
        return hooks[0] if hooks else default


CROSS_LAYER_HOOKS = _CrossLayerHooks()
