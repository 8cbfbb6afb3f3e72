"""Tokenised quirky items, the model's own answers, and last-token activations per layer.

Positions: the *decision position* of an item is the last token of ``statement`` plus the tokens
both answers share (``" "`` for the byte tokenizer, where ``" True"`` / ``" False"`` are 5 / 6
tokens; nothing for a BPE tokenizer where they are single tokens). The model's answer is
``logit(first token of " True") - logit(first token of " False")`` there, and the probes read the
activations there ("last token" in Mallen et al.).

Sites (what a probe reads, one feature vector per item and layer):

- ``"residual"``: ``model.layers[i].output[:, -1]``, the residual stream after block ``i``,
  ``[d_model]``, on every architecture.
- ``"state"`` (recurrent models): the carried state each layer holds after the decision position
  (what :meth:`HookedLanguageModel.run_state` returns), every slot flattened and concatenated in
  the card's slot order (Mamba: ``conv`` ``[d_inner * k]`` then ``ssm`` ``[d_inner * N]``; RWKV-4:
  ``att_shift``, ``ffn_shift``, ``num``, ``den``, ``max``), stored as they are (RWKV-4's ``num`` /
  ``den`` are scaled by ``e^-max``; the probes standardise every feature).
- ``"state.<slot>"``: one slot of it (a slice of ``"state"``, no extra memory).

Items are run in batches of equal token length, so no row is padded: the result is exactly each
row alone, on every architecture (absolute position embeddings included). Memory: ``N items x
(d_model or state size) x 4 bytes`` per layer (state: Mamba-130m 120 KiB per item per layer).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from ..errors import QuirkyTokenizationError
from .data import Item

SITE_RESIDUAL = "residual"
SITE_STATE = "state"


@dataclass
class EncodedItems:
    """Quirky items as token ids.

    Attributes:
        prompts: ids up to and including the decision position (statement + shared answer prefix).
        true_ids / false_ids: the first token where ``" True"`` / ``" False"`` differ.
        positive / negative: full ids of ``statement + " True"`` / ``statement + " False"``.
        items: the source items.
    """

    prompts: list[list[int]]
    true_ids: list[int]
    false_ids: list[int]
    positive: list[list[int]]
    negative: list[list[int]]
    items: list[Item]

    def __len__(self) -> int:
        return len(self.items)

    def contrast_rows(self) -> tuple[list[list[int]], list[list[int]]]:
        """The contrast pair of every item: the prompt followed by the true / the false answer token.

        ``(prompt + [true_id], prompt + [false_id])``: the first token where the answers differ (with a
        BPE vocabulary that is the whole ``" True"`` / ``" False"`` token; with bytes, ``"T"`` / ``"F"``).
        """
        pos = [[*p, t] for p, t in zip(self.prompts, self.true_ids, strict=True)]
        neg = [[*p, f] for p, f in zip(self.prompts, self.false_ids, strict=True)]
        return pos, neg

    def subset(self, index: Sequence[int]) -> EncodedItems:
        pick = list(index)
        return EncodedItems(
            [self.prompts[i] for i in pick],
            [self.true_ids[i] for i in pick],
            [self.false_ids[i] for i in pick],
            [self.positive[i] for i in pick],
            [self.negative[i] for i in pick],
            [self.items[i] for i in pick],
        )


def _ids(tokenizer: Any, texts: list[str]) -> list[list[int]]:
    if not texts:
        return []
    return [list(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]


def encode_items(tokenizer: Any, items: Sequence[Item]) -> EncodedItems:
    """Tokenise items: decision-position prompt, the two answer tokens, the contrast pair.

    Raises :class:`QuirkyTokenizationError` naming the item if the two answers tokenise to the
    same first token or one is a prefix of the other.
    """
    enc = EncodedItems([], [], [], [], [], list(items))
    negs = _ids(tokenizer, [it["statement"] + it["choices"][0] for it in items])
    poss = _ids(tokenizer, [it["statement"] + it["choices"][1] for it in items])
    for i, (item, neg, pos) in enumerate(zip(items, negs, poss, strict=True)):
        k = 0
        while k < min(len(neg), len(pos)) and neg[k] == pos[k]:
            k += 1
        if k == 0 or k == len(neg) or k == len(pos):
            raise QuirkyTokenizationError(
                f"item {i} ({item['statement']!r}): the answers {item['choices'][0]!r} / {item['choices'][1]!r} do "
                "not tokenise to a shared prompt followed by different tokens"
            )
        enc.prompts.append(pos[:k])
        enc.true_ids.append(pos[k])
        enc.false_ids.append(neg[k])
        enc.positive.append(pos)
        enc.negative.append(neg)
    return enc


def length_batches(rows: Sequence[Sequence[int]], batch_size: int) -> list[list[int]]:
    """Index batches of rows with the same length (so nothing is padded), at most ``batch_size`` each."""
    groups: dict[int, list[int]] = {}
    for i, row in enumerate(rows):
        groups.setdefault(len(row), []).append(i)
    return [
        members[s : s + batch_size] for _, members in sorted(groups.items()) for s in range(0, len(members), batch_size)
    ]


def is_recurrent(model: Any) -> bool:
    """True if the model's card has a carried state (a recurrent mixer kind)."""
    card = model.card
    return bool(card.is_recurrent)


def state_layout(model: Any) -> dict[str, tuple[int, int, tuple[int, ...]]]:
    """``slot -> (start, stop, shape)`` of each slot in a layer's flattened ``"state"`` vector."""
    from ..mixers import mixer_class

    slots = mixer_class(model.card.mixer_kind).state_slots(model._module.config)
    out, start = {}, 0
    for name, shape in slots.items():
        size = 1
        for s in shape:
            size *= s
        out[name] = (start, start + size, tuple(shape))
        start += size
    return out


@dataclass
class Activations:
    """Last-token activations of a set of rows.

    Attributes:
        residual: ``{layer: [N, d_model]}`` (fp32).
        state: ``{layer: [N, state size]}`` (fp32), empty for transformers or when not collected.
        layout: slot slices of a ``state`` row (:func:`state_layout`).
        answer: ``[N]`` logit(true token) - logit(false token) at the last position (prompts only; else empty).
    """

    residual: dict[int, torch.Tensor] = field(default_factory=dict)
    state: dict[int, torch.Tensor] = field(default_factory=dict)
    layout: dict[str, tuple[int, int, tuple[int, ...]]] = field(default_factory=dict)
    answer: torch.Tensor | None = None

    def site(self, site: str, layer: int) -> torch.Tensor:
        """Features ``[N, D]`` of ``site`` (``"residual"``, ``"state"``, ``"state.<slot>"``) at ``layer``."""
        if site == SITE_RESIDUAL:
            return self.residual[layer]
        if site == SITE_STATE:
            return self.state[layer]
        if site.startswith(SITE_STATE + "."):
            slot = site.split(".", 1)[1]
            if slot not in self.layout:
                raise KeyError(f"no state slot {slot!r}; this model's slots are {list(self.layout)}")
            start, stop, _ = self.layout[slot]
            return self.state[layer][:, start:stop]
        raise KeyError(f"unknown site {site!r}: use 'residual', 'state' or 'state.<slot>'")


def collect(
    model: Any,
    rows: Sequence[Sequence[int]],
    layers: Sequence[int],
    *,
    state: bool = True,
    answer_ids: tuple[Sequence[int], Sequence[int]] | None = None,
    batch_size: int = 64,
    progress: bool = False,
    desc: str = "activations",
) -> Activations:
    """Run ``rows`` (token ids) through ``model`` (no grad) and keep the last token's activations.

    Args:
        model: a :class:`~nnsight_rnn.HookedLanguageModel`.
        rows: token ids per item (any lengths; batched by equal length, never padded).
        layers: block indices whose ``layers[i].output[:, -1]`` (and carried state) to keep.
        state: also keep the carried state after the last token (recurrent models only; ignored
            for transformers).
        answer_ids: ``(true_ids, false_ids)`` per row: also return the logit difference at the last token.
        batch_size: rows per forward pass.

    Returns an :class:`Activations` with rows in the order given.
    """
    from tqdm.auto import tqdm

    state = state and is_recurrent(model)
    n = len(rows)
    out = Activations(layout=state_layout(model) if state else {})
    res_parts: dict[int, list[tuple[list[int], torch.Tensor]]] = {i: [] for i in layers}
    st_parts: dict[int, list[tuple[list[int], torch.Tensor]]] = {i: [] for i in layers}
    ans_parts: list[tuple[list[int], torch.Tensor]] = []
    batches = length_batches(rows, batch_size)
    for index in tqdm(batches, desc=desc, disable=not progress, unit="batch", leave=False):
        ids = torch.tensor([list(rows[i]) for i in index], dtype=torch.long)
        kwargs = {"use_cache": True} if state else {"use_cache": False}
        with torch.no_grad(), model.trace(ids, **kwargs):
            acts = list().save()
            for i in layers:
                acts.append(model.layers[i].output[:, -1])
            logits = model.output.logits[:, -1].save()
            output = model.output.save() if state else None
        for i, act in zip(layers, acts, strict=True):
            res_parts[i].append((index, act.float()))
        if state:
            carried = model.state_from_output(output)
            for i in layers:
                flat = torch.cat([carried.layers[i][slot].float().reshape(len(index), -1) for slot in out.layout], 1)
                st_parts[i].append((index, flat))
        if answer_ids is not None:
            rows_t = torch.arange(len(index))
            t = logits[rows_t, [answer_ids[0][i] for i in index]].float()
            f = logits[rows_t, [answer_ids[1][i] for i in index]].float()
            ans_parts.append((index, t - f))

    def assemble(parts: list[tuple[list[int], torch.Tensor]]) -> torch.Tensor:
        first = parts[0][1]
        full = first.new_empty((n, *first.shape[1:]))
        for index, value in parts:
            full[index] = value
        return full

    out.residual = {i: assemble(res_parts[i]) for i in layers}
    if state:
        out.state = {i: assemble(st_parts[i]) for i in layers}
    if answer_ids is not None:
        out.answer = assemble(ans_parts)
    return out


@torch.no_grad()
def answer_scores(model: Any, enc: EncodedItems, *, batch_size: int = 128) -> torch.Tensor:
    """The model's own answer per item: ``logit(true) - logit(false)`` at the decision position, ``[N]``.

    Runs the underlying HF module directly (no tracing; equal-length batches, no padding).
    """
    module = getattr(model, "_module", model)
    out = torch.empty(len(enc))
    for index in length_batches(enc.prompts, batch_size):
        ids = torch.tensor([enc.prompts[i] for i in index], dtype=torch.long, device=_device(module))
        logits = module(input_ids=ids, use_cache=False).logits[:, -1].float().cpu()
        rows = torch.arange(len(index))
        out[index] = logits[rows, [enc.true_ids[i] for i in index]] - logits[rows, [enc.false_ids[i] for i in index]]
    return out


def _device(module: torch.nn.Module) -> torch.device:
    try:
        return next(module.parameters()).device
    except StopIteration:
        return torch.device("cpu")
