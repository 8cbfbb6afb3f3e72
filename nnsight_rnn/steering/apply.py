"""Applying steering vectors: residual edits after the prompt, state edits between prompt and answer; scoring and generation."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ..state import RecurrentState
from .items import EncodedItems, Item, chunks, left_pad, split_answer, token_ids
from .vectors import SteeringVectors, run_states, state_space

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
        if s.kind == "residual":
            width = model.config.hidden_size
            vector = s.vectors.at(s.layer)
            if not isinstance(vector, torch.Tensor) or vector.shape[-1] != width:
                shape = tuple(vector.shape) if isinstance(vector, torch.Tensor) else type(vector).__name__
                raise ValueError(
                    f"the residual steering vector for layer {s.layer} has shape {shape}; this model's residual "
                    f"stream is [batch, pos, {width}]: the vectors were made on another model "
                    "(SteeringVectors.load refuses those; build them on this one)"
                )
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
        for index in chunks(n, batch_size):
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
            _, state = run_states(model, [enc.prompts[i] for i in index], enc.pad_id)
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
    ids = torch.tensor([list(prompt) if not isinstance(prompt, str) else token_ids(model.tokenizer, prompt)])
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
    logits, state = run_states(model, [ids[0].tolist()], pad or 0)
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
