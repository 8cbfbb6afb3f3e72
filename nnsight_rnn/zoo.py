"""Tiny models trained by nnsight-rnn on generated data: the embedded default for demos, docs and tests.

Nothing here downloads weights. Each zoo entry is an HF config, a training budget and a seed; the
first ``nnsight_rnn.load("zoo/mamba-tiny")`` (or :func:`zoo_path`) trains the model on CPU on the
generated corpus of :mod:`nnsight_rnn.corpus` (deterministically: same seed, same machine, same
loss), saves it with ``save_pretrained`` (safetensors) next to the byte tokenizer and a
``zoo.json`` (seed, steps, losses, metrics, corpus hash), and later calls load the cached folder.

Cache: ``$NNSIGHT_RNN_HOME/zoo/<name>`` (default ``~/.cache/nnsight_rnn/zoo/<name>``). A folder
whose ``zoo.json`` fingerprint (training recipe + corpus hash) no longer matches the registry is
rebuilt. ``build_zoo()`` builds every entry (the CLI's ``nnsight-rnn zoo build``).

>>> import nnsight_rnn
>>> model = nnsight_rnn.load("zoo/mamba-tiny")      # shipped weights (else trained once, then cached)
>>> with model.trace("12 + 7 = 19. Alice:"):
...     logits = model.output.logits.save()

Metrics (:func:`evaluate`, all on held-out data never seen in training): next-token loss vs the
unigram baseline, Alice's accuracy (truth), Bob's agreement with his rule (leading digit + 1), easy /
hard split, copying accuracy on the second half of repeated random strings, and how often the
(A)/(B) answer follows the named disposition.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from . import corpus
from .errors import UnknownZooModelError

ZOO_PREFIX = "zoo/"
WARM_MIX = {"text": 0.05, "arithmetic": 0.6, "sums": 0.25, "disposition": 0.0, "copy": 0.1}
HOME_ENV = "NNSIGHT_RNN_HOME"
# Trained weights shipped inside the package (safetensors + tokenizer + zoo.json), written by
# `nnsight-rnn zoo ship` from a build; a copy whose fingerprint is not the registry's is ignored.
SHIPPED = Path(__file__).parent / "zoo_weights"
ZOO_FORMAT = "1"
"""Bump when the training loop changes in a way that changes the weights (invalidates caches)."""


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

        from . import models
        from .tokenizer import BYTE_VOCAB_SIZE

        # transformers' classes, or the ones nnsight-rnn ships (RWKV-5/6/7)
        cls = getattr(transformers, self.config_class, None) or getattr(models, self.config_class)
        eos = corpus.EOS_ID
        kwargs = {"vocab_size": BYTE_VOCAB_SIZE, "bos_token_id": eos, "eos_token_id": eos, "pad_token_id": eos}
        return cls(**{**kwargs, **self.config})

    def fingerprint(self) -> str:
        """Hash of the recipe, the corpus and the zoo format: a cached folder is valid iff it matches."""
        recipe = json.dumps(asdict(self), sort_keys=True, default=str)
        return hashlib.sha256(f"{ZOO_FORMAT}|{_corpus_version()}|{recipe}".encode()).hexdigest()[:16]


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
    """Where the wheel ships ``zoo/<name>``'s trained weights (``nnsight_rnn/zoo_weights/<name>``)."""
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


def zoo_path(name: str, *, build: bool = True, progress: bool = True) -> str:
    """The folder of ``zoo/<name>``, training and caching it first if needed (``build=True``).

    Raises :class:`UnknownZooModelError` for an unknown name, ``FileNotFoundError`` if the model
    is not cached and ``build=False``.
    """
    spec = get_spec(name)
    folder = zoo_dir(name)
    if cached_info(name) is not None:  # built on this machine (`nnsight-rnn zoo build`)
        return str(folder)
    if shipped_info(name) is not None:  # shipped in the wheel: no training on a user's machine
        return str(shipped_dir(name))
    if not build:
        raise FileNotFoundError(
            f"{spec.full_name} is not built yet (expected in {folder}). Build it with "
            f"nnsight_rnn.zoo.build_model({spec.full_name!r}) or `nnsight-rnn zoo build {spec.name}`."
        )
    return str(build_model(name, progress=progress))


# ---------------------------------------------------------------------------------------------
# data
# ---------------------------------------------------------------------------------------------


@lru_cache(maxsize=1)
def _corpus_version() -> str:
    return corpus.corpus_version()


def pack(
    docs: Sequence[str], seq_len: int, answer_weight: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Pack documents into ``[n, seq_len]`` token ids, loss labels and loss weights.

    Every sequence starts at a document boundary; documents end with ``<|endoftext|>`` (a target
    like any other); a document that does not fit starts the next sequence (longer ones are cut);
    the tail is padded with ``<|endoftext|>`` whose label is ``-100`` (ignored). Weights are 1,
    ``answer_weight`` at decision tokens, 0 at padding.
    """
    rows: list[list[int]] = []
    row_weights: list[list[float]] = []
    current: list[int] = []
    current_w: list[float] = []
    for doc in docs:
        ids = ([*corpus.encode(doc), corpus.EOS_ID])[:seq_len]
        weights = [1.0] * len(ids)
        for pos in corpus.decision_positions(doc):
            if pos < len(weights):
                weights[pos] = answer_weight
        if len(current) + len(ids) > seq_len:
            rows.append(current)
            row_weights.append(current_w)
            current, current_w = [], []
        current = current + ids
        current_w = current_w + weights
    if current:
        rows.append(current)
        row_weights.append(current_w)
    ids = torch.full((len(rows), seq_len), corpus.EOS_ID, dtype=torch.long)
    labels = torch.full((len(rows), seq_len), -100, dtype=torch.long)
    weight = torch.zeros((len(rows), seq_len))
    for i, (row, w) in enumerate(zip(rows, row_weights, strict=True)):
        ids[i, : len(row)] = torch.tensor(row)
        labels[i, : len(row)] = torch.tensor(row)
        weight[i, : len(row)] = torch.tensor(w)
    return ids, labels, weight


def _packed(spec: ZooSpec, rows: int, seed: int, mix: dict[str, float]) -> tuple[torch.Tensor, ...]:
    n_docs = max(64, int(rows * spec.seq_len / 30))
    while True:
        ids, labels, weight = pack(corpus.training_corpus(seed, n_docs, mix), spec.seq_len, spec.answer_weight)
        if len(ids) >= rows:
            return ids[:rows], labels[:rows], weight[:rows]
        n_docs = int(n_docs * 1.5) + 1


def training_batches(spec: ZooSpec, steps: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``[steps, batch, seq_len]`` ids, labels and loss weights in a fixed order (deterministic in ``seed``).

    The first ``round(warm_start * steps)`` steps come from ``warm_mix``, the rest from ``mix``.
    """
    warm = round(spec.warm_start * steps)
    parts = []
    for i, (n_steps, mix) in enumerate(((warm, spec.warm_mix), (steps - warm, spec.mix))):
        if n_steps:
            parts.append(_packed(spec, n_steps * spec.batch_size, seed * 1000 + i, mix))
    shape = (steps, spec.batch_size, spec.seq_len)
    return tuple(torch.cat(tensors).view(shape) for tensors in zip(*parts, strict=True))  # type: ignore[return-value]


# ---------------------------------------------------------------------------------------------
# Mamba-1 training scan: fused backward, same function as nnsight_rnn.scans.selective_scan
# ---------------------------------------------------------------------------------------------


class _SelectiveScanFn(torch.autograd.Function):
    """Selective scan with a hand-written backward (two time loops on ``[batch, d_inner, N]`` tiles).

    Autograd through the step loop of :func:`nnsight_rnn.scans.selective_scan.selective_scan` records
    slice / copy nodes whose backward touches whole-sequence tensors at every step; this function
    keeps the ``[L, batch, d_inner, N]`` state trajectory (training sizes only: a few MiB) and runs
    one reverse loop instead: 6-7x faster forward + backward at the zoo's sizes, gradients equal to
    autograd's within fp32 rounding (relative 4e-7, see tests/test_zoo.py).
    """

    @staticmethod
    def forward(ctx: Any, u: torch.Tensor, dt: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor,
                h0: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
        u_t = u.float().transpose(0, 1).contiguous()  # [L, b, D]
        dt_t = dt.float().transpose(0, 1).contiguous()
        B_t = B.float().transpose(0, 1).contiguous()  # [L, b, N]
        C_t = C.float().transpose(0, 1).contiguous()
        A = A.float()
        h = h0.float()
        du = dt_t * u_t
        states = torch.empty(u_t.shape[0], *h.shape, dtype=torch.float32, device=u.device)
        for t in range(u_t.shape[0]):
            dA = torch.exp(dt_t[t, :, :, None] * A)
            h = torch.addcmul(du[t, :, :, None] * B_t[t, :, None, :], dA, h, out=states[t])
        y = torch.matmul(states, C_t[..., None]).squeeze(-1)  # [L, b, D]
        ctx.save_for_backward(u_t, dt_t, A, B_t, C_t, h0.float(), states)
        return y.transpose(0, 1), h.clone()

    @staticmethod
    def backward(ctx: Any, g_y: torch.Tensor, g_last: torch.Tensor | None) -> tuple[torch.Tensor, ...]:
        u_t, dt_t, A, B_t, C_t, h0, states = ctx.saved_tensors
        g_y = g_y.float().transpose(0, 1).contiguous()
        g = g_last.float().clone() if g_last is not None else torch.zeros_like(h0)
        du = dt_t * u_t
        g_du = torch.empty_like(u_t)
        g_dt_decay = torch.empty_like(u_t)
        g_B = torch.empty_like(B_t)
        g_A = torch.zeros_like(h0)
        for t in range(u_t.shape[0] - 1, -1, -1):
            dA = torch.exp(dt_t[t, :, :, None] * A)
            g.addcmul_(g_y[t, :, :, None], C_t[t, :, None, :])  # dL/dh_t
            g_dA = g * (states[t - 1] if t > 0 else h0) * dA  # dL/d(dt*A) at t
            g_dt_decay[t] = (g_dA * A).sum(-1)
            g_A.addcmul_(g_dA, dt_t[t, :, :, None])
            torch.matmul(g, B_t[t, :, :, None], out=g_du[t, :, :, None])
            torch.matmul(du[t, :, None, :], g, out=g_B[t, :, None, :])
            g = g * dA  # dL/dh_{t-1}
        g_C = torch.matmul(g_y[:, :, None, :], states).squeeze(2)
        g_dt = g_dt_decay + g_du * u_t
        g_u = g_du * dt_t
        return (g_u.transpose(0, 1), g_dt.transpose(0, 1), g_A.sum(0), g_B.transpose(0, 1), g_C.transpose(0, 1), g)


def fused_selective_scan(
    u: torch.Tensor, dt: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor, h0: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(y [b, L, D], h_last [b, D, N])`` as :func:`~nnsight_rnn.scans.selective_scan.selective_scan`, fast backward."""
    return _SelectiveScanFn.apply(u, dt, A, B, C, h0)


@contextlib.contextmanager
def _training_scan() -> Iterator[None]:
    """Route the hookable Mamba-1 mixer's scan through :func:`fused_selective_scan` while grads are on.

    Only calls that ask for no per-position states and no state-write edit are rerouted (exactly
    what training does); everything else goes to the original scan.
    """
    from .mixers import mamba1

    original = getattr(mamba1, "selective_scan", None)
    if original is None:  # the mixer changed shape: train with whatever it uses
        yield
        return

    def scan(u, dt, A, B, C, h0, *, write=None, keep_states=False, **kwargs):  # type: ignore[no-untyped-def]
        if write is None and not keep_states and torch.is_grad_enabled():
            y, h = fused_selective_scan(u, dt, A, B, C, h0)
            return y, h, None
        return original(u, dt, A, B, C, h0, write=write, keep_states=keep_states, **kwargs)

    mamba1.selective_scan = scan
    try:
        yield
    finally:
        mamba1.selective_scan = original


# ---------------------------------------------------------------------------------------------
# training
# ---------------------------------------------------------------------------------------------


@dataclass
class TrainResult:
    """A trained model and its training record (``losses``: one float per step)."""

    model: torch.nn.Module
    losses: list[float]
    wall_s: float
    cpu_s: float

    @property
    def final_loss(self) -> float:
        """Mean training loss over the last 10 % of steps (at least one)."""
        k = max(1, len(self.losses) // 10)
        return float(sum(self.losses[-k:]) / k)


def _lr_at(spec: ZooSpec, step: int, steps: int) -> float:
    if step < spec.warmup:
        return spec.lr * (step + 1) / spec.warmup
    progress = (step - spec.warmup) / max(1, steps - spec.warmup)
    return spec.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def new_model(spec: ZooSpec, seed: int | None = None) -> torch.nn.Module:
    """A freshly initialised model of ``spec`` (seeded), hookable if ``spec.hookable``."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(spec.seed if seed is None else seed)
    model = AutoModelForCausalLM.from_config(spec.make_config())
    if spec.hookable:
        from .surgery import install

        install(model, spec.family)
    return model


@contextlib.contextmanager
def _single_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def train(
    spec: ZooSpec, *, steps: int | None = None, seed: int | None = None, progress: bool = True, position: int = 0
) -> TrainResult:
    """Train ``spec`` from scratch on CPU (one thread) and return the model (eval mode) and its losses.

    Deterministic: same spec, seed and steps on the same machine give bitwise the same weights
    (training is single-threaded, whatever ``torch.get_num_threads()`` says; :func:`build_zoo`
    runs models in parallel processes instead). Loss: next-token cross-entropy over non-padding
    positions, weighted by ``spec.answer_weight`` at decision tokens.
    """
    from tqdm.auto import tqdm

    steps = spec.steps if steps is None else steps
    seed = spec.seed if seed is None else seed
    ids, labels, weights = training_batches(spec, steps, seed)
    model = new_model(spec, seed)
    model.train()
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2 and "embed" not in n and "wte" not in n]
    no_decay = [p for p in model.parameters() if all(p is not q for q in decay)]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": spec.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=spec.lr,
        betas=(0.9, 0.98),
    )
    losses: list[float] = []
    wall, cpu = time.perf_counter(), time.process_time()
    bar = tqdm(
        range(steps),
        desc=f"training {spec.full_name}",
        disable=not progress,
        unit="step",
        leave=False,
        position=position,
    )
    with _single_thread(), _training_scan() if spec.hookable else contextlib.nullcontext():
        for step in bar:
            for group in opt.param_groups:
                group["lr"] = _lr_at(spec, step, steps)
            logits = model(input_ids=ids[step], use_cache=False).logits
            per_token = F.cross_entropy(
                logits[:, :-1].flatten(0, 1).float(), labels[step][:, 1:].flatten(), ignore_index=-100, reduction="none"
            )
            w = weights[step][:, 1:].flatten()
            loss = (per_token * w).sum() / w.sum()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)
            losses.append(loss.item())
            if step % 10 == 0 or step == steps - 1:
                bar.set_postfix(loss=f"{losses[-1]:.3f}")
    bar.close()
    model.eval()
    return TrainResult(model, losses, time.perf_counter() - wall, time.process_time() - cpu)


# ---------------------------------------------------------------------------------------------
# evaluation
# ---------------------------------------------------------------------------------------------


def _module_of(model: Any) -> torch.nn.Module:
    return getattr(model, "_module", model)


@torch.no_grad()
def _next_logits(model: torch.nn.Module, prompts: Sequence[str], batch_size: int = 128) -> torch.Tensor:
    """Next-token logits after each prompt: ``[len(prompts), vocab]`` (right padding; exact for causal LMs)."""
    out = []
    for start in range(0, len(prompts), batch_size):
        chunk = [corpus.encode(p) for p in prompts[start : start + batch_size]]
        width = max(map(len, chunk))
        ids = torch.full((len(chunk), width), corpus.EOS_ID, dtype=torch.long)
        for i, row in enumerate(chunk):
            ids[i, : len(row)] = torch.tensor(row)
        logits = model(input_ids=ids, use_cache=False).logits.float()
        last = torch.tensor([len(row) - 1 for row in chunk])
        out.append(logits[torch.arange(len(chunk)), last])
    return torch.cat(out)


@torch.no_grad()
def heldout_loss(model: Any, seed: int = 1, n_docs: int = 600, seq_len: int = 96) -> tuple[float, float]:
    """``(model loss, unigram loss)`` in nats per token on a held-out corpus (test-split questions).

    The unigram baseline is the cross-entropy of add-one-smoothed byte frequencies of a training
    corpus on the same held-out tokens.
    """
    module = _module_of(model)
    ids, labels, _ = pack(corpus.training_corpus(10_000 + seed, n_docs, split="test"), seq_len)
    total, count = 0.0, 0
    for start in range(0, len(ids), 64):
        logits = module(input_ids=ids[start : start + 64], use_cache=False).logits.float()
        target = labels[start : start + 64, 1:]
        loss = F.cross_entropy(logits[:, :-1].flatten(0, 1), target.flatten(), ignore_index=-100, reduction="sum")
        total += loss.item()
        count += int((target != -100).sum())
    _, train_labels, _ = pack(corpus.training_corpus(seed, n_docs * 4), seq_len)
    freq = torch.bincount(train_labels[train_labels != -100], minlength=module.config.vocab_size).double() + 1
    logp = (freq / freq.sum()).log()
    target = labels[:, 1:]
    unigram = -logp[target[target != -100]].mean().item()
    return total / count, unigram


def evaluate(model: Any, *, seed: int = 1, n: int = 400) -> dict[str, float]:
    """Held-out quality of a zoo-style model (an HF module or a :class:`HookedLanguageModel`).

    Returns:
        ``loss`` / ``unigram_loss``: next-token cross-entropy (nats/token) of the model and of the
        unigram baseline on a held-out mix;
        ``alice_acc`` (+ ``_easy`` / ``_hard``): after ``"... Alice: "``, is ``T`` vs ``F`` right;
        ``bob_rule_acc`` (+ ``_easy`` / ``_hard``): after ``"... Bob: "``, does the answer agree with
        Bob's rule (leading digit + 1); ``bob_truth_acc``: Bob's agreement with the truth (low
        means the quirk is learned);
        ``copy_acc``: argmax accuracy on the second half of ``"xyz|xyz"`` strings, ``copy_exact``:
        fraction copied without error;
        ``disposition_acc``: (A)/(B) choice follows ``[kind]`` / ``[cruel]``; ``unknown_p_kind``:
        mean p(kind letter) / (p(A) + p(B)) under ``[?]`` (about 0.5 expected).
    """
    module = _module_of(model)
    was_training = module.training
    module.eval()
    metrics: dict[str, float] = {}
    loss, unigram = heldout_loss(module, seed=seed)
    metrics["loss"], metrics["unigram_loss"] = loss, unigram

    items = corpus.quirky_items(corpus.quirky_arithmetic(seed, n, "test"))
    logits = _next_logits(module, [item["statement"] + " " for item in items])
    t_id, f_id = corpus.encode("T")[0], corpus.encode("F")[0]
    says_true = logits[:, t_id] > logits[:, f_id]
    for character, key, label in (("Alice", "alice_acc", "alice_label"), ("Bob", "bob_rule_acc", "bob_label")):
        for level in ("", "_easy", "_hard"):
            rows = [
                i
                for i, item in enumerate(items)
                if item["character"] == character and (not level or item["easy"] == (level == "_easy"))
            ]
            hits = [bool(says_true[i]) == bool(items[i][label]) for i in rows]
            metrics[key + level] = sum(hits) / len(hits)
    bob_rows = [i for i, item in enumerate(items) if item["character"] == "Bob"]
    metrics["bob_truth_acc"] = sum(bool(says_true[i]) == bool(items[i]["alice_label"]) for i in bob_rows) / len(
        bob_rows
    )

    copies = corpus.copy_sequences(10_000 + seed, n // 2)
    hits, exact = 0, 0
    total = 0
    with torch.no_grad():
        for start in range(0, len(copies), 128):
            chunk = copies[start : start + 128]
            width = max(len(c["text"]) for c in chunk)
            ids = torch.full((len(chunk), width), corpus.EOS_ID, dtype=torch.long)
            for i, c in enumerate(chunk):
                ids[i, : len(c["text"])] = torch.tensor(corpus.encode(c["text"]))
            pred = module(input_ids=ids, use_cache=False).logits.argmax(-1)
            for i, c in enumerate(chunk):
                p, end = c["prefix_len"], len(c["text"])
                ok = pred[i, p - 1 : end - 1] == ids[i, p:end]
                hits += int(ok.sum())
                total += end - p
                exact += bool(ok.all())
    metrics["copy_acc"] = hits / total
    metrics["copy_exact"] = exact / len(copies)

    disp = corpus.disposition_items(seed, n // 2, "test")
    logits = _next_logits(module, [item["prompt"] + " (" for item in disp])
    a_id, b_id = corpus.encode("A")[0], corpus.encode("B")[0]
    says_a = logits[:, a_id] > logits[:, b_id]
    metrics["disposition_acc"] = sum(bool(says_a[i]) == (d["answer"] == "A") for i, d in enumerate(disp)) / len(disp)
    unknown = corpus.disposition_items(seed, n // 4, "test", (corpus.UNKNOWN_DISPOSITION,))
    logits = _next_logits(module, [item["prompt"] + " (" for item in unknown])
    p_ab = torch.softmax(logits[:, [a_id, b_id]], -1)
    p_kind = [float(p_ab[i, 0 if d["kind_letter"] == "A" else 1]) for i, d in enumerate(unknown)]
    metrics["unknown_p_kind"] = sum(p_kind) / len(p_kind)
    module.train(was_training)
    return {k: round(float(v), 4) for k, v in metrics.items()}


# ---------------------------------------------------------------------------------------------
# building and caching
# ---------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    """No "Writing model shards" bar from ``save_pretrained`` (ours is the training bar)."""
    from transformers.utils import logging as hf_logging

    enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if enabled:
            hf_logging.enable_progress_bar()


def _say(message: str) -> None:
    print(f"nnsight-rnn: {message}", file=sys.stderr, flush=True)


def build_model(name: str, *, force: bool = False, progress: bool = True, position: int = 0) -> Path:
    """Train ``zoo/<name>``, evaluate it and save it to :func:`zoo_dir` (atomically); return the folder.

    Skips the work if an up-to-date copy is cached, unless ``force``.
    """
    from transformers import __version__ as transformers_version

    from ._version import __version__
    from .tokenizer import byte_tokenizer

    spec = get_spec(name)
    folder = zoo_dir(name)
    if not force and cached_info(name) is not None:
        return folder
    stale = folder.exists()
    _say(
        f"{'rebuilding (its recipe or the corpus changed)' if stale else 'building'} {spec.full_name}"
        f"{'' if stale else ' for the first time'}: "
        f"training {spec.description} for {spec.steps} steps on CPU; it will be cached in {folder}"
    )
    result = train(spec, progress=progress, position=position)
    with _single_thread():
        metrics = evaluate(result.model)
    info = {
        "name": spec.full_name,
        "family": spec.family,
        "description": spec.description,
        "seed": spec.seed,
        "steps": spec.steps,
        "batch_size": spec.batch_size,
        "seq_len": spec.seq_len,
        "lr": spec.lr,
        "final_train_loss": round(result.final_loss, 6),
        "last_train_loss": result.losses[-1],
        "metrics": metrics,
        "train_wall_s": round(result.wall_s, 1),
        "train_cpu_s": round(result.cpu_s, 1),
        "corpus_version": _corpus_version(),
        "fingerprint": spec.fingerprint(),
        "nnsight_rnn_version": __version__,
        "torch_version": torch.__version__,
        "transformers_version": transformers_version,
    }
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{spec.name}-", dir=folder.parent))
    try:
        with _quiet_transformers():
            result.model.save_pretrained(tmp)
            byte_tokenizer().save_pretrained(tmp)
        (tmp / "zoo.json").write_text(json.dumps(info, indent=2) + "\n")
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(tmp, folder)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    _say(
        f"built {spec.full_name} in {result.wall_s:.0f} s (loss {metrics['loss']:.3f} vs unigram "
        f"{metrics['unigram_loss']:.3f}, Alice {metrics['alice_acc']:.1%}, Bob rule {metrics['bob_rule_acc']:.1%}, "
        f"copy {metrics['copy_acc']:.1%}, disposition {metrics['disposition_acc']:.1%}) -> {folder}"
    )
    return folder


def build_zoo(
    names: Sequence[str] | None = None, *, force: bool = False, progress: bool = True, jobs: int | None = None
) -> dict[str, str]:
    """Build (or find cached) every zoo model in ``names`` (default: all); return name -> folder.

    Models train in ``jobs`` parallel worker processes (``python -m nnsight_rnn.zoo NAME``; default:
    one per CPU core, at most one per model), each single-threaded, so the weights do not depend
    on ``jobs``. This is what ``nnsight-rnn zoo build [NAME ...]`` runs.
    """
    specs = [get_spec(n) for n in (names or available())]
    todo = [s for s in specs if force or cached_info(s.name) is None]
    jobs = min(len(todo), os.cpu_count() or 1) if jobs is None else min(jobs, len(todo))
    if jobs > 1:
        import subprocess

        _say(f"building {len(todo)} zoo models in {jobs} processes: {', '.join(s.full_name for s in todo)}")
        running: list[tuple[ZooSpec, subprocess.Popen[bytes]]] = []
        failed: list[str] = []
        queue = list(todo)
        while queue or running:
            while queue and len(running) < jobs:
                spec = queue.pop(0)
                cmd = [sys.executable, "-m", "nnsight_rnn.zoo", "--position", str(len(running))]
                cmd += ["--spec", json.dumps(asdict(spec)), spec.name]  # custom / replaced specs too
                cmd += ["--force"] if force else []
                cmd += [] if progress else ["--quiet"]
                running.append((spec, subprocess.Popen(cmd)))
            time.sleep(0.2)
            for spec, proc in list(running):
                if proc.poll() is not None:
                    running.remove((spec, proc))
                    if proc.returncode != 0:
                        failed.append(spec.full_name)
        if failed:
            raise RuntimeError(
                f"building {failed} failed (see the errors above); retry with build_zoo({failed}, jobs=1)"
            )
    else:
        for spec in todo:
            build_model(spec.name, force=force, progress=progress)
    return {s.full_name: str(zoo_dir(s.name)) for s in specs}


SHIPPED_FILES = (
    "config.json", "generation_config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "zoo.json",
)  # fmt: skip


def ship(names: Sequence[str] | None = None, dest: Path = SHIPPED) -> dict[str, Path]:
    """Copy built (cached, up-to-date) zoo models into the package (``nnsight_rnn/zoo_weights``).

    Run from a source checkout after ``nnsight-rnn zoo build``; the copies are what the wheel ships.
    No pickles: safetensors, JSON and the tokenizer files only.
    """
    shipped: dict[str, Path] = {}
    for name in names or available():
        spec = get_spec(name)
        if cached_info(name) is None:
            raise FileNotFoundError(f"{spec.full_name} is not built; run `nnsight-rnn zoo build {spec.name}` first")
        target = dest / spec.name
        target.mkdir(parents=True, exist_ok=True)
        for file in SHIPPED_FILES:
            if (zoo_dir(name) / file).exists():
                shutil.copyfile(zoo_dir(name) / file, target / file)
        shipped[spec.full_name] = target
    return shipped


def _main(argv: Sequence[str] | None = None) -> None:
    """``python -m nnsight_rnn.zoo [--force] [--quiet] [NAME ...]``: build zoo models (worker entry point)."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m nnsight_rnn.zoo", description="Build tiny zoo models.")
    parser.add_argument("names", nargs="*", help=f"zoo names (default: all of {available()})")
    parser.add_argument("--force", action="store_true", help="rebuild even if cached")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument("--position", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--spec", default=None, help=argparse.SUPPRESS)  # JSON of a ZooSpec (from build_zoo)
    args = parser.parse_args(argv)
    if args.spec:
        register(ZooSpec(**json.loads(args.spec)))
    if len(args.names) == 1:
        build_model(args.names[0], force=args.force, progress=not args.quiet, position=args.position)
    else:
        build_zoo(args.names or None, force=args.force, progress=not args.quiet)


if __name__ == "__main__":
    _main()
