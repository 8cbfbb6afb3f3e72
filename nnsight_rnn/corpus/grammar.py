"""(a) Plain text from a small generated grammar: agreement, fixed phrases, counting (for the lenses)."""

from __future__ import annotations

import random

_NOUNS = ["cat", "dog", "bird", "fox", "king", "queen", "girl", "boy", "farmer", "child", "horse", "wolf"]
_PLURAL = {"child": "children", "fox": "foxes", "wolf": "wolves"}
_ADJS = ["small", "big", "red", "old", "happy", "quiet", "brown", "young"]
_TVERBS = ["see", "like", "chase", "help", "find", "follow"]
_IVERBS = ["sleep", "run", "sing", "wait", "rest"]
_PLACES = ["in the garden", "near the river", "on the hill", "at home", "under the tree"]
_NUMBERS = ["one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"]
_DAYS = ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]
_FACTS = [
    "the sky is blue.",
    "the grass is green.",
    "snow is white.",
    "fire is hot.",
    "ice is cold.",
    "the sun is bright.",
]


def _plural(noun: str) -> str:
    return _PLURAL.get(noun, noun + "s")


def _third_person(verb: str) -> str:
    return verb + ("es" if verb.endswith(("sh", "ch", "s", "x")) else "s")


def _noun_phrase(rng: random.Random) -> tuple[str, bool]:
    noun = rng.choice(_NOUNS)
    plural = rng.random() < 0.4
    det = rng.choice(["the", "some"]) if plural else rng.choice(["the", "a"])
    adj = rng.choice(_ADJS) + " " if rng.random() < 0.5 else ""
    if det == "a" and adj[:1] in "aeiou" and adj:
        det = "an"
    return f"{det} {adj}{_plural(noun) if plural else noun}", plural


def grammar_sentence(rng: random.Random) -> str:
    """One sentence (subject-verb agreement, places, counting, days, fixed facts)."""
    kind = rng.random()
    if kind < 0.1:
        start = rng.randrange(0, 6)
        return " ".join(_NUMBERS[start : start + rng.randint(3, 5)]) + "."
    if kind < 0.17:
        start = rng.randrange(0, 4)
        return " then ".join(_DAYS[start : start + rng.randint(2, 3)]) + "."
    if kind < 0.25:
        return rng.choice(_FACTS)
    subject, plural = _noun_phrase(rng)
    if rng.random() < 0.6:
        verb = rng.choice(_TVERBS)
        obj, _ = _noun_phrase(rng)
        sentence = f"{subject} {verb if plural else _third_person(verb)} {obj}"
    else:
        verb = rng.choice(_IVERBS)
        sentence = f"{subject} {verb if plural else _third_person(verb)}"
    if rng.random() < 0.4:
        sentence += " " + rng.choice(_PLACES)
    return sentence + "."


def grammar_text(seed: int, n: int) -> list[str]:
    """``n`` short texts of one or two grammar sentences (lower case, <= ~90 bytes)."""
    rng = random.Random(f"text:{seed}")
    return [" ".join(grammar_sentence(rng) for _ in range(rng.choice([1, 1, 2]))) for _ in range(n)]
