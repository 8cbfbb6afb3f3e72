"""CAA items: validating, loading and encoding A/B items, and left-padded batches."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ..errors import SteeringDataError

Item = dict[str, str]
ITEM_KEYS = ("question", "answer_matching_behavior", "answer_not_matching_behavior")
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
    from ..corpus import caa_items

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


def token_ids(tokenizer: Any, text: str) -> list[int]:
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
        prompt_ids = token_ids(tokenizer, prompt)
        context = token_ids(tokenizer, prompt + prefix)
        if context[: len(prompt_ids)] != prompt_ids or len(context) == len(prompt_ids):
            raise SteeringDataError(
                f"item {i}: the tokenizer merges the end of the prompt with the answer prefix {prefix!r}; "
                "end the question (or --template) with a character that does not merge, e.g. a newline"
            )
        letters = []
        for letter in (match, other):
            full = token_ids(tokenizer, prompt + prefix + letter)
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


def chunks(n: int, size: int) -> list[list[int]]:
    return [list(range(s, min(n, s + size))) for s in range(0, n, size)]
