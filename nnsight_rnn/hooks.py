"""Identity hook points that nnsight, TransformerLens-style torch hooks and our own mixers share.

A :class:`HookPoint` is an ``nn.Module`` whose ``forward`` returns its input. Because it is a
module called inside ``forward``, nnsight turns it into an envoy (``.output`` read and write),
and plain torch forward hooks (``register_forward_hook``) see and may replace its value.

Expensive hook points (per-position recurrent states, ``[batch, pos, ...]`` with a state
per position) are only *computed* when someone listens: :meth:`HookPoint.wanted` says whether a
torch hook is registered, an nnsight worker is parked on (or a cache observes) this point's
output in the running trace, or ``force`` was set. Mixers ask before building such tensors.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

# nnsight 0.8 stores its per-module controller state under this key in ``module.__dict__``;
# ``State.active()`` returns ``(interleaver, path, (input_loc, skip_loc, output_loc))``.
_NNSIGHT_STATE_KEY = "__nnsight__"


class HookPoint(nn.Module):
    """An identity module that marks a named activation.

    Attributes:
        name: the hook's full name (``"blocks.3.mixer.hook_ssm_state"``), set by
            :func:`name_hook_points`; ``None`` until the model is set up.
        pos_dim: index of the position axis of the value (1 for ``[batch, pos, ...]``) or
            ``None`` for values without one (carried states ``[batch, ...]``).
        kind: ``"activation"``, ``"state_readout"``, ``"state_write"`` or ``"state_carried"``:
            what an edit of this value means (see docs/state-semantics.md).
        expensive: computed only when :meth:`wanted` is true.
        force: compute even with nobody listening (used by capture helpers).
        positions: for expensive per-position hooks, the positions to compute (``None``: all).
            The value then has ``len(positions)`` entries on the position axis, in the order
            given; edits apply to those positions with the hook's usual semantics. Memory and
            time of the hook scale with ``len(positions)`` instead of the sequence length.
    """

    def __init__(
        self,
        *,
        pos_dim: int | None = 1,
        kind: str = "activation",
        expensive: bool = False,
        doc: str = "",
    ) -> None:
        super().__init__()
        self.name: str | None = None
        self.pos_dim = pos_dim
        self.kind = kind
        self.expensive = expensive
        self.doc = doc
        self.force = False
        self.positions: list[int] | None = None

    def forward(self, x: Any) -> Any:
        return x

    def __call__(self, x: Any, *args: Any, **kwargs: Any) -> Any:
        out = super().__call__(x, *args, **kwargs)
        if out is not x and isinstance(x, torch.Tensor):  # edited (nnsight ``.output = ...`` or a torch hook)
            ensure_tensor(out, self.name or type(self).__name__, x)
            if out.is_floating_point() and out.device.type != "meta" and not bool(torch.isfinite(out).all()):
                if bool(torch.isfinite(x).all()):
                    raise ValueError(
                        f"the edit of hook {self.name!r} put NaN or inf values into it (the unedited value had "
                        f"none): the outputs would be NaN from here on"
                    )
        return out

    def wanted(self) -> bool:
        """Whether anyone will read or write this hook's value in the current call (no side effects).

        True if torch hooks are registered on it, ``force`` is set, or an nnsight trace that is
        running has a worker parked on / a cache observing this module's input or output. If
        nnsight's internals cannot be read (another nnsight version), it answers True whenever a
        trace is running: correct, only slower.
        """
        if self.force or self._forward_hooks or self._forward_pre_hooks:
            return True
        interleaver, locations = self._active()
        if interleaver is None:
            return False
        try:
            # A worker pinned to a later step (``tracer.iter[k]``) is parked too.
            return any(loc in interleaver.parked or interleaver.observers.get(loc) for loc in locations)
        except Exception:
            return True

    def fires(self) -> bool:
        """Decide whether this call computes the (expensive) value; call once per forward.

        Returns :meth:`wanted`. When it is False the visit is still counted in the running
        nnsight trace, exactly as if the hook had been called, so that step indices
        (``tracer.iter[k]``) of this hook stay aligned with generation steps.
        """
        if self.wanted():
            return True
        interleaver, locations = self._active()
        if interleaver is not None:
            for loc in locations:
                interleaver.counts[loc] = interleaver.counts.get(loc, 0) + 1
        return False

    def _active(self) -> tuple[Any, tuple[str, ...]]:
        state = self.__dict__.get(_NNSIGHT_STATE_KEY)
        if state is None:
            return None, ()
        try:
            interleaver, _, locations = state.active()
        except Exception:
            return None, ()
        return interleaver, tuple(locations)

    def extra_repr(self) -> str:
        return f"kind={self.kind}, pos_dim={self.pos_dim}" + (", expensive" if self.expensive else "")


def select_positions(positions: list[int] | None, length: int, name: str | None) -> list[int] | None:
    """Normalise a position selection against a call of ``length`` positions (negatives count from the end)."""
    if positions is None:
        return None
    out = []
    for p in positions:
        if not -length <= p < length:
            raise IndexError(
                f"position {p} is out of range for hook {name or '?'}: this call has {length} positions "
                f"(valid: {-length}..{length - 1}). During generation each decode step is a call of 1 position."
            )
        out.append(p % length)
    if len(set(out)) != len(out):
        raise ValueError(f"positions for hook {name or '?'} repeat a position: {positions}")
    return out


def hook_points(module: nn.Module) -> dict[str, HookPoint]:
    """All hook points below ``module`` by their module path (``"backbone.layers.0.mixer.hook_x"``)."""
    return {name: m for name, m in module.named_modules() if isinstance(m, HookPoint)}


def ensure_tensor(value: Any, name: str, like: torch.Tensor) -> torch.Tensor:
    """Check that a hook returned a tensor of the shape it was given (edits must keep shape)."""
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"hook {name!r} must return a tensor shaped {tuple(like.shape)}, got {type(value).__name__}")
    if value.shape != like.shape:
        raise ValueError(
            f"hook {name!r} returned shape {tuple(value.shape)}; expected {tuple(like.shape)} "
            "(edits must keep the shape: [batch, pos, ...] for per-position hooks)"
        )
    return value
