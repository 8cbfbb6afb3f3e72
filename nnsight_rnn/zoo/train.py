"""Training a zoo model: deterministic, single-threaded, with progress."""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .data import training_batches
from .registry import ZooSpec
from .training_scan import training_scan

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
        from ..surgery import install

        install(model, spec.family)
    return model


@contextlib.contextmanager
def single_thread() -> Iterator[None]:
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
    with single_thread(), training_scan() if spec.hookable else contextlib.nullcontext():
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
