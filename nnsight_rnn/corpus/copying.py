"""(d) Repeated random sequences: a string, ``|``, the same string again (induction / copying)."""

from __future__ import annotations

import random
from typing import Any

COPY_ALPHABET = "abcdefgh"
"""Letters of the copy task. Eight, not 26: with 26 the 2-layer d64 zoo models stayed at chance
(mamba-tiny 3.9 % at 5 % copy documents, 17.9 % at 15 %); with eight and 15 % documents they copy
(49-93 % per character vs 12.5 % chance; docs/zoo.md) in the same 800 steps."""
COPY_SEPARATOR = "|"


def copy_sequences(seed: int, n: int, min_len: int = 3, max_len: int = 8) -> list[dict[str, Any]]:
    """``n`` items ``{text, prefix_len}``: ``"hbgca|hbgca"``, random string, separator, copy.

    ``prefix_len`` is the number of bytes up to and including the separator; the copy
    ``text[prefix_len:]`` can only be predicted by copying (the letters are uniform random).
    """
    rng = random.Random(f"copy:{seed}")
    out = []
    for _ in range(n):
        s = "".join(rng.choice(COPY_ALPHABET) for _ in range(rng.randint(min_len, max_len)))
        out.append({"text": f"{s}{COPY_SEPARATOR}{s}", "prefix_len": len(s) + 1})
    return out
