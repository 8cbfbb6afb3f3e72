"""The carried recurrent state as a plain, checkable object.

``RecurrentState.layers[i]`` maps slot names (``"conv"``, ``"ssm"`` for Mamba; see each mixer's
``state_slots``) to ``[batch, ...]`` tensors. It is what a prefix leaves behind and what a
continuation starts from: ``model.trace(suffix, state=state)``. Converting to the HF cache
always copies, so one state can seed many continuations (HF caches are mutated in place).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .cards import Card
from .errors import StateShapeError
from .mixers import mixer_class


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

    def clone(self) -> RecurrentState:
        return RecurrentState(self.family, [{k: v.clone() for k, v in layer.items()} for layer in self.layers])

    def detach(self) -> RecurrentState:
        return RecurrentState(self.family, [{k: v.detach() for k, v in layer.items()} for layer in self.layers])

    def to(self, *args: Any, **kwargs: Any) -> RecurrentState:
        return RecurrentState(
            self.family, [{k: v.to(*args, **kwargs) for k, v in layer.items()} for layer in self.layers]
        )

    def expand(self, batch: int) -> RecurrentState:
        """Repeat a batch-1 state for ``batch`` rows."""
        if self.batch_size != 1:
            raise StateShapeError(f"expand needs a batch-1 state; this one has batch {self.batch_size}")
        return RecurrentState(
            self.family, [{k: v.expand(batch, *v.shape[1:]).clone() for k, v in layer.items()} for layer in self.layers]
        )

    def validate(self, model: nn.Module, card: Card, batch: int | None = None) -> None:
        """Raise :class:`StateShapeError` naming the first slot whose shape, dtype or device is wrong, or that holds NaN / inf.

        Allowed dtypes: the model's parameter dtype and float32 (nothing is cast silently).
        """
        if self.family != card.family:
            raise StateShapeError(f"this state was made for a {self.family!r} model, not {card.family!r}")
        slots = mixer_class(card.mixer_kind).state_slots(model.config)
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


# --- HF storage formats, by card.state_format ------------------------------------------------


def _linear_cache_from_state(model: nn.Module, state: RecurrentState) -> dict[str, Any]:
    from .upstream import mamba_cache_kwargs, new_linear_cache, write_linear_cache

    cache = new_linear_cache(model.config)
    for i, layer in enumerate(state.layers):
        write_linear_cache(cache, i, layer["conv"].clone(), layer["ssm"].clone(), new_tokens=0)
    return {**mamba_cache_kwargs(cache), "use_cache": True}


def _linear_cache_to_state(model: nn.Module, card: Card, output: Any) -> RecurrentState:
    from .upstream import output_cache, read_linear_cache

    cache = output_cache(output)
    if cache is None:
        raise ValueError("the output carries no state: run the trace with use_cache=True (or state=...)")
    layers = []
    for i in range(model.config.num_hidden_layers):
        conv, ssm = read_linear_cache(cache, i)
        if conv is None or ssm is None:
            raise ValueError(f"layer {i} stored no state in this output's cache")
        layers.append({"conv": conv.clone(), "ssm": ssm.clone()})
    return RecurrentState(card.family, layers)


STATE_FORMATS: dict[str, tuple[Callable[..., dict[str, Any]], Callable[..., RecurrentState]]] = {
    "linear_attention_cache": (_linear_cache_from_state, _linear_cache_to_state),
}


def register_state_format(
    name: str,
    to_forward_kwargs: Callable[[nn.Module, RecurrentState], dict[str, Any]],
    from_output: Callable[[nn.Module, Card, Any], RecurrentState],
) -> None:
    """Teach nnsight-rnn how a family stores its carried state in HF forward kwargs / outputs."""
    STATE_FORMATS[name] = (to_forward_kwargs, from_output)


def _format(card: Card) -> tuple[Callable[..., dict[str, Any]], Callable[..., RecurrentState]]:
    if card.state_format not in STATE_FORMATS:
        raise ValueError(
            f"{card.family!r} models have no carried state (state_format={card.state_format!r}); "
            f"stateful families: formats {sorted(STATE_FORMATS)}"
        )
    return STATE_FORMATS[card.state_format]


def state_to_forward_kwargs(model: nn.Module, card: Card, state: RecurrentState, batch: int | None) -> dict[str, Any]:
    """Validate ``state`` and turn it into the HF forward kwargs that start from it (copies)."""
    if not isinstance(state, RecurrentState):
        raise TypeError(f"state= must be a nnsight_rnn.RecurrentState, got {type(state).__name__}")
    to_kwargs = _format(card)[0]
    state.validate(model, card, batch)
    return to_kwargs(model, state)


def state_from_output(model: nn.Module, card: Card, output: Any) -> RecurrentState:
    """The state an HF forward output carries out (``use_cache=True`` runs), as copies."""
    return _format(card)[1](model, card, output)


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
