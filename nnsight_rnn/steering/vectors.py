"""Steering vectors: contrasts of residual streams or carried states, in the state's linear coordinates."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from ..carry import state_format
from ..state import RecurrentState
from .items import EncodedItems, chunks, dataset_sha256, left_pad

ARTIFACT_KIND = "steering_vectors"

# ---------------------------------------------------------------------------------------------
# linear coordinates of a family's carried state
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StateSpace:
    """How to average, subtract and add carried states of one state format (from the mixer's ``state_format``).

    Attributes:
        name: recorded with saved state vectors.
        to_linear: one layer's slots ``{slot: [b, ...]}`` -> coordinates in which the recurrence
            is linear (means and differences are taken there); may rename or drop slots.
        add: ``(slots, delta, alpha)`` -> new slots with ``alpha * delta`` (linear coordinates)
            added; must return the slots unchanged (bitwise) when ``alpha * delta`` is zero.
    """

    name: str
    to_linear: Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]]
    add: Callable[[dict[str, torch.Tensor], dict[str, torch.Tensor], float], dict[str, torch.Tensor]]


def state_space(model: Any) -> StateSpace:
    """The :class:`StateSpace` of ``model``'s card; raises ``ValueError`` for a model without state."""
    card = model.card
    if not card.is_recurrent:
        raise ValueError(
            f"{card.family!r} models carry no recurrent state; state steering needs a recurrent model "
            "(steer the residual stream with kind='residual' instead)"
        )
    fmt = state_format(card)  # declared by the family's mixer: no table here
    return StateSpace(fmt.linear_name, fmt.to_linear, fmt.add_linear)


# ---------------------------------------------------------------------------------------------
# steering vectors
# ---------------------------------------------------------------------------------------------


@dataclass
class SteeringVectors:
    """One steering vector per layer.

    Attributes:
        kind: ``"residual"`` (``vectors[i]``: ``[d_model]`` for ``layers[i].output``) or ``"state"``
            (``vectors[i]``: ``{slot: [...]}``, the layer's carried state in linear coordinates,
            shapes without the batch axis).
        vectors: layer -> vector.
        meta: free metadata saved with the vectors (dataset hash, hook, template, counts, ...).
    """

    kind: str
    vectors: dict[int, Any]
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in ("residual", "state"):
            raise ValueError(f"kind must be 'residual' or 'state', got {self.kind!r}")

    @property
    def layers(self) -> list[int]:
        return sorted(self.vectors)

    def at(self, layer: int) -> Any:
        if layer not in self.vectors:
            raise KeyError(f"no {self.kind} steering vector for layer {layer}; layers: {self.layers}")
        return self.vectors[layer]

    def norms(self) -> dict[int, float]:
        """L2 norm per layer (over all slots for state vectors)."""
        out = {}
        for i, v in self.vectors.items():
            parts = list(v.values()) if isinstance(v, dict) else [v]
            out[i] = float(torch.sqrt(sum((p.double() ** 2).sum() for p in parts)))
        return out

    def zeros_like(self) -> SteeringVectors:
        """Same layers and shapes, all zeros (a steer with it must leave outputs identical)."""
        zero: dict[int, Any] = {}
        for i, v in self.vectors.items():
            zero[i] = {k: torch.zeros_like(t) for k, t in v.items()} if isinstance(v, dict) else torch.zeros_like(v)
        return SteeringVectors(self.kind, zero, dict(self.meta))

    def tensors(self) -> dict[str, torch.Tensor]:
        """Flat ``{"layers.{i}" | "layers.{i}.{slot}": tensor}`` (the safetensors keys)."""
        flat = {}
        for i, v in self.vectors.items():
            if isinstance(v, dict):
                flat.update({f"layers.{i}.{k}": t for k, t in v.items()})
            else:
                flat[f"layers.{i}"] = v
        return flat

    def save(self, path: str, model: Any) -> None:
        """Write to the folder ``path`` (``tensors.safetensors`` + ``artifact.json`` with ``model``'s fingerprint)."""
        from ..artifacts import save_artifact

        meta = {**self.meta, "vector_kind": self.kind, "layers": self.layers, "card": model.card.family}
        save_artifact(path, ARTIFACT_KIND, self.tensors(), model, meta)

    @classmethod
    def load(cls, path: str, model: Any, *, allow_other_weights: bool = False) -> SteeringVectors:
        """Read vectors saved by :meth:`save`; raises ``ArtifactMismatchError`` if they were made on another
        architecture (or other weights, unless ``allow_other_weights``), naming what differs."""
        from ..artifacts import load_artifact

        art = load_artifact(path, model, ARTIFACT_KIND, allow_other_weights=allow_other_weights)
        kind = art.meta["vector_kind"]
        vectors: dict[int, Any] = {}
        for key, value in art.tensors.items():
            _, layer, *slot = key.split(".", 2)
            if kind == "state":
                vectors.setdefault(int(layer), {})[slot[0]] = value
            else:
                vectors[int(layer)] = value
        meta = {k: v for k, v in art.meta.items() if k != "vector_kind"}
        return cls(kind, vectors, meta)


def _layers_of(model: Any, layers: Sequence[int] | None) -> list[int]:
    n = len(model.layers)
    if layers is None:
        return list(range(n))
    out = []
    for layer in layers:
        if not -n <= layer < n:
            raise IndexError(f"layer {layer} is out of range: the model has {n} layers (0..{n - 1})")
        out.append(layer % n)
    return sorted(set(out))


def _caa_rows(enc: EncodedItems, letters: Sequence[int]) -> list[list[int]]:
    return [enc.prompts[i] + enc.prefixes[i] + [letters[i]] for i in range(len(enc))]


def run_states(model: Any, rows: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, RecurrentState]:
    """Last-position logits ``[B, V]`` and the carried state after each (left-padded, masked) row."""
    ids, mask = left_pad(rows, pad_id)
    with torch.no_grad(), model.trace(ids, attention_mask=mask, use_cache=True):
        logits = model.output.logits[:, -1].save()
        out = model.output.save()
    return logits, model.state_from_output(out)


def _mean_activation(
    model: Any, rows: Sequence[Sequence[int]], kind: str, layers: list[int], pad_id: int, batch_size: int
) -> dict[int, Any]:
    """Mean over rows of ``layers[i].output`` at the last token (``"residual"``) or of the carried
    state after the row in linear coordinates (``"state"``), accumulated in fp64."""
    total: dict[int, Any] = {}
    space = state_space(model) if kind == "state" else None
    for index in chunks(len(rows), batch_size):
        chunk = [rows[i] for i in index]
        if space is None:
            ids, mask = left_pad(chunk, pad_id)
            with torch.no_grad(), model.trace(ids, attention_mask=mask):
                acts = list().save()
                for i in layers:
                    acts.append(model.layers[i].output[:, -1])
            for i, act in zip(layers, acts, strict=True):
                part = act.double().sum(0)
                total[i] = total[i] + part if i in total else part
        else:
            _, state = run_states(model, chunk, pad_id)
            for i in layers:
                for k, v in space.to_linear(state.layers[i]).items():
                    part = v.double().sum(0)
                    slot = total.setdefault(i, {})
                    slot[k] = slot[k] + part if k in slot else part
    n = len(rows)
    return {i: ({k: t / n for k, t in v.items()} if isinstance(v, dict) else v / n) for i, v in total.items()}


def contrast_vectors(
    model: Any,
    positive: Sequence[Sequence[int]],
    negative: Sequence[Sequence[int]],
    kind: str = "residual",
    layers: Sequence[int] | None = None,
    *,
    pad_id: int | None = None,
    batch_size: int = 32,
    meta: dict[str, Any] | None = None,
) -> SteeringVectors:
    """Mean over ``positive`` token rows minus mean over ``negative`` rows, per layer (fp32).

    ``kind="residual"``: ``layers[i].output`` at each row's last token (``[d_model]``);
    ``kind="state"``: the carried state after each row, every slot, in the family's linear
    coordinates (:func:`state_space`; raises ``ValueError`` on a model without state).
    CAA (:func:`residual_vectors`, :func:`state_vectors`) is the case positive = prompt + prefix +
    matching letter, negative = the same with the other letter; other contrasts (e.g. prompts
    tagged ``[kind]`` vs ``[cruel]``, as in the demo) use this directly.
    """
    if kind not in ("residual", "state"):
        raise ValueError(f"kind must be 'residual' or 'state', got {kind!r}")
    if not positive or not negative:
        raise ValueError("contrast_vectors needs at least one positive and one negative row")
    layers = _layers_of(model, layers)
    if pad_id is None:
        tok = model.tokenizer
        pad_id = int(tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id or 0)
    pos = _mean_activation(model, positive, kind, layers, pad_id, batch_size)
    neg = _mean_activation(model, negative, kind, layers, pad_id, batch_size)
    if kind == "state":
        vectors: dict[int, Any] = {i: {k: (pos[i][k] - neg[i][k]).float() for k in pos[i]} for i in layers}
        extra = {"state_space": state_space(model).name, "slots": sorted(vectors[layers[0]])}
    else:
        vectors = {i: (pos[i] - neg[i]).float() for i in layers}
        extra = {}
    return SteeringVectors(kind, vectors, {"n_positive": len(positive), "n_negative": len(negative), **extra,
                                           **(meta or {})})  # fmt: skip


def _caa_meta(enc: EncodedItems, hook: str) -> dict[str, Any]:
    return {
        "method": "caa",
        "dataset_sha256": dataset_sha256(enc.items),
        "n_items": len(enc),
        "template": enc.template,
        "position": "answer letter (last token of prompt + prefix + letter)",
        "hook": hook,
    }


def residual_vectors(
    model: Any, enc: EncodedItems, layers: Sequence[int] | None = None, *, batch_size: int = 32
) -> SteeringVectors:
    """CAA vectors: mean of ``layers[i].output`` at the answer letter, matching minus non-matching.

    One no-grad trace per chunk of ``batch_size`` rows (left-padded, masked). Returns fp32
    ``[d_model]`` vectors for ``layers`` (default all).
    """
    return contrast_vectors(
        model, _caa_rows(enc, enc.matching), _caa_rows(enc, enc.other), "residual", layers,
        pad_id=enc.pad_id, batch_size=batch_size, meta=_caa_meta(enc, "layers.{layer}.output"),
    )  # fmt: skip


def state_vectors(
    model: Any, enc: EncodedItems, layers: Sequence[int] | None = None, *, batch_size: int = 32
) -> SteeringVectors:
    """State CAA vectors: mean carried state after ``prompt + prefix + letter``, matching minus non-matching.

    Every slot of each layer's state, in the family's linear coordinates (:func:`state_space`).
    Raises ``ValueError`` on a model without recurrent state.
    """
    hook = "carried state after prompt + prefix + letter (RecurrentState.layers[{layer}])"
    return contrast_vectors(
        model, _caa_rows(enc, enc.matching), _caa_rows(enc, enc.other), "state", layers,
        pad_id=enc.pad_id, batch_size=batch_size, meta=_caa_meta(enc, hook),
    )  # fmt: skip
