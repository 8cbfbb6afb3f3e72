"""The carried recurrent state as a plain, checkable object.

``RecurrentState.layers[i]`` maps slot names (``"conv"``, ``"ssm"`` for Mamba; see each mixer's
``state_slots``) to ``[batch, ...]`` tensors. It is what a prefix leaves behind and what a
continuation starts from: ``model.trace(suffix, state=state)``. Converting to the HF cache (the
mixer's ``state_format``, see :mod:`nnsight_rnn.carry`) always copies, so one state can seed many
continuations (HF caches are mutated in place).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .errors import StateShapeError


@dataclass
class RecurrentState:
    """Per-layer carried state of a recurrent model.

    Attributes:
        family: the card family it was made for (checked on use).
        layers: one dict per layer, slot name -> ``[batch, ...]`` tensor.
    """

    family: str
    layers: list[dict[str, torch.Tensor]]

    @property
    def batch_size(self) -> int:
        return next(iter(self.layers[0].values())).shape[0]

    def map(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> RecurrentState:
        """A new state with ``fn`` applied to every slot tensor (``state.map(torch.zeros_like)``); same family."""
        return RecurrentState(
            self.family, [{slot: fn(value) for slot, value in layer.items()} for layer in self.layers]
        )

    def clone(self) -> RecurrentState:
        return self.map(torch.Tensor.clone)

    def detach(self) -> RecurrentState:
        return self.map(torch.Tensor.detach)

    def to(self, *args: Any, **kwargs: Any) -> RecurrentState:
        return self.map(lambda value: value.to(*args, **kwargs))

    def expand(self, batch: int) -> RecurrentState:
        """Repeat a batch-1 state for ``batch`` rows."""
        if self.batch_size != 1:
            raise StateShapeError(f"expand needs a batch-1 state; this one has batch {self.batch_size}")
        return self.map(lambda value: value.expand(batch, *value.shape[1:]).clone())

    def validate(
        self, model: nn.Module, family: str, slots: dict[str, tuple[int, ...]], batch: int | None = None
    ) -> None:
        """Raise :class:`StateShapeError` naming the first slot whose shape, dtype or device is wrong, or that holds NaN / inf.

        Allowed dtypes: the model's parameter dtype and float32 (nothing is cast silently).
        """
        if self.family != family:
            raise StateShapeError(
                f"this state was made for a {self.family!r} model, not {family!r}: carry a state between models of "
                f"one family only; make one for this model with model.run_state(prefix) (or its trace's use_cache=True)"
            )
        n_layers = model.config.num_hidden_layers
        if len(self.layers) != n_layers:
            raise StateShapeError(f"state has {len(self.layers)} layers; the model has {n_layers}")
        batch = self.batch_size if batch is None else batch
        param = next(model.parameters())
        model_dtype, device = param.dtype, param.device
        allowed = {model_dtype, torch.float32}  # recurrent states are kept in fp32 even in half-precision models
        for i, layer in enumerate(self.layers):
            if set(layer) != set(slots):
                raise StateShapeError(f"layer {i} state has slots {sorted(layer)}; expected {sorted(slots)}")
            for name, shape in slots.items():
                t = layer[name]
                if not isinstance(t, torch.Tensor):
                    raise StateShapeError(f"layer {i} slot {name!r} is a {type(t).__name__}, not a tensor")
                expected = (batch, *shape)
                if tuple(t.shape) != expected:
                    hint = " (use state.expand(batch) for a batch-1 state)" if t.shape[0] == 1 and batch > 1 else ""
                    raise StateShapeError(
                        f"layer {i} slot {name!r} has shape {tuple(t.shape)}; expected {expected} "
                        f"[batch, {', '.join(map(str, shape))}]{hint}"
                    )
                if not t.is_floating_point() or t.dtype not in allowed:
                    raise StateShapeError(
                        f"layer {i} slot {name!r} has dtype {t.dtype}; this model's states are "
                        f"{' or '.join(map(str, sorted(allowed, key=str)))}: use state.to({model_dtype})"
                    )
                if t.device.type == "meta" or t.device != device:
                    raise StateShapeError(
                        f"layer {i} slot {name!r} is on {t.device}; the model is on {device}: use state.to({str(device)!r})"
                    )
                if not bool(torch.isfinite(t).all()):
                    raise StateShapeError(
                        f"layer {i} slot {name!r} holds NaN or inf values: the logits would be NaN. Check the edit or "
                        f"computation that produced this state"
                    )


def save_state(state: RecurrentState, path: str, model: Any) -> None:
    """Save a carried state (safetensors + JSON with the model's fingerprint)."""
    from .artifacts import save_artifact

    tensors = {f"{i}.{k}": v for i, layer in enumerate(state.layers) for k, v in layer.items()}
    save_artifact(path, "recurrent_state", tensors, model, {"family": state.family, "layers": len(state.layers)})


def load_state(path: str, model: Any, *, allow_other_weights: bool = False) -> RecurrentState:
    """Load a state saved by :func:`save_state`, refusing one made on another model."""
    from .artifacts import load_artifact

    art = load_artifact(path, model, "recurrent_state", allow_other_weights=allow_other_weights)
    layers: list[dict[str, torch.Tensor]] = [{} for _ in range(art.meta["layers"])]
    for key, value in art.tensors.items():
        i, _, slot = key.partition(".")
        layers[int(i)][slot] = value
    return RecurrentState(art.meta["family"], layers)
