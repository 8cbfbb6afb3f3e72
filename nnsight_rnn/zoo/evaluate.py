"""Held-out quality of a zoo model (loss, the quirky characters, copying, dispositions)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from .. import corpus
from .data import pack

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
