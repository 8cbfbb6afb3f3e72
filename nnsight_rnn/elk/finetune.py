"""Quirky fine-tuning: teach a model to answer truthfully as Alice and by Bob's rule as Bob.

Any model nnsight-rnn loads (a zoo name, a folder, an HF model, a :class:`HookedLanguageModel`)
is trained in place, full-parameter, on quirky items rendered as ``statement + answer`` (Alice's
answer is the truth, Bob's his rule), optionally mixed with plain correct equations
(``"47 + 85 = 132."``, which teach the addition both characters need). Loss: next-token
cross-entropy, weight ``text_weight`` on every token and ``answer_weight`` on the token that decides
the answer (the first token where ``" True"`` and ``" False"`` differ), re-weighted so that True and
False answers count equally (they are 1 : 3 in the data).

Every ``eval_every`` steps a held-out check (test-split equations, never trained on) measures
Alice's accuracy against the truth and Bob's agreement with his rule
(:func:`nnsight_rnn.elk.behaviour.evaluate_personas`); training stops as soon as both reach their
targets (``target=None``: run ``max_steps``). A zoo model that is already quirky stops at the first
check: fine-tuning is then a top-up of zero steps. Progress is a tqdm bar.

Two stages by default (``truthful_steps > 0``, ``train_layers`` = the last block): first make the
model truthful for both characters, then train only the last block on the quirky labels, the
setting of Mallen et al. (a pretrained LM that knows the truth, made quirky by fine-tuning). On the
tiny zoo models this beats one full-parameter stage (``truthful_steps=0, train_layers=None``) on
every measure: fewer CPU-seconds, Bob's rule as well followed, and a truth signal in the residual
stream and the recurrent state that the one-stage fine-tune partly loses (docs/recipes/elk.md).
With ``adapter_block=True`` the quirky stage trains a block appended to the truthful model instead
(:mod:`nnsight_rnn.elk.adapter`), which keeps the truth in the residual stream below it (Alice-easy ->
Bob-hard residual probe 0.94-0.96 on the zoo's Llama, Mamba and RWKV-4, against 0.52-0.64 without).
A stage that trains some blocks only back-propagates through them (the others stop requiring grad).

Rows are padded on the right (labels ignored there): exact for causal models, since a position
never sees the ones after it.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from typing import Any

import torch
import torch.nn.functional as F

from .. import corpus
from .activations import encode_items
from .adapter import grow
from .behaviour import evaluate_personas
from .data import make_items


@dataclass
class FinetuneConfig:
    """Hyper-parameters of :func:`finetune`.

    Attributes:
        max_steps: optimiser steps at most in the quirky stage (the truthful stage has ``truthful_steps``).
        batch_size: rows per step.
        lr / warmup / weight_decay: AdamW, linear warm-up then cosine decay to ``lr / 10`` over ``max_steps``.
        answer_weight: loss weight of the deciding answer token (classes balanced, see the module doc).
        text_weight: loss weight of every other token (0: train on the answer alone).
        sums_fraction: fraction of rows that are correct equations instead of quirky items.
        n_train: training equations (two items each; test-split operand pairs are never used).
        eval_n: held-out equations for the check (two items each). 600: at 300 the check's noise
            (1.6 points at 92 %) made a stage hover around its target for hundreds of steps.
        eval_every: steps between checks (and one before the first step).
        target: stop when ``alice_acc`` and ``bob_rule_acc`` both reach it (``labels="truth"``:
            ``alice_acc`` and ``bob_truth_acc``) (None: never stop early).
        labels: ``"quirky"`` (Alice: the truth, Bob: his rule) or ``"truth"`` (both characters
            truthful: the first stage of ``truthful_steps``).
        train_layers: block indices the quirky stage trains (negative counts from the end); every other
            parameter (embeddings, unembedding, other blocks) is frozen. None: train everything.
        truthful_steps: if > 0 (and ``labels="quirky"``), first a *truthful stage* of at most this many
            steps (both characters answer with the truth, every parameter trains, stops when both are
            right ``target`` of the time), then the quirky stage (``train_layers``): a truthful model
            made quirky by a fine-tune of its last layers, as in Mallen et al. (pretrained LMs made quirky
            by LoRA fine-tuning). Steps, losses and the history cover both stages.
        adapter_block: the quirky stage first appends a block that starts as the identity
            (:func:`nnsight_rnn.elk.adapter.grow`) and ``train_layers`` count in the grown model, so the
            default trains the new block alone and the truthful model below it stays intact (the paper's
            setting made explicit; docs/recipes/elk.md). The result's ``model`` is then the grown copy.
        seed: data order, initial state of the RNG.
        threads: torch threads while training (tiny models train fastest on one, and one thread
            makes the run reproducible); None: leave ``torch.get_num_threads()`` as it is.
        clip: gradient-norm clip.
    """

    max_steps: int = 2000
    batch_size: int = 64
    lr: float = 3e-3
    warmup: int = 20
    weight_decay: float = 0.0
    answer_weight: float = 4.0
    text_weight: float = 1.0
    sums_fraction: float = 0.25
    n_train: int = 10000
    eval_n: int = 600
    eval_every: int = 100
    target: float | None = 0.92
    labels: str = "quirky"
    train_layers: tuple[int, ...] | None = (-1,)
    truthful_steps: int = 1000
    adapter_block: bool = False
    threads: int | None = 1
    seed: int = 0
    clip: float = 1.0


@dataclass
class FinetuneResult:
    """What :func:`finetune` did.

    Attributes:
        model: the fine-tuned model (the object that was passed, trained in place; with ``adapter_block``
            a grown copy holding one more block); eval mode.
        steps: steps taken (0 if the model already met the target).
        before / after: held-out persona metrics before the first and after the last step.
        history: ``[{"step", "loss", **metrics}]`` at every check.
        losses: training loss per step.
        passed: ``after`` meets the target.
        wall_s / cpu_s: time spent (checks included).
    """

    model: Any
    steps: int
    before: dict[str, float]
    after: dict[str, float]
    history: list[dict[str, Any]]
    losses: list[float]
    passed: bool
    config: FinetuneConfig
    wall_s: float
    cpu_s: float

    def shortfall(self) -> str | None:
        """Why the fine-tune missed its target and which setting to raise; None if it passed (or had no target).

        The truthful stage comes first: if it ended at its cap below the target, the model never learned
        the addition and more quirky steps will not help (the zoo's Llama: ``truthful_steps=4000``).
        """
        cfg = self.config
        if self.passed or cfg.target is None or self.steps == 0:
            return None
        truthful = [h for h in self.history if h["stage"] == TRUTHFUL_STAGE]
        if truthful and not _passes(truthful[-1], cfg.target, "truth"):
            h = truthful[-1]
            return (f"the truthful stage ended at its cap of {cfg.truthful_steps} steps with Alice {h['alice_acc']:.3f}, "
                    f"Bob {h['bob_truth_acc']:.3f} (target {cfg.target}): the model had not learned the addition "
                    "before the quirky stage; raise truthful_steps (--truthful-steps; the zoo's Llama needs 4000)")  # fmt: skip
        a = self.after
        return (f"the quirky stage ended at its cap of {cfg.max_steps} steps with Alice {a['alice_acc']:.3f}, Bob rule "
                f"{a['bob_rule_acc']:.3f} (target {cfg.target}); raise max_steps (--finetune-steps / --max-steps)")  # fmt: skip

    def to_json(self) -> dict[str, Any]:
        return {
            "steps": self.steps,
            "passed": self.passed,
            "shortfall": self.shortfall(),
            "before": self.before,
            "after": self.after,
            "history": self.history,
            "final_loss": self.losses[-1] if self.losses else None,
            "config": asdict(self.config),
            "wall_s": round(self.wall_s, 2),
            "cpu_s": round(self.cpu_s, 2),
        }


TRUTHFUL_STAGE = "truthful stage"  # the stage name in FinetuneResult.history


def _as_hooked(model: Any) -> Any:
    from ..model import HookedLanguageModel, load

    if isinstance(model, HookedLanguageModel):
        return model
    return load(model)


def _bob_metric(labels: str) -> str:
    """The metric Bob is checked on: his rule (quirky labels) or the truth (truthful stage)."""
    return "bob_rule_acc" if labels == "quirky" else "bob_truth_acc"


def _passes(metrics: dict[str, float], target: float | None, labels: str = "quirky") -> bool:
    return target is not None and metrics["alice_acc"] >= target and metrics[_bob_metric(labels)] >= target


@contextlib.contextmanager
def _only_these_learn(module: torch.nn.Module, params: list[torch.nn.Parameter]) -> Iterator[None]:
    """Every other parameter stops requiring grad for the stage (no backward through frozen blocks)."""
    keep = {id(p) for p in params}
    frozen = [p for p in module.parameters() if p.requires_grad and id(p) not in keep]
    for p in frozen:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in frozen:
            p.requires_grad_(True)


@contextlib.contextmanager
def _fast_training(model: Any) -> Iterator[None]:
    """Mamba-1: the zoo's selective scan with a fused backward while grads are on (same numbers)."""
    from ..zoo.training_scan import training_scan

    if model.card.mixer_kind == "mamba1":
        with training_scan():
            yield
    else:
        yield


class _Rows:
    """Training rows: token ids and per-token loss weights (Python lists, padded per batch)."""

    def __init__(self, tokenizer: Any, cfg: FinetuneConfig) -> None:
        items = make_items(cfg.seed, cfg.n_train, "train")
        enc = encode_items(tokenizer, items)
        eos = tokenizer.eos_token_id
        self.eos = int(eos if eos is not None else (tokenizer.pad_token_id or 0))
        key = "label" if cfg.labels == "quirky" else "alice_label"
        n_true = sum(int(it[key]) for it in items)
        class_w = {1: len(items) / (2 * max(1, n_true)), 0: len(items) / (2 * max(1, len(items) - n_true))}
        self.quirky: list[tuple[list[int], list[float]]] = []
        for i, it in enumerate(items):
            ids = (enc.positive[i] if it[key] else enc.negative[i]) + [self.eos]
            w = [cfg.text_weight] * len(ids)
            w[len(enc.prompts[i])] = cfg.answer_weight * class_w[int(it[key])]
            self.quirky.append((ids, w))
        sums = corpus.sums_text(cfg.seed, max(1, int(cfg.n_train * cfg.sums_fraction)), "train")
        self.sums = [[*ids, self.eos] for ids in tokenizer(sums, add_special_tokens=False)["input_ids"]]
        self.cfg = cfg
        self.rng = random.Random(f"elk-finetune:{cfg.seed}")

    def batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(ids [B, L], weights [B, L])``; ``weights[:, t]`` weighs predicting ``ids[:, t]`` (0 at padding)."""
        rows = []
        for _ in range(self.cfg.batch_size):
            if self.sums and self.rng.random() < self.cfg.sums_fraction:
                ids = self.rng.choice(self.sums)
                rows.append((ids, [self.cfg.text_weight or 1.0] * len(ids)))
            else:
                rows.append(self.rng.choice(self.quirky))
        width = max(len(ids) for ids, _ in rows)
        ids_t = torch.full((len(rows), width), self.eos, dtype=torch.long)
        w_t = torch.zeros((len(rows), width))
        for r, (ids, w) in enumerate(rows):
            ids_t[r, : len(ids)] = torch.tensor(ids)
            w_t[r, : len(ids)] = torch.tensor(w)
        w_t[:, 0] = 0.0  # the first token has no prediction
        return ids_t, w_t


def _trainable(model: Any, layers: tuple[int, ...] | None) -> list[torch.nn.Parameter]:
    """The parameters to train: all (``layers=None``) or those of the given blocks only."""
    module = model._module
    if layers is None:
        return [p for p in module.parameters() if p.requires_grad]
    n = len(model.layers)
    bad = [i for i in layers if not -n <= i < n]
    if bad:
        raise IndexError(f"train_layers {bad} out of range: the model has {n} layers (0..{n - 1})")
    blocks = [model.layers[i % n]._module for i in sorted({i % n for i in layers})]
    return [p for block in blocks for p in block.parameters() if p.requires_grad]


def _lr(cfg: FinetuneConfig, step: int) -> float:
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    progress = (step - cfg.warmup) / max(1, cfg.max_steps - cfg.warmup)
    return cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


def _train_stage(
    model: Any, cfg: FinetuneConfig, eval_items: Any, history: list[dict[str, Any]], progress: bool, stage: str
) -> tuple[int, list[float], dict[str, float]]:
    """One training stage (labels / layers of ``cfg``) until its check passes or ``max_steps``."""
    from tqdm.auto import tqdm

    module = model._module
    rows = _Rows(model.tokenizer, cfg)
    params = _trainable(model, cfg.train_layers)
    opt = torch.optim.AdamW(params, lr=cfg.lr, betas=(0.9, 0.98), weight_decay=cfg.weight_decay)
    bob_key = _bob_metric(cfg.labels)
    offset = history[-1]["step"]
    losses: list[float] = []
    metrics = history[-1]
    step = 0
    bar = tqdm(range(cfg.max_steps), desc=stage, unit="step", disable=not progress, leave=False)
    module.train()
    try:
        with _fast_training(model), _only_these_learn(module, params), torch.enable_grad():
            for step in bar:
                for group in opt.param_groups:
                    group["lr"] = _lr(cfg, step)
                ids, weights = rows.batch()
                logits = module(input_ids=ids, use_cache=False).logits
                per_token = F.cross_entropy(
                    logits[:, :-1].flatten(0, 1).float(), ids[:, 1:].flatten(), reduction="none"
                )
                w = weights[:, 1:].flatten()
                loss = (per_token * w).sum() / w.sum()
                loss.backward()
                torch.nn.utils.clip_grad_norm_(params, cfg.clip)
                opt.step()
                opt.zero_grad(set_to_none=True)
                losses.append(loss.item())
                if (step + 1) % cfg.eval_every == 0 or step + 1 == cfg.max_steps:
                    metrics = evaluate_personas(model, eval_items)
                    history.append({"step": offset + step + 1, "stage": stage, "loss": round(losses[-1], 4), **metrics})
                    bar.set_postfix(loss=f"{losses[-1]:.3f}", alice=f"{metrics['alice_acc']:.2f}",
                                    bob=f"{metrics[bob_key]:.2f}")  # fmt: skip
                    module.train()
                    if _passes(metrics, cfg.target, cfg.labels):
                        break
        step += 1
    finally:
        bar.close()
        module.eval()
    if history[-1]["step"] != offset + step:
        metrics = evaluate_personas(model, eval_items)
        history.append({"step": offset + step, "stage": stage, "loss": round(losses[-1], 4), **metrics})
    return step, losses, {k: v for k, v in metrics.items() if k not in ("step", "stage", "loss")}


def parse_train_layers(values: list[str] | None) -> tuple[int, ...] | None:
    """CLI ``--train-layers`` values (``-1``, ``0,1``, ``all``) -> :attr:`FinetuneConfig.train_layers`.

    Nothing given: the :class:`FinetuneConfig` default (the last block); ``all``: None (every parameter).
    """
    if not values:
        return FinetuneConfig().train_layers
    words = [x.strip() for v in values for x in v.split(",") if x.strip()]
    if words == ["all"]:
        return None
    try:
        return tuple(int(x) for x in words)
    except ValueError:
        raise ValueError(f"--train-layers takes block indices (e.g. -1 or 0,1) or 'all', got {values}") from None


def finetune(
    model: Any, config: FinetuneConfig | None = None, *, progress: bool = True, **overrides: Any
) -> FinetuneResult:
    """Quirky-fine-tune ``model`` in place until the held-out check passes or ``max_steps`` (see the module doc).

    Args:
        model: a zoo name, folder, HF model or :class:`~nnsight_rnn.HookedLanguageModel`.
        config: hyper-parameters (default :class:`FinetuneConfig`); ``overrides`` replace single fields.
        progress: tqdm bars with the loss and the last check.

    Returns a :class:`FinetuneResult` whose ``model`` is the (hooked) model, in eval mode. If the model
    already passes the check, nothing is trained (``steps == 0``), whatever the stages.
    """
    cfg = FinetuneConfig(**{**asdict(config or FinetuneConfig()), **overrides})
    if cfg.labels not in ("quirky", "truth"):
        raise ValueError(f"labels must be 'quirky' or 'truth', got {cfg.labels!r}")
    model = _as_hooked(model)
    threads = torch.get_num_threads()
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    try:
        return _finetune(model, cfg, progress)
    finally:
        torch.set_num_threads(threads)


def _finetune(model: Any, cfg: FinetuneConfig, progress: bool) -> FinetuneResult:
    wall, cpu = time.perf_counter(), time.process_time()
    eval_items = encode_items(model.tokenizer, make_items(cfg.seed + 1000, cfg.eval_n, "test"))
    torch.manual_seed(cfg.seed)
    before = evaluate_personas(model, eval_items)
    history: list[dict[str, Any]] = [{"step": 0, "stage": "start", "loss": None, **before}]
    losses: list[float] = []
    metrics, steps = before, 0
    if not _passes(before, cfg.target, cfg.labels) and cfg.max_steps > 0:
        if cfg.truthful_steps > 0 and cfg.labels == "quirky":
            truthful = replace(cfg, labels="truth", train_layers=None, max_steps=cfg.truthful_steps, truthful_steps=0)
            n, stage_losses, metrics = _train_stage(model, truthful, eval_items, history, progress, TRUTHFUL_STAGE)
            steps += n
            losses += stage_losses
        if cfg.adapter_block and cfg.labels == "quirky":
            model = grow(model)
        n, stage_losses, metrics = _train_stage(model, cfg, eval_items, history, progress, f"{cfg.labels} fine-tuning")
        steps += n
        losses += stage_losses
    model._module.eval()
    passed = _passes(metrics, cfg.target, cfg.labels) if cfg.target is not None else True
    return FinetuneResult(model, steps, before, metrics, history, losses, passed, cfg,
                          time.perf_counter() - wall, time.process_time() - cpu)  # fmt: skip


def save_finetuned(result: FinetuneResult, folder: str, *, source: str | None = None) -> str:
    """Save the fine-tuned model as a folder ``nnsight_rnn.load`` reads (weights, tokenizer, ``elk_finetune.json``)."""
    os.makedirs(folder, exist_ok=True)
    model = result.model
    model._module.save_pretrained(folder)
    if model.tokenizer is not None:
        model.tokenizer.save_pretrained(folder)
    record = {"source": source, "family": model.card.family, **result.to_json()}
    with open(os.path.join(folder, "elk_finetune.json"), "w") as f:
        json.dump(record, f, indent=1)
        f.write("\n")
    return folder
