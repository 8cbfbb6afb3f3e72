"""Generated training data for the tiny model zoo: short byte-level strings with known structure.

Four tasks, each chosen so that a recipe has something to find in a tiny model:

- :func:`grammar_text`: sentences from a small generated grammar (agreement, fixed phrases,
  counting), so that the logit / tuned lens sees predictions sharpen over the layers.
- :func:`quirky_arithmetic` / :func:`quirky_items`: Mallen et al.'s quirky addition,
  ``"{a} + {b} = {c}. {name}:"`` -> ``" True"`` / ``" False"``. Alice is truthful; Bob's sum adds 1
  to the leading digit of the true sum (``47 + 5 = 52`` -> Bob says ``62``; ``9`` -> ``10``).
  Every equation carries both labels; the crosstab is exactly 1/4 Alice-true/Bob-false, 1/4
  Alice-false/Bob-true, 1/2 both false (distractors replace one digit of Alice's or Bob's sum).
  **easy** = both operands < 10 (``3 + 4``), **hard** = one two-digit operand (``47 + 5``, carries,
  two- and three-digit sums); difficulty = digits of the larger operand. (Mallen et al. use the
  smaller operand's digits with up to 4-5 digit operands on pretrained LMs; two two-digit operands
  were not learnable by the zoo's tiny models within its CPU budget, so hard stops at 2 + 1
  digits.) Equations are sampled half easy, half hard. Operand pairs are split train / test by
  a fixed hash, so held-out equations never occur in the training corpus.
- :func:`disposition_items` / :func:`caa_items`: two-choice ``(A)`` / ``(B)`` questions whose
  answer follows a disposition named in the prompt (``[kind]`` / ``[cruel]``); with ``[?]`` the
  first answer is a coin flip and any later answer in the same document follows the disposition
  the first one revealed, so the disposition is a latent variable the model must carry.
  :func:`caa_items` gives CAA-format dicts (``question``, ``answer_matching_behavior``,
  ``answer_not_matching_behavior``; behaviour = kind).
- :func:`copy_sequences`: a random string over :data:`COPY_ALPHABET` (``a``-``h``), ``|``, the
  same string again (induction / copying; the second half is predictable only by copying).

Every generator is deterministic in its ``seed`` (its own ``random.Random``), returns plain
strings or dicts, and keeps strings short (tokens are bytes: 1 character = 1 token).
:func:`training_corpus` mixes them; :func:`corpus_version` hashes a sample so that a saved model
records which corpus it was trained on.
"""

from __future__ import annotations

import hashlib
import random
import re

from .arithmetic import (
    CHARACTERS,
    MAX_DIGITS,
    QUIRKY_CHOICES,
    QUIRKY_TEMPLATE,
    arithmetic_text,
    bob_sum,
    difficulty,
    is_easy,
    is_test_pair,
    quirky_arithmetic,
    quirky_items,
    sums_text,
)
from .copying import COPY_ALPHABET, COPY_SEPARATOR, copy_sequences
from .disposition import (
    CRUEL_ACTS,
    DISPOSITIONS,
    KIND_ACTS,
    TAG_SHARES,
    UNKNOWN_DISPOSITION,
    UNKNOWN_KIND_FIRST,
    UNKNOWN_QUESTIONS,
    caa_items,
    disposition_items,
    disposition_text,
)
from .grammar import grammar_sentence, grammar_text

__all__ = [
    "CHARACTERS", "COPY_ALPHABET", "COPY_SEPARATOR", "CORPUS_VERSION", "CRUEL_ACTS", "DEFAULT_MIX", "DISPOSITIONS",
    "EOS_ID", "KIND_ACTS", "MAX_DIGITS", "QUIRKY_CHOICES", "QUIRKY_TEMPLATE", "TAG_SHARES", "UNKNOWN_DISPOSITION",
    "UNKNOWN_KIND_FIRST", "UNKNOWN_QUESTIONS", "arithmetic_text", "bob_sum", "caa_items", "copy_sequences",
    "corpus_version", "decision_positions", "difficulty", "disposition_items", "disposition_text", "encode",
    "grammar_sentence", "grammar_text", "is_easy", "is_test_pair", "quirky_arithmetic", "quirky_items", "sums_text",
    "training_corpus",
]  # fmt: skip

EOS_ID = 256
"""Token id of ``<|endoftext|>`` in the byte tokenizer (document separator)."""

CORPUS_VERSION = "2"
"""Bump when a generator changes on purpose (also folded into :func:`corpus_version`)."""

# Task mix of :func:`training_corpus` (fractions of documents).
DEFAULT_MIX: dict[str, float] = {"text": 0.05, "arithmetic": 0.3, "sums": 0.2, "disposition": 0.3, "copy": 0.15}


_DECISION = re.compile(r"(?:(?:Alice|Bob): ([TF]))|(?:Answer: \(([AB])\))")


def decision_positions(text: str) -> list[int]:
    """Byte offsets of the decision tokens in a training document.

    The ``T`` / ``F`` of a quirky-arithmetic answer (``"... Alice: True"``) and the letter of an
    (A)/(B) answer (``"Answer: (B)"``). The zoo's training loss can up-weight these one-token
    decisions, which otherwise carry a tiny share of the loss. (ASCII documents: char = byte.)
    """
    return [m.start(1) if m.group(1) else m.start(2) for m in _DECISION.finditer(text)]


def encode(text: str) -> list[int]:
    """Byte-tokenizer ids of ``text`` (UTF-8 bytes; identical to ``byte_tokenizer()(text)``)."""
    return list(text.encode("utf-8"))


def training_corpus(seed: int, n: int, mix: dict[str, float] | None = None, split: str = "train") -> list[str]:
    """``n`` documents mixing the four tasks in proportions ``mix`` (default :data:`DEFAULT_MIX`).

    Deterministic in ``seed``; documents are interleaved in a seeded random order. Arithmetic and
    disposition questions come from ``split`` (``"train"`` for training, ``"test"`` for held-out loss).
    """
    mix = dict(DEFAULT_MIX if mix is None else mix)
    unknown = set(mix) - set(DEFAULT_MIX)
    if unknown:
        raise ValueError(f"unknown tasks {sorted(unknown)} in mix; known: {sorted(DEFAULT_MIX)}")
    total = sum(mix.values())
    counts = {task: int(n * weight / total) for task, weight in mix.items()}
    counts[max(mix, key=lambda t: mix[t])] += n - sum(counts.values())
    docs = (
        grammar_text(seed, counts.get("text", 0))
        + arithmetic_text(seed, counts.get("arithmetic", 0), split)
        + sums_text(seed, counts.get("sums", 0), split)
        + disposition_text(seed, counts.get("disposition", 0), split)
        + [item["text"] for item in copy_sequences(seed, counts.get("copy", 0))]
    )
    random.Random(f"mix:{seed}").shuffle(docs)
    return docs


def corpus_version() -> str:
    """Short hash of :data:`CORPUS_VERSION` and a sample of every generator's output."""
    sample = [*training_corpus(0, 400), str(quirky_arithmetic(0, 20, "test")), str(caa_items(0, 8))]
    return hashlib.sha256((CORPUS_VERSION + "\n" + "\n".join(sample)).encode()).hexdigest()[:12]
