"""Sweeping layers and multipliers, and summarising the curves."""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import Any

import torch

from .apply import Steer, letter_logits
from .items import EncodedItems
from .vectors import SteeringVectors

# ---------------------------------------------------------------------------------------------
# sweeps
# ---------------------------------------------------------------------------------------------


def sweep(
    model: Any,
    enc: EncodedItems,
    vectors: SteeringVectors,
    layers: Sequence[int],
    multipliers: Sequence[float],
    *,
    also: Sequence[Steer] = (),
    slots: tuple[str, ...] | None = None,
    progress: bool = True,
    desc: str = "steering",
    batch_size: int = 32,
) -> list[dict[str, Any]]:
    """Mean p(matching) for every (layer, multiplier).

    Rows ``{layer, multiplier, p_matching, sem, logit_diff, p_items}`` (``p_items``: per test item,
    in item order).

    ``also``: steers applied in every cell too (e.g. a fixed residual steer while sweeping the
    state). ``logit_diff`` is the mean of ``logit_matching - logit_other``.
    """
    from tqdm.auto import tqdm

    cells = [(layer, float(m)) for layer in layers for m in multipliers]
    rows = []
    for layer, mult in tqdm(cells, desc=desc, disable=not progress, leave=False, unit="cell"):
        match, other = letter_logits(model, enc, Steer(vectors, layer, mult, slots), *also, batch_size=batch_size)
        p = torch.sigmoid(match - other)
        rows.append(
            {
                "layer": layer,
                "multiplier": mult,
                "p_matching": float(p.mean()),
                "sem": float(p.std() / math.sqrt(len(p))) if len(p) > 1 else 0.0,
                "logit_diff": float((match - other).mean()),
                "p_items": [round(float(x), 6) for x in p],
            }
        )
    return rows


def curve(rows: Sequence[dict[str, Any]], layer: int) -> list[tuple[float, float]]:
    """``[(multiplier, p_matching)]`` of one layer, sorted by multiplier."""
    return sorted((r["multiplier"], r["p_matching"]) for r in rows if r["layer"] == layer)


def effect(rows: Sequence[dict[str, Any]], layer: int) -> float:
    """p(matching) at the largest multiplier minus at the smallest (signed)."""
    c = curve(rows, layer)
    return c[-1][1] - c[0][1]


def effect_t(rows: Sequence[dict[str, Any]], layer: int) -> float:
    """Paired t statistic of the per-item shift p(largest multiplier) - p(smallest multiplier).

    The same items are scored under every multiplier, so the shift is paired: ``mean / (std / sqrt(n))``
    over items. A vector unrelated to the behaviour moves items with matching letter A and B in
    opposite directions (|t| small); a behaviour vector moves them together. ``inf`` if every item
    shifts by the same amount, 0 with one item.
    """
    cells = sorted((r for r in rows if r["layer"] == layer), key=lambda r: r["multiplier"])
    low, high = torch.tensor(cells[0]["p_items"]), torch.tensor(cells[-1]["p_items"])
    d = (high - low).double()
    if len(d) < 2:
        return 0.0
    sd = float(d.std())
    if sd == 0.0:
        return math.copysign(math.inf, float(d.mean())) if float(d.mean()) != 0 else 0.0
    return float(d.mean()) / (sd / math.sqrt(len(d)))


def best_layer(rows: Sequence[dict[str, Any]]) -> int:
    """The layer whose p(matching) moves most (largest :func:`effect`) across the multipliers."""
    layers = sorted({r["layer"] for r in rows})
    return max(layers, key=lambda layer: effect(rows, layer))


def is_monotonic(rows: Sequence[dict[str, Any]], layer: int) -> bool:
    """True if p(matching) strictly increases with the multiplier at ``layer``."""
    ps = [p for _, p in curve(rows, layer)]
    return all(b > a for a, b in itertools.pairwise(ps))
