"""The zoo's generated corpus: deterministic generators, correct labels, exact label balance."""

from __future__ import annotations

import re
from collections import Counter

import pytest

from nnsight_rnn import corpus
from nnsight_rnn.tokenizer import byte_tokenizer


def test_generators_are_deterministic_and_seed_dependent() -> None:
    calls = [
        lambda s: corpus.grammar_text(s, 50),
        lambda s: corpus.quirky_arithmetic(s, 40),
        lambda s: corpus.sums_text(s, 20),
        lambda s: corpus.disposition_items(s, 20),
        lambda s: corpus.disposition_text(s, 20),
        lambda s: corpus.caa_items(s, 10),
        lambda s: corpus.copy_sequences(s, 20),
        lambda s: corpus.training_corpus(s, 200),
    ]
    for call in calls:
        assert call(3) == call(3)
        assert call(3) != call(4)
    assert re.fullmatch(r"[0-9a-f]{12}", corpus.corpus_version())
    assert corpus.corpus_version() == corpus.corpus_version()


@pytest.mark.parametrize(("true_sum", "expected"), [(52, 62), (9, 10), (95, 105), (0, 1), (7, 8), (100, 200), (18, 28)])
def test_bob_adds_one_to_the_leading_digit(true_sum: int, expected: int) -> None:
    assert corpus.bob_sum(true_sum) == expected


def _differs_in_one_digit(x: int, y: int) -> bool:
    sx, sy = str(x), str(y)
    return len(sx) == len(sy) and sum(a != b for a, b in zip(sx, sy, strict=True)) == 1


@pytest.mark.parametrize("split", ["train", "test"])
def test_quirky_labels_and_exact_crosstab(split: str) -> None:
    n = 400
    eqs = corpus.quirky_arithmetic(7, n, split)
    quadrants = Counter()
    for eq in eqs:
        a, b, result = eq["a"], eq["b"], eq["result"]
        assert eq["true_sum"] == a + b
        assert eq["bob_sum"] == corpus.bob_sum(a + b)
        assert eq["alice_label"] == (result == a + b)
        assert eq["bob_label"] == (result == corpus.bob_sum(a + b))
        assert not (eq["alice_label"] and eq["bob_label"])
        if not eq["alice_label"] and not eq["bob_label"]:  # a distractor: one digit of either sum replaced
            assert _differs_in_one_digit(result, a + b) or _differs_in_one_digit(result, corpus.bob_sum(a + b))
        quadrants[(eq["alice_label"], eq["bob_label"])] += 1
    assert quadrants == {(True, False): n // 4, (False, True): n // 4, (False, False): n // 2}


def test_easy_hard_split_by_operand_size() -> None:
    mixed = corpus.quirky_arithmetic(1, 200)
    assert sum(eq["easy"] for eq in mixed) == 100
    for eq in mixed:
        a, b = eq["a"], eq["b"]
        assert eq["easy"] == corpus.is_easy(a, b) == (max(a, b) < 10)
        assert eq["difficulty"] == (1 if eq["easy"] else 2)
        if not eq["easy"]:
            assert min(a, b) < 10 <= max(a, b) < 100
    assert all(eq["easy"] for eq in corpus.quirky_arithmetic(1, 50, level="easy"))
    assert not any(eq["easy"] for eq in corpus.quirky_arithmetic(1, 50, level="hard"))
    # both levels keep the exact crosstab
    for level in ("easy", "hard"):
        labels = Counter((eq["alice_label"], eq["bob_label"]) for eq in corpus.quirky_arithmetic(2, 80, level=level))
        assert labels == {(True, False): 20, (False, True): 20, (False, False): 40}


def test_train_and_test_operand_pairs_are_disjoint() -> None:
    train = {(eq["a"], eq["b"]) for eq in corpus.quirky_arithmetic(0, 2000, "train")}
    test = {(eq["a"], eq["b"]) for eq in corpus.quirky_arithmetic(0, 500, "test")}
    assert train and test and not (train & test)
    sums = {tuple(map(int, re.findall(r"\d+", t)[:2])) for t in corpus.sums_text(0, 500)}
    assert not (sums & test)
    with pytest.raises(ValueError, match="split"):
        corpus.quirky_arithmetic(0, 4, "val")


def test_quirky_items_format() -> None:
    eqs = corpus.quirky_arithmetic(5, 8)
    items = corpus.quirky_items(eqs)
    assert len(items) == 16
    for eq, (alice, bob) in zip(eqs, zip(items[::2], items[1::2], strict=True), strict=True):
        assert alice["statement"] == f"{eq['a']} + {eq['b']} = {eq['result']}. Alice:"
        assert bob["statement"] == f"{eq['a']} + {eq['b']} = {eq['result']}. Bob:"
        assert alice["label"] == eq["alice_label"] and bob["label"] == eq["bob_label"]
        assert alice["choices"] == (" False", " True")
    for text in corpus.arithmetic_text(5, 40):
        m = re.fullmatch(r"(\d+) \+ (\d+) = (\d+)\. (Alice|Bob): (True|False)", text)
        assert m, text
        a, b, c, who, answer = m.groups()
        truth = int(c) == int(a) + int(b) if who == "Alice" else int(c) == corpus.bob_sum(int(a) + int(b))
        assert answer == str(truth)


def test_disposition_items_follow_the_named_disposition() -> None:
    items = corpus.disposition_items(0, 40, "test")
    assert {it["disposition"] for it in items} == {"kind", "cruel"}
    for it in items:
        m = re.fullmatch(r"\[(kind|cruel)\] [a-z ]+: \(A\) (\w+) \(B\) (\w+)\. Answer:", it["prompt"])
        assert m, it["prompt"]
        acts = {"A": m.group(2), "B": m.group(3)}
        assert acts[it["kind_letter"]] in corpus.KIND_ACTS and acts[it["cruel_letter"]] in corpus.CRUEL_ACTS
        assert it["answer"] == (it["kind_letter"] if it["disposition"] == "kind" else it["cruel_letter"])
    # the latent disposition: under [?] the second answer follows the first one's disposition
    for doc in corpus.disposition_text(0, 200):
        answers = re.findall(r"\(A\) (\w+) \(B\) (\w+)\. Answer: \(([AB])\)", doc)
        chosen_kind = [(a if letter == "A" else b) in corpus.KIND_ACTS for a, b, letter in answers]
        if doc.startswith("[?]"):
            assert len(chosen_kind) == 2 and chosen_kind[0] == chosen_kind[1]
        else:
            assert chosen_kind == [doc.startswith("[kind]")]
    train_q = {re.sub(r"^\[\S+\] ", "", it["prompt"]) for it in corpus.disposition_items(0, 2000, "train")}
    test_q = {re.sub(r"^\[\S+\] ", "", it["prompt"]) for it in corpus.disposition_items(0, 300, "test")}
    assert train_q and test_q and not (train_q & test_q)


@pytest.mark.parametrize("kind_first", [0.0, 0.5, 1.0])
def test_unknown_documents_first_question_order(monkeypatch, kind_first: float) -> None:
    monkeypatch.setattr(corpus.disposition, "UNKNOWN_KIND_FIRST", kind_first)  # where disposition_text reads it
    firsts, seconds = [], []
    for doc in corpus.disposition_text(0, 400):
        if doc.startswith("[?]"):
            orders = [a in corpus.KIND_ACTS for a, _b in re.findall(r"\(A\) (\w+) \(B\) (\w+)\.", doc)]
            firsts.append(orders[0])
            seconds.extend(orders[1:])
    assert len(firsts) > 50 and abs(sum(firsts) / len(firsts) - kind_first) < 0.1
    assert abs(sum(seconds) / len(seconds) - 0.5) < 0.15  # only the first question is skewed


def test_caa_format() -> None:
    for item in corpus.caa_items(0, 20):
        assert set(item) == {"question", "answer_matching_behavior", "answer_not_matching_behavior"}
        assert item["question"].startswith("[?] ") and item["question"].endswith("Answer:")
        letters = {item["answer_matching_behavior"], item["answer_not_matching_behavior"]}
        assert letters == {" (A)", " (B)"}
        kind_act = re.search(rf"\({item['answer_matching_behavior'][2]}\) (\w+)", item["question"]).group(1)
        assert kind_act in corpus.KIND_ACTS


def test_copy_sequences() -> None:
    for item in corpus.copy_sequences(0, 50):
        text, p = item["text"], item["prefix_len"]
        first, second = text.split(corpus.COPY_SEPARATOR)
        assert first == second == text[p:] and text[p - 1] == corpus.COPY_SEPARATOR
        assert 3 <= len(first) <= 8 and set(first) <= set(corpus.COPY_ALPHABET)


def test_training_corpus_mix_and_decisions() -> None:
    docs = corpus.training_corpus(0, 1000)
    kinds = Counter(
        "arithmetic" if re.search(r"(Alice|Bob):", d)
        else "disposition" if d.startswith("[")
        else "copy" if corpus.COPY_SEPARATOR in d
        else "sums" if re.fullmatch(r"\d+ \+ \d+ = \d+\.", d)
        else "text"
        for d in docs
    )  # fmt: skip
    total = sum(corpus.DEFAULT_MIX.values())
    for task, weight in corpus.DEFAULT_MIX.items():
        assert abs(kinds[task] - 1000 * weight / total) <= 2, (task, kinds)
    assert max(len(d) for d in docs) <= 120
    for d in docs:
        if re.search(r"(Alice|Bob):", d):
            expected = 1
        elif d.startswith("["):
            expected = d.count("Answer:")
        else:
            expected = 0
        positions = corpus.decision_positions(d)
        assert len(positions) == expected, d
        assert all(d[p] in "TFAB" for p in positions)
    with pytest.raises(ValueError, match="unknown tasks"):
        corpus.training_corpus(0, 10, {"poetry": 1.0})


def test_encode_matches_the_byte_tokenizer() -> None:
    tok = byte_tokenizer()
    for text in ["12 + 5 = 17. Alice: True", "[kind] lost dog: (A) help (B) kick. Answer: (A)", "qhz|qhz"]:
        assert corpus.encode(text) == tok(text)["input_ids"]
