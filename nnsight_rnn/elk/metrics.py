"""AUROC and the per-layer summaries of Mallen et al. (best layer, earliest informative layer)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import torch


def require_sklearn() -> None:
    """Raise an ImportError that says how to install scikit-learn (the probes and AUROC use it)."""
    try:
        import sklearn  # noqa: F401
    except ImportError as e:
        raise ImportError(
            "nnsight_rnn.elk's probes and AUROC use scikit-learn: pip install 'nnsight-rnn[elk]' "
            "(or pip install scikit-learn)"
        ) from e


def auroc(scores: Sequence[float] | torch.Tensor, labels: Sequence[int] | torch.Tensor) -> float:
    """Area under the ROC curve of ``scores`` for binary ``labels`` (scikit-learn); NaN if one class is missing."""
    require_sklearn()
    from sklearn.metrics import roc_auc_score

    y = np.asarray(torch.as_tensor(labels).cpu().numpy()).astype(int).ravel()
    s = np.asarray(torch.as_tensor(scores).detach().cpu().double().numpy()).ravel()
    if len(np.unique(y)) < 2:
        return math.nan
    return float(roc_auc_score(y, s))


def accuracy(
    scores: Sequence[float] | torch.Tensor, labels: Sequence[int] | torch.Tensor, threshold: float = 0.0
) -> float:
    """Fraction of items with ``(score > threshold) == label``."""
    y = torch.as_tensor(labels).bool().cpu()
    s = torch.as_tensor(scores).cpu() > threshold
    return float((s == y).float().mean()) if len(y) else math.nan


def best_layer(per_layer: Mapping[int, float]) -> int:
    """The layer with the highest AUROC (the earliest one on ties; NaNs ignored)."""
    valid = {k: v for k, v in per_layer.items() if not math.isnan(v)}
    if not valid:
        raise ValueError("no layer has a finite AUROC")
    top = max(valid.values())
    return min(k for k, v in valid.items() if v == top)


def earliest_informative_layer(per_layer: Mapping[int, float], fraction: float = 0.95) -> int:
    """First layer with ``AUROC - 0.5 >= fraction * (max AUROC - 0.5)`` (Mallen et al.), layers in index order.

    If no layer is above chance, the best layer.
    """
    valid = {k: v for k, v in per_layer.items() if not math.isnan(v)}
    if not valid:
        raise ValueError("no layer has a finite AUROC")
    top = max(valid.values()) - 0.5
    threshold = fraction * top if top > 0 else top  # no layer above chance: the best one
    return min(k for k, v in valid.items() if v - 0.5 >= threshold)
