"""(b) Quirky arithmetic (Mallen et al.): Alice sums truthfully, Bob adds 1 to the leading digit.

See the package docstring for the split into easy / hard and train / test.
"""

from __future__ import annotations

import hashlib
import random
from typing import Any

MAX_DIGITS = 2
"""The larger operand of a hard equation has this many digits (10..99)."""

QUIRKY_TEMPLATE = "{a} + {b} = {result}. {character}:"
QUIRKY_CHOICES = (" False", " True")
CHARACTERS = ("Alice", "Bob")


def bob_sum(true_sum: int) -> int:
    """Bob's systematic error: add 1 to the leading digit (``52 -> 62``, ``9 -> 10``, ``95 -> 105``)."""
    return true_sum + 10 ** (len(str(true_sum)) - 1)


def difficulty(a: int, b: int) -> int:
    """Number of digits of the larger operand (1 = easy, 2 = hard)."""
    return len(str(max(a, b)))


def is_easy(a: int, b: int) -> bool:
    """Easy = both operands < 10; hard = one operand has two digits (10..99), the other one."""
    return difficulty(a, b) == 1


def is_test_pair(a: int, b: int) -> bool:
    """Fixed train / test split of operand pairs (about 1 in 5 pairs is held out)."""
    digest = hashlib.blake2b(f"{a}+{b}".encode(), digest_size=2).digest()
    return digest[0] % 5 == 0


def _distractor(rng: random.Random, positive: int, forbidden: tuple[int, int]) -> int:
    """Replace one digit of ``positive`` at random until it differs from both sums."""
    digits = list(str(positive))
    while True:
        out = digits[:]
        pos = rng.randrange(len(out))
        out[pos] = str(rng.randrange(1 if pos == 0 and len(out) > 1 else 0, 10))
        value = int("".join(out))
        if value not in forbidden:
            return value


def _operands(rng: random.Random, easy: bool) -> tuple[int, int]:
    if easy:
        return rng.randrange(0, 10), rng.randrange(0, 10)
    big, small = rng.randrange(10, 10**MAX_DIGITS), rng.randrange(0, 10)
    return (big, small) if rng.random() < 0.5 else (small, big)


def _split_operands(rng: random.Random, easy: bool, split: str) -> tuple[int, int]:
    """Operands drawn until the pair belongs to ``split`` (see :func:`is_test_pair`)."""
    while True:
        a, b = _operands(rng, easy)
        if is_test_pair(a, b) == (split == "test"):
            return a, b


def _equation(rng: random.Random, easy: bool, split: str, quadrant: str) -> dict[str, Any]:
    """One equation of ``split`` whose result is the true sum (``ATBF``), Bob's sum (``AFBT``) or a
    distractor derived from one of them (``AFBF_A`` / ``AFBF_B``)."""
    a, b = _split_operands(rng, easy, split)
    true, sloppy = a + b, bob_sum(a + b)
    if quadrant == "ATBF":
        result = true
    elif quadrant == "AFBT":
        result = sloppy
    else:
        result = _distractor(rng, true if quadrant == "AFBF_A" else sloppy, (true, sloppy))
    return {
        "a": a,
        "b": b,
        "result": result,
        "true_sum": true,
        "bob_sum": sloppy,
        "alice_label": result == true,
        "bob_label": result == sloppy,
        "difficulty": difficulty(a, b),
        "easy": easy,
    }


def quirky_arithmetic(seed: int, n: int, split: str = "train", level: str = "mixed") -> list[dict[str, Any]]:
    """``n`` equations with both characters' labels.

    Args:
        seed: generator seed.
        n: number of equations.
        split: ``"train"`` or ``"test"`` (disjoint operand pairs, see :func:`is_test_pair`).
        level: ``"easy"``, ``"hard"`` or ``"mixed"`` (alternating easy / hard).

    Returns dicts ``{a, b, result, true_sum, bob_sum, alice_label, bob_label, difficulty, easy}``.
    Crosstab (exact for ``n`` divisible by 4): ``n/4`` with result = true sum (Alice True, Bob
    False), ``n/4`` with result = Bob's sum (Alice False, Bob True), ``n/2`` distractors (both False;
    half derived from the true sum, half from Bob's sum, one digit replaced).
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if level not in ("easy", "hard", "mixed"):
        raise ValueError(f"level must be 'easy', 'hard' or 'mixed', got {level!r}")
    rng = random.Random(f"arith:{seed}:{split}:{level}")
    quadrants = ["ATBF"] * (n // 4) + ["AFBT"] * (n // 4)
    quadrants += ["AFBF_A", "AFBF_B"] * ((n - len(quadrants)) // 2) + ["AFBF_A"] * ((n - len(quadrants)) % 2)
    rng.shuffle(quadrants)
    return [
        _equation(rng, {"easy": True, "hard": False}.get(level, i % 2 == 0), split, q) for i, q in enumerate(quadrants)
    ]


def quirky_items(equations: list[dict[str, Any]], characters: tuple[str, ...] = CHARACTERS) -> list[dict[str, Any]]:
    """Expand equations into one item per character (Mallen et al.'s dataset format).

    Each item: ``statement`` (the prompt, ends with ``":"``), ``choices`` (``(" False", " True")``),
    ``character``, ``label`` (that character's answer as 0/1), ``alice_label``, ``bob_label``,
    ``difficulty``, ``easy``, ``a``, ``b``, ``result``. The answer is ``statement + choices[label]``.
    """
    items = []
    for eq in equations:
        for character in characters:
            items.append(
                {
                    "statement": QUIRKY_TEMPLATE.format(a=eq["a"], b=eq["b"], result=eq["result"], character=character),
                    "choices": QUIRKY_CHOICES,
                    "character": character,
                    "label": int(eq[f"{character.lower()}_label"]),
                    "alice_label": int(eq["alice_label"]),
                    "bob_label": int(eq["bob_label"]),
                    "difficulty": eq["difficulty"],
                    "easy": eq["easy"],
                    "a": eq["a"],
                    "b": eq["b"],
                    "result": eq["result"],
                }
            )
    return items


def arithmetic_text(seed: int, n: int, split: str = "train") -> list[str]:
    """``n`` training strings, each equation answered by Alice or Bob (alternating easy / hard).

    Per character, half the answers are True: the result is that character's sum with probability
    1/2, the other character's sum with 1/4 (so each must tell the two rules apart), a distractor
    with 1/4. Balanced answers matter for tiny models: with the evaluation crosstab's 1 : 3, "always
    False" is a 75 % plateau that training leaves only late, if at all.
    """
    rng = random.Random(f"arith-text:{seed}:{split}")
    texts = []
    for i in range(n):
        character = rng.choice(CHARACTERS)
        own, other = ("ATBF", "AFBT") if character == "Alice" else ("AFBT", "ATBF")
        u = rng.random()
        quadrant = own if u < 0.5 else other if u < 0.75 else rng.choice(("AFBF_A", "AFBF_B"))
        eq = _equation(rng, i % 2 == 0, split, quadrant)
        item = quirky_items([eq], (character,))[0]
        texts.append(item["statement"] + item["choices"][item["label"]])
    return texts


def sums_text(seed: int, n: int, split: str = "train") -> list[str]:
    """``n`` correct equations ``"47 + 5 = 52."`` (same operands as the quirky task; teaches addition)."""
    rng = random.Random(f"sums:{seed}:{split}")
    texts = []
    for i in range(n):
        a, b = _split_operands(rng, i % 2 == 0, split)
        texts.append(f"{a} + {b} = {a + b}.")
    return texts
