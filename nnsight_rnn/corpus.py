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
import itertools
import random
import re
from typing import Any

EOS_ID = 256
"""Token id of ``<|endoftext|>`` in the byte tokenizer (document separator)."""

MAX_DIGITS = 2
"""The larger operand of a hard equation has this many digits (10..99)."""

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


# ---------------------------------------------------------------------------------------------
# (a) plain text from a small grammar
# ---------------------------------------------------------------------------------------------

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


# ---------------------------------------------------------------------------------------------
# (b) quirky arithmetic (Mallen et al.)
# ---------------------------------------------------------------------------------------------

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


# ---------------------------------------------------------------------------------------------
# (c) two-choice questions following a disposition
# ---------------------------------------------------------------------------------------------

DISPOSITIONS = ("kind", "cruel")
UNKNOWN_DISPOSITION = "?"
_SITUATIONS = [
    "lost dog",
    "cold cat",
    "sad friend",
    "hurt bird",
    "hungry boy",
    "crying girl",
    "tired man",
    "trapped fox",
]
_KIND_ACTS = ["help", "feed", "hug", "save"]
_CRUEL_ACTS = ["kick", "mock", "rob", "hit"]


def _is_test_question(s: int, k: int, c: int) -> bool:
    return (s * 16 + k * 4 + c) % 7 == 3


def _question(rng: random.Random, split: str, p_kind_first: float = 0.5) -> tuple[str, str, str]:
    """(question text, letter of the kind act, letter of the cruel act); the kind act is (A) with
    probability ``p_kind_first``."""
    while True:
        s, k, c = rng.randrange(len(_SITUATIONS)), rng.randrange(len(_KIND_ACTS)), rng.randrange(len(_CRUEL_ACTS))
        if _is_test_question(s, k, c) == (split == "test"):
            break
    kind_first = rng.random() < p_kind_first
    first, second = (_KIND_ACTS[k], _CRUEL_ACTS[c]) if kind_first else (_CRUEL_ACTS[c], _KIND_ACTS[k])
    text = f"{_SITUATIONS[s]}: (A) {first} (B) {second}. Answer:"
    return (text, "A", "B") if kind_first else (text, "B", "A")


def disposition_items(
    seed: int, n: int, split: str = "train", dispositions: tuple[str, ...] = DISPOSITIONS
) -> list[dict[str, Any]]:
    """``n`` single-question items ``{prompt, disposition, kind_letter, cruel_letter, answer}``.

    ``prompt`` is ``"[kind] lost dog: (A) help (B) kick. Answer:"``; the answer is
    ``" (" + letter + ")"``, ``answer`` is the letter that follows the named disposition (for
    ``"?"``: a coin flip). Dispositions alternate in the order given.
    """
    rng = random.Random(f"disp:{seed}:{split}")
    items = []
    for i in range(n):
        disposition = dispositions[i % len(dispositions)]
        text, kind_letter, cruel_letter = _question(rng, split)
        if disposition == "kind":
            answer = kind_letter
        elif disposition == "cruel":
            answer = cruel_letter
        else:
            answer = rng.choice((kind_letter, cruel_letter))
        items.append(
            {
                "prompt": f"[{disposition}] {text}",
                "disposition": disposition,
                "kind_letter": kind_letter,
                "cruel_letter": cruel_letter,
                "answer": answer,
            }
        )
    return items


TAG_SHARES: dict[str, float] = {"kind": 0.5, "cruel": 0.3, UNKNOWN_DISPOSITION: 0.2}
"""Share of each tag among disposition documents (see :func:`disposition_text` for why unbalanced)."""
UNKNOWN_QUESTIONS = 2
"""Questions per ``[?]`` document: the first answer is a coin flip, the others follow it."""
UNKNOWN_KIND_FIRST = 0.5
"""How often the kind act is (A) in the first question of a ``[?]`` document. Skewing it (0.85, the
analogue of the tag imbalance that made the tags learnable) did not teach mamba-tiny the ``[?]``
follow-on either (54.5 % vs 45 % at 0.5; docs/recipes/steering.md), so the order stays balanced."""


def disposition_text(seed: int, n: int, split: str = "train") -> list[str]:
    """``n`` training documents: a disposition tag and answered questions.

    Tags in :data:`TAG_SHARES`: ``[kind]`` / ``[cruel]`` with one question, ``[?]`` with
    :data:`UNKNOWN_QUESTIONS`: the first answer is a coin flip and the later ones follow the
    disposition the first answer showed. The imbalance is deliberate: with balanced tags the
    answer letter is an XOR of tag and option order (no first-order signal), and tiny models
    plateau at chance for hundreds of steps; with more ``[kind]`` they first learn which act is
    kind, then that ``[cruel]`` flips it.
    """
    rng = random.Random(f"disp-text:{seed}")
    tags = list(TAG_SHARES)
    bounds = list(itertools.accumulate(TAG_SHARES.values()))
    docs = []
    for _ in range(n):
        u = rng.random() * bounds[-1]
        disposition = next(tag for tag, bound in zip(tags, bounds, strict=True) if u < bound)
        parts = [f"[{disposition}]"]
        shown = disposition
        for q in range(UNKNOWN_QUESTIONS if disposition == UNKNOWN_DISPOSITION else 1):
            first_of_unknown = disposition == UNKNOWN_DISPOSITION and q == 0
            text, kind_letter, cruel_letter = _question(rng, split, UNKNOWN_KIND_FIRST if first_of_unknown else 0.5)
            if shown == UNKNOWN_DISPOSITION:
                shown = rng.choice(DISPOSITIONS)
            letter = kind_letter if shown == "kind" else cruel_letter
            parts.append(f"{text} ({letter})")
        docs.append(" ".join(parts))
    return docs


def caa_items(seed: int, n: int, split: str = "test", disposition: str = UNKNOWN_DISPOSITION) -> list[dict[str, str]]:
    """CAA-format items (Rimsky et al.): behaviour = choosing the kind act.

    ``{"question": "[?] lost dog: (A) help (B) kick. Answer:", "answer_matching_behavior": " (A)",
    "answer_not_matching_behavior": " (B)"}``. The default tag ``[?]`` leaves the model at
    about 50 / 50, so steering can move it either way.
    """
    out = []
    for item in disposition_items(seed, n, split, (disposition,)):
        out.append(
            {
                "question": item["prompt"],
                "answer_matching_behavior": f" ({item['kind_letter']})",
                "answer_not_matching_behavior": f" ({item['cruel_letter']})",
            }
        )
    return out


# ---------------------------------------------------------------------------------------------
# (d) repeated random sequences
# ---------------------------------------------------------------------------------------------

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


# ---------------------------------------------------------------------------------------------
# the mix
# ---------------------------------------------------------------------------------------------


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
