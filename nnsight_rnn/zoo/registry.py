"""The zoo registry: specs (recipe + config), where models live (cache, shipped copies), documented quality."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from .. import corpus
from ..errors import UnknownZooModelError

ZOO_PREFIX = "zoo/"
WARM_MIX = {"text": 0.05, "arithmetic": 0.6, "sums": 0.25, "disposition": 0.0, "copy": 0.1}
HOME_ENV = "NNSIGHT_RNN_HOME"
# Trained weights shipped inside the package (safetensors + tokenizer + zoo.json), written by
# `nnsight-rnn zoo ship` from a build; a copy whose fingerprint is not the registry's is ignored.
SHIPPED = Path(__file__).parent / "weights"
ZOO_FORMAT = "1"
"""Bump when the training loop changes in a way that changes the weights (invalidates caches)."""


@lru_cache(maxsize=1)
def corpus_version() -> str:
    return corpus.corpus_version()


# ---------------------------------------------------------------------------------------------
# registry
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ZooSpec:
    """One zoo model: an HF config plus its training recipe.

    Attributes:
        name: short name without the prefix (``"mamba-tiny"``).
        family: nnsight-rnn card family (``"mamba"``, ``"gpt2"``, ...).
        config_class: class name in ``transformers`` (``"MambaConfig"``).
        config: keyword arguments of the config (``vocab_size`` is always the byte vocabulary, 257).
        steps: optimizer steps.
        batch_size / seq_len: sequences per step, tokens per sequence (documents are packed,
            separated by ``<|endoftext|>``, each sequence starts at a document boundary).
        lr / weight_decay / warmup: AdamW, linear warm-up, cosine decay to ``lr / 10``.
        mix: task proportions of the corpus (:func:`corpus.training_corpus`).
        warm_start / warm_mix: the first ``warm_start`` fraction of steps uses ``warm_mix``
            (arithmetic-heavy: the addition circuit forms late and needs many decisions), the rest ``mix``.
        answer_weight: loss weight of the one-token decisions (``T``/``F`` of an arithmetic
            answer, ``A``/``B`` of a two-choice answer; :func:`corpus.decision_positions`); 1 elsewhere.
        seed: seeds initialisation (``torch.manual_seed``) and the corpus.
        hookable: train through :func:`nnsight_rnn.install` (Mamba-1: our scan, with a fused
            backward for training) instead of the stock HF module.
        description: one line for listings.
    """

    name: str
    family: str
    config_class: str
    config: dict[str, Any]
    steps: int
    batch_size: int = 24
    seq_len: int = 96
    lr: float = 5e-3
    weight_decay: float = 0.01
    warmup: int = 30
    seed: int = 0
    hookable: bool = False
    description: str = ""
    answer_weight: float = 10.0
    mix: dict[str, float] = field(default_factory=lambda: dict(corpus.DEFAULT_MIX))
    warm_start: float = 0.0
    warm_mix: dict[str, float] = field(default_factory=lambda: dict(WARM_MIX))

    @property
    def full_name(self) -> str:
        return ZOO_PREFIX + self.name

    def make_config(self) -> Any:
        import transformers

        from .. import models
        from ..tokenizer import BYTE_VOCAB_SIZE

        # transformers' classes, or the ones nnsight-rnn ships (RWKV-5/6/7)
        cls = getattr(transformers, self.config_class, None) or getattr(models, self.config_class)
        eos = corpus.EOS_ID
        kwargs = {"vocab_size": BYTE_VOCAB_SIZE, "bos_token_id": eos, "eos_token_id": eos, "pad_token_id": eos}
        return cls(**{**kwargs, **self.config})

    def fingerprint(self) -> str:
        """Hash of the recipe, the corpus and the zoo format: a cached folder is valid iff it matches."""
        recipe = json.dumps(asdict(self), sort_keys=True, default=str)
        return hashlib.sha256(f"{ZOO_FORMAT}|{corpus_version()}|{recipe}".encode()).hexdigest()[:16]


def _spec(**kwargs: Any) -> ZooSpec:
    return ZooSpec(**kwargs)


_REGISTRY: dict[str, ZooSpec] = {}


def register(spec: ZooSpec) -> ZooSpec:
    """Add (or replace) a zoo entry; it is then loadable as ``zoo/<spec.name>``."""
    _REGISTRY[spec.name] = spec
    return spec


register(
    _spec(
        name="mamba-tiny",
        family="mamba",
        config_class="MambaConfig",
        config=dict(
            hidden_size=64, state_size=16, num_hidden_layers=2, intermediate_size=128, conv_kernel=4, time_step_rank=8
        ),
        steps=800,
        hookable=True,
        description="Mamba-1, 2 layers, d_model 64, d_inner 128, N 16",
    )
)
register(
    _spec(
        name="mamba2-tiny",
        family="mamba2",
        config_class="Mamba2Config",
        config=dict(
            hidden_size=64,
            state_size=16,
            num_hidden_layers=2,
            num_heads=8,
            head_dim=16,
            n_groups=1,
            expand=2,
            chunk_size=32,
            tie_word_embeddings=True,
        ),
        steps=800,
        description="Mamba-2, 2 layers, d_model 64, 8 heads x 16, N 16",
    )
)
register(
    _spec(
        name="rwkv4-tiny",
        family="rwkv4",
        config_class="RwkvConfig",
        config=dict(
            hidden_size=64,
            num_hidden_layers=2,
            attention_hidden_size=64,
            intermediate_size=256,
            context_length=256,
            rescale_every=0,
            tie_word_embeddings=False,
        ),
        steps=800,
        description="RWKV-4, 2 layers, d_model 64",
    )
)
register(
    _spec(
        name="rwkv7-tiny",
        family="rwkv7",
        config_class="Rwkv7Config",
        config=dict(
            hidden_size=64,
            num_hidden_layers=2,
            head_dim=16,
            intermediate_size=256,
            decay_low_rank_dim=16,
            a_low_rank_dim=16,
            v_low_rank_dim=16,
            gate_low_rank_dim=32,
            tie_word_embeddings=False,
        ),
        steps=800,
        description="RWKV-7, 2 layers, d_model 64, 4 heads x 16",
    )
)
register(
    _spec(
        name="gpt2-tiny",
        family="gpt2",
        config_class="GPT2Config",
        config=dict(n_embd=64, n_layer=2, n_head=4, n_positions=256),
        steps=1000,
        lr=3e-3,
        description="GPT-2 baseline, 2 layers, d_model 64, 4 heads",
    )
)
register(
    _spec(
        name="llama-tiny",
        family="llama",
        config_class="LlamaConfig",
        config=dict(
            hidden_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=4,
            intermediate_size=128,
            max_position_embeddings=256,
            tie_word_embeddings=True,
        ),
        steps=800,
        description="Llama baseline, 2 layers, d_model 64, 4 heads",
    )
)


QUALITY: dict[str, dict[str, float]] = {
    # Documented held-out quality each zoo model reaches (checked by tests/test_zoo.py, -m slow; measured
    # values in docs/zoo.md). "loss_ratio": model loss <= ratio * unigram loss; the rest are lower bounds
    # on evaluate()'s metrics (copy_acc: chance is 1/8). The quirky arithmetic is NOT learned in the
    # 10-CPU-minute budget (answers at the 75 % always-False baseline): the ELK recipe's quirky fine-tune
    # teaches it (nnsight_rnn.elk.finetune).
    "zoo/mamba-tiny": {"loss_ratio": 0.15, "disposition_acc": 0.95, "copy_acc": 0.4},
    "zoo/mamba2-tiny": {"loss_ratio": 0.15, "disposition_acc": 0.95, "copy_acc": 0.4},
    "zoo/rwkv4-tiny": {"loss_ratio": 0.15, "disposition_acc": 0.95, "copy_acc": 0.7},
    "zoo/rwkv7-tiny": {"loss_ratio": 0.15, "disposition_acc": 0.95, "copy_acc": 0.85},
    "zoo/llama-tiny": {"loss_ratio": 0.15, "disposition_acc": 0.95, "copy_acc": 0.3},
    # GPT-2: the disposition stays at chance at this budget (lr 3e-3 or 5e-3); copying barely above it
    "zoo/gpt2-tiny": {"loss_ratio": 0.18, "copy_acc": 0.15},
}


def available() -> list[str]:
    """Every registered zoo name, with the ``zoo/`` prefix."""
    return [ZOO_PREFIX + name for name in _REGISTRY]


def is_zoo_name(name: str) -> bool:
    return name.startswith(ZOO_PREFIX)


def get_spec(name: str) -> ZooSpec:
    """The spec of ``zoo/<name>`` (prefix optional); unknown names list the available ones."""
    short = name[len(ZOO_PREFIX) :] if is_zoo_name(name) else name
    if short not in _REGISTRY:
        import difflib

        near = difflib.get_close_matches(short, list(_REGISTRY), n=3, cutoff=0.4)
        hint = f" Did you mean {[ZOO_PREFIX + n for n in near]}?" if near else ""
        raise UnknownZooModelError(f"no zoo model named {name!r}.{hint} Available: {', '.join(available())}.")
    return _REGISTRY[short]


def zoo_home() -> Path:
    """``$NNSIGHT_RNN_HOME/zoo`` or ``~/.cache/nnsight_rnn/zoo``."""
    root = os.environ.get(HOME_ENV) or os.path.join(os.path.expanduser("~"), ".cache", "nnsight_rnn")
    return Path(root) / "zoo"


def zoo_dir(name: str) -> Path:
    """Where ``zoo/<name>`` is (or will be) cached."""
    return zoo_home() / get_spec(name).name


def shipped_dir(name: str) -> Path:
    """Where the wheel ships ``zoo/<name>``'s trained weights (``nnsight_rnn/zoo/weights/<name>``)."""
    return SHIPPED / get_spec(name).name


def shipped_info(name: str) -> dict[str, Any] | None:
    """The ``zoo.json`` of the shipped copy, or None if none is shipped or its recipe is not the registry's."""
    return _info_if_current(name, shipped_dir(name))


def cached_info(name: str) -> dict[str, Any] | None:
    """The ``zoo.json`` of a cached, up-to-date model, or None if it is missing or stale."""
    return _info_if_current(name, zoo_dir(name))


def _info_if_current(name: str, folder: Path) -> dict[str, Any] | None:
    spec = get_spec(name)
    info_path = folder / "zoo.json"
    try:
        info = json.loads(info_path.read_text())
    except (OSError, ValueError):
        return None
    return info if info.get("fingerprint") == spec.fingerprint() else None
