"""Training data for the zoo: the generated corpus packed into fixed-length batches."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .. import corpus
from .registry import ZooSpec

# ---------------------------------------------------------------------------------------------
# data
# ---------------------------------------------------------------------------------------------


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
