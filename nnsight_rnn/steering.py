"""Contrastive activation addition (CAA) on the residual stream and on the carried recurrent state.

The method of Rimsky et al. (2024), "Steering Llama 2 via Contrastive Activation Addition", with
the same code on every architecture nnsight-rnn supports, and its recurrent-state analogue.

Data: A/B items in CAA's JSON format, a list of
``{"question", "answer_matching_behavior", "answer_not_matching_behavior"}`` where each answer is
an optional prefix and a letter (``" (A)"``, ``"(B)"``). :func:`encode_items` splits an item
into the prompt (``template.format(question=...)``), the answer prefix (``" ("``) and the two
letter tokens. The model's behaviour on an item is ``p(matching) / (p(A) + p(B))`` for the
letter token after ``prompt + prefix`` (:func:`score`); a number in (0, 1).

Vectors (:class:`SteeringVectors`, one per layer):

- ``kind="residual"``: mean over items of ``layers[i].output[letter position]`` for
  ``prompt + prefix + matching letter`` minus the same for the non-matching letter (CAA exactly).
  Applied (:class:`Steer`) by adding ``multiplier * vector`` to ``layers[i].output`` at every
  position after the prompt (the answer prefix when scoring, every generated token when
  generating). The edit propagates to later layers and positions.
- ``kind="state"`` (recurrent models only): the same contrast on the carried state each layer
  holds after ``prompt + prefix + letter`` (every slot of the family, e.g. Mamba's ``conv`` and
  ``ssm``, RWKV-4's token shifts and WKV numerator / denominator), taken in the family's
  *linear* state coordinates (the mixer's ``state_format``: identity for Mamba / Mamba-2; RWKV-4's
  ``(num, den, max)`` becomes ``num * e^max`` and ``den * e^max``, the quantities the
  recurrence is linear in). Applied by adding ``multiplier * vector`` to the state carried out
  of the prompt before the answer prefix is run from it; this edits what every later position
  reads.

:func:`contrast_vectors` takes any two sets of token rows (CAA is its special case; the demo's
``[kind]`` vs ``[cruel]`` prompts are another). :func:`sweep` scores every (layer, multiplier);
:func:`best_layer`, :func:`effect`, :func:`is_monotonic` and :func:`effect_t` (paired t statistic
of the per-item shift) summarise it.

Scoring and generation run the model in left-padded batches with an attention mask (each row
equals the row alone, see the padding tests of every card); a state edit runs the prompt, edits
the carried state and continues from it (exact continuation, see docs/state-semantics.md).

Vectors are saved with :mod:`nnsight_rnn.artifacts` (safetensors + JSON with the model's
fingerprint, the card, layers, hook and the dataset's hash) and refuse to load onto another
architecture or other weights with a message saying what differs.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from .carry import state_format
from .errors import SteeringDataError
from .state import RecurrentState

Item = dict[str, str]
ITEM_KEYS = ("question", "answer_matching_behavior", "answer_not_matching_behavior")
ARTIFACT_KIND = "steering_vectors"
DEFAULT_TEMPLATE = "{question}"


# ---------------------------------------------------------------------------------------------
# data
# ---------------------------------------------------------------------------------------------


def validate_items(items: Any, source: str = "items") -> list[Item]:
    """Check CAA-format items (list of dicts with :data:`ITEM_KEYS`, string values) and return them."""
    if not isinstance(items, list) or not items:
        raise SteeringDataError(
            f"{source}: expected a non-empty JSON list of CAA items {{{', '.join(ITEM_KEYS)}}}, "
            f"got {type(items).__name__}{' (empty)' if isinstance(items, list) else ''}"
        )
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise SteeringDataError(f"{source}: item {i} is a {type(item).__name__}, not an object")
        missing = [k for k in ITEM_KEYS if k not in item]
        if missing:
            raise SteeringDataError(
                f"{source}: item {i} lacks {missing}; CAA items have keys {list(ITEM_KEYS)} (it has {sorted(item)})"
            )
        bad = [k for k in ITEM_KEYS if not isinstance(item[k], str)]
        if bad:
            raise SteeringDataError(f"{source}: item {i} has non-string values for {bad}")
        split_answer(item["answer_matching_behavior"], f"{source}: item {i}")
        split_answer(item["answer_not_matching_behavior"], f"{source}: item {i}")
    return items


def load_items(path: str) -> list[Item]:
    """Read a CAA JSON file (a list of A/B items, e.g. Rimsky et al.'s ``generate_dataset.json``)."""
    try:
        with open(path) as f:
            data = json.load(f)
    except json.JSONDecodeError as e:
        raise SteeringDataError(f"{path} is not valid JSON ({e})") from e
    return validate_items(data, path)


def save_items(items: Sequence[Item], path: str) -> None:
    """Write items as a CAA JSON file (indented, stable key order)."""
    with open(path, "w") as f:
        json.dump(list(items), f, indent=1, ensure_ascii=False)
        f.write("\n")


def dataset_sha256(items: Sequence[Item]) -> str:
    """sha256 of the items' canonical JSON (key order and whitespace do not matter)."""
    canon = json.dumps([{k: item[k] for k in ITEM_KEYS} for item in items], sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(canon.encode()).hexdigest()


def disposition_dataset(split: str, n: int, seed: int = 0) -> list[Item]:
    """The zoo's A/B disposition task as CAA items (behaviour = the kind act; prompts tagged ``[?]``).

    ``split`` ``"train"`` / ``"test"`` have disjoint questions (:func:`nnsight_rnn.corpus.caa_items`).
    Under ``[?]`` a zoo model answers about 50 / 50, so steering can move it either way. Balanced
    like Rimsky et al.'s sets: the matching answer alternates ``(A)``, ``(B)``, ``(A)``, ... (first
    ``ceil(n / 2)`` kind-first and ``floor(n / 2)`` kind-second questions of the generator's stream),
    so the letter itself cancels exactly in a mean difference.
    """
    from .corpus import caa_items

    pool = caa_items(seed, 4 * n + 8, split)
    by_letter = {
        letter: [item for item in pool if item["answer_matching_behavior"] == f" ({letter})"] for letter in "AB"
    }
    return [by_letter["AB"[i % 2]][i // 2] for i in range(n)]


_PAREN_LETTER = re.compile(r"\((?P<letter>[A-Za-z])(?:\)|$)")
_BARE_LETTER = re.compile(r"^(?P<prefix>\s*)(?P<letter>[A-Za-z])(?:\W|$)")


def split_answer(answer: str, where: str = "answer") -> tuple[str, str]:
    """``" (A)"`` -> ``(" (", "A")``: the answer prefix (everything before the letter) and the letter.

    The letter is the first one in parentheses (``"(A)"``, ``" Answer: (B)"``, ``"(A) Yes"``), or a
    bare leading letter (``"A"``, ``" B."``). Raises :class:`SteeringDataError` otherwise.
    """
    m = _PAREN_LETTER.search(answer)
    if m is not None:
        return answer[: m.start("letter")], m.group("letter")
    m = _BARE_LETTER.match(answer)
    if m is not None:
        return m.group("prefix"), m.group("letter")
    raise SteeringDataError(
        f"{where}: cannot find the answer letter in {answer!r}; CAA answers look like '(A)' or ' (B)'"
    )


# ---------------------------------------------------------------------------------------------
# tokenised items
# ---------------------------------------------------------------------------------------------


@dataclass
class EncodedItems:
    """Items as token ids, ready for :func:`score` and the vector functions.

    Attributes:
        prompts: ids of each prompt (``template`` applied to the question).
        prefixes: ids of the answer prefix after the prompt (``" ("``), at least one token.
        matching / other: id of the matching / non-matching answer letter after ``prompt + prefix``.
        items: the source items.
        template: the prompt template (``"{question}"`` by default).
        pad_id: the id used for (masked) left padding.
    """

    prompts: list[list[int]]
    prefixes: list[list[int]]
    matching: list[int]
    other: list[int]
    items: list[Item]
    template: str = DEFAULT_TEMPLATE
    pad_id: int = 0

    def __len__(self) -> int:
        return len(self.items)


def _tokens(tokenizer: Any, text: str) -> list[int]:
    return list(tokenizer(text)["input_ids"])


def encode_items(tokenizer: Any, items: Sequence[Item], template: str = DEFAULT_TEMPLATE) -> EncodedItems:
    """Tokenise items: prompt, answer prefix, and the two letter tokens.

    Raises :class:`SteeringDataError` naming the item if the two answers have different prefixes,
    the prefix is empty (steering applies after the prompt, so it needs at least one position
    before the letter), or the tokenizer does not give the letter as one token after
    ``prompt + prefix``.
    """
    if "{question}" not in template:
        raise SteeringDataError(f"template {template!r} must contain '{{question}}'")
    items = validate_items(list(items))
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    enc = EncodedItems([], [], [], [], list(items), template, int(pad or 0))
    for i, item in enumerate(items):
        prefix, match = split_answer(item["answer_matching_behavior"])
        other_prefix, other = split_answer(item["answer_not_matching_behavior"])
        if match == other:
            raise SteeringDataError(
                f"item {i}: both answers have the letter {match!r}; the matching and non-matching answers must differ"
            )
        if prefix != other_prefix:
            raise SteeringDataError(
                f"item {i}: the answers {item['answer_matching_behavior']!r} and "
                f"{item['answer_not_matching_behavior']!r} have different prefixes before the letter"
            )
        if not prefix:
            raise SteeringDataError(
                f"item {i}: answer {item['answer_matching_behavior']!r} has no prefix before its letter; "
                "steering applies to the positions after the prompt, so write answers as '(A)' or ' (A)'"
            )
        prompt = template.format(question=item["question"])
        prompt_ids = _tokens(tokenizer, prompt)
        context = _tokens(tokenizer, prompt + prefix)
        if context[: len(prompt_ids)] != prompt_ids or len(context) == len(prompt_ids):
            raise SteeringDataError(
                f"item {i}: the tokenizer merges the end of the prompt with the answer prefix {prefix!r}; "
                "end the question (or --template) with a character that does not merge, e.g. a newline"
            )
        letters = []
        for letter in (match, other):
            full = _tokens(tokenizer, prompt + prefix + letter)
            if full[: len(context)] != context or len(full) != len(context) + 1:
                raise SteeringDataError(
                    f"item {i}: after {prefix!r} the letter {letter!r} is not one token for this tokenizer"
                )
            letters.append(full[-1])
        enc.prompts.append(prompt_ids)
        enc.prefixes.append(context[len(prompt_ids) :])
        enc.matching.append(letters[0])
        enc.other.append(letters[1])
    return enc


def left_pad(rows: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(ids [B, L], attention_mask [B, L])`` with rows right-aligned (left padding)."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        if row:
            ids[i, width - len(row) :] = torch.tensor(list(row), dtype=torch.long)
            mask[i, width - len(row) :] = 1
    return ids, mask


def _chunks(n: int, size: int) -> list[list[int]]:
    return [list(range(s, min(n, s + size))) for s in range(0, n, size)]


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
        from .artifacts import save_artifact

        meta = {**self.meta, "vector_kind": self.kind, "layers": self.layers, "card": model.card.family}
        save_artifact(path, ARTIFACT_KIND, self.tensors(), model, meta)

    @classmethod
    def load(cls, path: str, model: Any, *, allow_other_weights: bool = False) -> SteeringVectors:
        """Read vectors saved by :meth:`save`; raises ``ArtifactMismatchError`` if they were made on another
        architecture (or other weights, unless ``allow_other_weights``), naming what differs."""
        from .artifacts import load_artifact

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


def _run_states(model: Any, rows: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, RecurrentState]:
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
    for index in _chunks(len(rows), batch_size):
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
            _, state = _run_states(model, chunk, pad_id)
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


# ---------------------------------------------------------------------------------------------
# applying
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Steer:
    """One intervention: add ``multiplier * vectors.at(layer)`` (residual stream or carried state).

    ``slots`` restricts a state steer to some of the layer's slots (default: all of them).
    """

    vectors: SteeringVectors
    layer: int
    multiplier: float
    slots: tuple[str, ...] | None = None

    @property
    def kind(self) -> str:
        return self.vectors.kind

    def delta(self) -> Any:
        v = self.vectors.at(self.layer)
        if self.kind == "state" and self.slots is not None:
            unknown = set(self.slots) - set(v)
            if unknown:
                raise KeyError(f"state vector of layer {self.layer} has slots {sorted(v)}, not {sorted(unknown)}")
            v = {k: t for k, t in v.items() if k in self.slots}
        return v


def steer_state(model: Any, state: RecurrentState, *steers: Steer) -> RecurrentState:
    """A copy of ``state`` with every state steer added (in linear coordinates); others are ignored.

    ``state`` may have any batch size; vectors broadcast over it. A zero vector (or multiplier)
    returns the state unchanged bitwise.
    """
    space = state_space(model)
    out = state.clone()
    for s in steers:
        if s.kind != "state":
            continue
        if not 0 <= s.layer < len(out.layers):
            raise IndexError(f"layer {s.layer} is out of range: the state has {len(out.layers)} layers")
        delta = {k: v.to(next(iter(out.layers[s.layer].values())).device) for k, v in s.delta().items()}
        out.layers[s.layer] = space.add(out.layers[s.layer], delta, float(s.multiplier))
    return out


def _residual_edits(model: Any, steers: Sequence[Steer], mask: torch.Tensor | None) -> None:
    """Inside a trace: add each residual steer to ``layers[i].output`` where ``mask`` [B, L, 1] is 1 (all if None).

    Layers are visited in increasing order (nnsight needs execution order); steers on the same
    layer are summed.
    """
    by_layer: dict[int, torch.Tensor] = {}
    for s in steers:
        if s.kind == "residual":
            add = float(s.multiplier) * s.delta().float()
            by_layer[s.layer] = by_layer[s.layer] + add if s.layer in by_layer else add
    for layer in sorted(by_layer):
        out = model.layers[layer].output
        delta = by_layer[layer].to(device=out.device, dtype=out.dtype)
        model.layers[layer].output = out + (delta if mask is None else mask.to(out.device, out.dtype) * delta)


def _check_steers(model: Any, steers: Sequence[Steer]) -> None:
    n = len(model.layers)
    for s in steers:
        if not isinstance(s, Steer):
            raise TypeError(f"expected Steer objects, got {type(s).__name__}")
        if not 0 <= s.layer < n:
            raise IndexError(f"steer layer {s.layer} is out of range: the model has {n} layers")
    if any(s.kind == "state" for s in steers):
        state_space(model)  # raises for transformers


def letter_logits(
    model: Any, enc: EncodedItems, *steers: Steer, batch_size: int = 32
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(logit of matching letter, logit of other letter)`` per item, ``[N]`` each, under ``steers``.

    Without state steers: one pass over ``prompt + prefix`` (left-padded, masked), residual steers
    added at the prefix positions. With a state steer: run the prompts, edit the carried state,
    then run the prefixes from it (items grouped by identical prefix), residual steers added on
    the whole continuation (the prefix). Both paths give the same unsteered logits (state
    continuation is exact).
    """
    _check_steers(model, steers)
    n = len(enc)
    match = torch.empty(n)
    other = torch.empty(n)
    if not any(s.kind == "state" for s in steers):
        for index in _chunks(n, batch_size):
            rows = [enc.prompts[i] + enc.prefixes[i] for i in index]
            ids, mask = left_pad(rows, enc.pad_id)
            steer_mask = torch.zeros((*ids.shape, 1))
            for b, i in enumerate(index):
                steer_mask[b, ids.shape[1] - len(enc.prefixes[i]) :] = 1
            with torch.no_grad(), model.trace(ids, attention_mask=mask):
                _residual_edits(model, steers, steer_mask)
                logits = model.output.logits[:, -1].save()
            _store(logits, enc, index, match, other)
        return match, other
    groups: dict[tuple[int, ...], list[int]] = {}
    for i in range(n):
        groups.setdefault(tuple(enc.prefixes[i]), []).append(i)
    for prefix, members in groups.items():
        for index in [members[s : s + batch_size] for s in range(0, len(members), batch_size)]:
            _, state = _run_states(model, [enc.prompts[i] for i in index], enc.pad_id)
            state = steer_state(model, state, *steers)
            ids = torch.tensor([list(prefix)] * len(index), dtype=torch.long)
            with torch.no_grad(), model.trace(ids, state=state):
                _residual_edits(model, steers, None)
                logits = model.output.logits[:, -1].save()
            _store(logits, enc, index, match, other)
    return match, other


def _store(logits: torch.Tensor, enc: EncodedItems, index: list[int], match: torch.Tensor, other: torch.Tensor) -> None:
    rows = torch.arange(len(index))
    match[index] = logits[rows, [enc.matching[i] for i in index]].float()
    other[index] = logits[rows, [enc.other[i] for i in index]].float()


def score(model: Any, enc: EncodedItems, *steers: Steer, batch_size: int = 32) -> torch.Tensor:
    """``p(matching) / (p(matching) + p(other))`` per item (``[N]``, fp32) under ``steers``.

    Equals ``sigmoid(logit_matching - logit_other)`` (the full softmax's normalisation cancels).
    """
    match, other = letter_logits(model, enc, *steers, batch_size=batch_size)
    return torch.sigmoid(match - other)


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


# ---------------------------------------------------------------------------------------------
# open-ended generation under steering
# ---------------------------------------------------------------------------------------------


def generate(model: Any, prompt: str | Sequence[int], *steers: Steer, max_new_tokens: int = 16) -> list[int]:
    """Greedy continuation of ``prompt`` (exactly ``max_new_tokens`` new ids) under ``steers``.

    Residual steers are added at every generated position (the positions after the prompt).
    Without state steers this is nnsight's ``model.generate`` with the edit at each decode step;
    with one, the prompt is run, its carried state edited, and tokens are decoded one at a time
    from the edited state (residual steers on every step too). With zero vectors the tokens equal
    plain greedy ``model.generate``.
    """
    _check_steers(model, steers)
    ids = torch.tensor([list(prompt) if not isinstance(prompt, str) else _tokens(model.tokenizer, prompt)])
    n_prompt = ids.shape[1]
    pad = model.tokenizer.pad_token_id if model.tokenizer.pad_token_id is not None else model.tokenizer.eos_token_id
    if not any(s.kind == "state" for s in steers):
        with (
            torch.no_grad(),
            model.generate(
                ids, max_new_tokens=max_new_tokens, min_new_tokens=max_new_tokens, do_sample=False, pad_token_id=pad
            ) as tracer,
        ):
            for step in tracer.iter[:max_new_tokens]:
                if step > 0:  # step 0 runs the prompt: no position after it yet
                    _residual_edits(model, steers, None)
            tokens = tracer.result.save()
        return tokens[0, n_prompt:].tolist()
    logits, state = _run_states(model, [ids[0].tolist()], pad or 0)
    state = steer_state(model, state, *steers)
    new = [int(logits[0].argmax())]
    while len(new) < max_new_tokens:
        with torch.no_grad(), model.trace(torch.tensor([[new[-1]]]), state=state):
            _residual_edits(model, steers, None)
            step_logits = model.output.logits[0, -1].save()
            out = model.output.save()
        state = model.state_from_output(out)
        new.append(int(step_logits.argmax()))
    return new


def decode(model: Any, ids: Sequence[int]) -> str:
    """Text of generated ids, cut at the first end-of-text token."""
    eos = model.tokenizer.eos_token_id
    ids = list(ids)
    if eos is not None and eos in ids:
        ids = ids[: ids.index(eos)]
    return model.tokenizer.decode(ids)


def generated_choice(text: str, item: Item) -> str | None:
    """``"matching"`` / ``"other"`` if ``text`` starts with that answer's prefix and letter, else None."""
    for name, key in (("matching", "answer_matching_behavior"), ("other", "answer_not_matching_behavior")):
        prefix, letter = split_answer(item[key])
        if text.startswith(prefix + letter):
            return name
    return None
