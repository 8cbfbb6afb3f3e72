"""Bounded capture of per-position recurrent states: only the layers and positions asked for.

A full trajectory costs ``batch * L * (state size)`` per layer (Mamba-130m: 96 KiB per layer per
position in fp32, 4.5 GiB for 24 layers at L=2048). Three ways, cheapest memory last:

- :func:`capture_states`: each selected layer's readout hook (``kind == "state_readout"``) computes
  the selected positions only; the scan stores ``len(positions)`` states instead of L, and other
  layers store none. ``positions=None`` gives one layer's whole trajectory.
- :func:`capture_scan_inputs` + :func:`recompute_states`: keep only the scan inputs (Mamba:
  ``x_act, dt, B, C`` and the carried state in, ~10x smaller than the states) and recompute any
  positions later, without running the model again. Exact for unpadded rows.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch

from .hooks import HookPoint


def readout_hooks(model: Any, layer: int) -> dict[str, HookPoint]:
    """The per-position state (readout) hook points of one layer's mixer, by attribute name."""
    mixer = model.layers[layer].mixer._module
    found = {n: m for n, m in mixer.named_children() if isinstance(m, HookPoint) and m.kind == "state_readout"}
    if not found:
        raise ValueError(f"layer {layer} ({model.card.family}) has no per-position state hooks")
    return found


@contextmanager
def positions_selected(hooks: list[HookPoint], positions: list[int] | None) -> Iterator[None]:
    """Temporarily restrict expensive hooks to ``positions`` (``None``: all positions)."""
    before = [h.positions for h in hooks]
    for h in hooks:
        h.positions = None if positions is None else list(positions)
    try:
        yield
    finally:
        for h, p in zip(hooks, before, strict=True):
            h.positions = p


def capture_states(
    model: Any,
    inputs: Any,
    layers: list[int],
    positions: list[int] | None = None,
    **trace_kwargs: Any,
) -> dict[int, dict[str, torch.Tensor]]:
    """Per-position states of ``layers`` at ``positions`` for ``inputs`` (one no-grad trace).

    Returns ``{layer: {hook_name: [batch, P, ...]}}`` with P = ``len(positions)`` (or L when
    ``positions`` is None), states in fp32. Negative positions count from the end; an
    out-of-range position raises ``IndexError`` naming the valid range.
    """
    n_layers = len(model.layers)
    for layer in layers:
        if not -n_layers <= layer < n_layers:
            raise IndexError(f"layer {layer} is out of range: the model has {n_layers} layers")
    layers = [layer % n_layers for layer in layers]
    names = {layer: list(readout_hooks(model, layer)) for layer in layers}
    all_hooks = [readout_hooks(model, layer)[n] for layer in layers for n in names[layer]]
    with positions_selected(all_hooks, positions), torch.no_grad(), model.trace(inputs, **trace_kwargs):
        saved = dict().save()
        for layer in sorted(layers):
            for name in names[layer]:
                saved[(layer, name)] = getattr(model.layers[layer].mixer, name).output
    out: dict[int, dict[str, torch.Tensor]] = {}
    for (layer, name), value in saved.items():
        out.setdefault(layer, {})[name] = value
    return out


def capture_scan_inputs(
    model: Any, inputs: Any, layers: list[int], **trace_kwargs: Any
) -> dict[int, dict[str, torch.Tensor]]:
    """The values of each layer's ``scan_input_hooks`` for ``inputs`` (one no-grad trace)."""
    n_layers = len(model.layers)
    layers = sorted({layer % n_layers for layer in layers})
    names = {layer: model.layers[layer].mixer._module.scan_input_hooks for layer in layers}
    for layer, hooks in names.items():
        if not hooks:
            raise ValueError(f"layer {layer} ({model.card.family}) declares no scan inputs to recompute states from")
    with torch.no_grad(), model.trace(inputs, **trace_kwargs):
        saved = dict().save()
        for layer in layers:
            for name in names[layer]:
                saved[(layer, name)] = getattr(model.layers[layer].mixer, name).output
    out: dict[int, dict[str, torch.Tensor]] = {}
    for (layer, name), value in saved.items():
        out.setdefault(layer, {})[name] = value
    return out


def recompute_states(
    model: Any, layer: int, scan_inputs: dict[str, torch.Tensor], positions: list[int] | None = None
) -> torch.Tensor:
    """The layer's readout states ``[batch, P, ...]`` at ``positions`` from :func:`capture_scan_inputs` values."""
    mixer = model.layers[layer].mixer._module
    with torch.no_grad():
        return mixer.recompute_states(scan_inputs, positions)
