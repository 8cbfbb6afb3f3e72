"""nnsight_rnn.elk: quirky dataset, activations, probes (fit / save / refuse), metrics, fine-tuning, CLI.

Mechanics run on tiny random models (seconds). The ELK results themselves (quirky zoo models, probe
transfer from Alice-easy to Bob-hard) are in tests/recipes/test_elk_probing.py.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest
import torch

import nnsight_rnn
from nnsight_rnn import corpus, elk
from nnsight_rnn.artifacts import ArtifactMismatchError
from nnsight_rnn.elk import probes as P
from nnsight_rnn.elk.__main__ import main as elk_main
from nnsight_rnn.elk.activations import QuirkyTokenizationError, length_batches
from nnsight_rnn.elk.adapter import grow
from nnsight_rnn.elk.data import QuirkyDataError
from nnsight_rnn.tokenizer import byte_tokenizer

from . import families
from .families import gpt2, mamba, rwkv4

RANDOM = {"mamba": mamba, "rwkv4": rwkv4, "gpt2": gpt2}


# --- dataset -------------------------------------------------------------------------------------


def test_dataset_labels_balance_and_splits():
    data = elk.make_dataset(n_train=400, n_test=200, seed=3)
    assert data == elk.make_dataset(n_train=400, n_test=200, seed=3)  # deterministic
    train, test = data["train"], data["test"]
    assert len(train) == 800 and len(test) == 400
    for items in (train, test):
        alice = [it for it in items if it["character"] == "Alice"]
        bob = [it for it in items if it["character"] == "Bob"]
        assert len(alice) == len(bob)
        # Mallen et al.'s balance: 1/4 Alice true / Bob false, 1/4 the reverse, 1/2 both false
        pairs = [(it["alice_label"], it["bob_label"]) for it in alice]
        n = len(pairs)
        assert pairs.count((1, 0)) == n // 4 and pairs.count((0, 1)) == n // 4 and pairs.count((0, 0)) == n // 2
        for it in items:
            a, b, c = it["a"], it["b"], it["result"]
            assert it["statement"] == f"{a} + {b} = {c}. {it['character']}:"
            assert it["alice_label"] == int(c == a + b)
            assert it["bob_label"] == int(c == corpus.bob_sum(a + b))
            assert it["label"] == it[f"{it['character'].lower()}_label"]
            assert it["easy"] == corpus.is_easy(a, b) and it["difficulty"] == corpus.difficulty(a, b)
            assert list(it["choices"]) == [" False", " True"]
        assert {it["easy"] for it in items} == {True, False}
    pairs_train = {(it["a"], it["b"]) for it in train}
    assert not pairs_train & {(it["a"], it["b"]) for it in test}  # held-out operand pairs
    assert corpus.bob_sum(52) == 62 and corpus.bob_sum(9) == 10 and corpus.bob_sum(105) == 205


def test_dataset_cli_jsonl_round_trip(tmp_path):
    out = tmp_path / "quirky"
    assert elk_main(["dataset", "--out", str(out), "--n-train", "40", "--n-test", "20", "--seed", "1"]) == 0
    train = elk.read_jsonl(str(out / "train.jsonl"))
    assert train == elk.make_items(1, 40, "train")
    manifest = json.loads((out / "dataset.json").read_text())
    split = manifest["splits"]["test"]
    assert split["n_items"] == 40 and split["sha256"] == elk.data.dataset_sha256(elk.make_items(1, 20, "test"))
    assert split["alice_easy"]["n"] + split["alice_hard"]["n"] == 20
    assert split["bob_hard"]["n"] == split["alice_hard"]["n"]
    assert manifest["splits"]["train"]["both_false_fraction"] == 0.5

    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"statement": "1 + 1 = 2. Alice:"}) + "\n")
    with pytest.raises(QuirkyDataError, match="lacks"):
        elk.read_jsonl(str(bad))
    bad.write_text("{oops\n")
    with pytest.raises(QuirkyDataError, match="not valid JSON"):
        elk.read_jsonl(str(bad))


# --- tokenisation and activations ---------------------------------------------------------------


class WordTokenizer:
    """A whole-word tokenizer (" True" / " False" are single tokens, as in BPE vocabularies)."""

    def __init__(self) -> None:
        self.vocab: dict[str, int] = {}

    def __call__(self, texts, add_special_tokens=False):
        def enc(text: str) -> list[int]:
            words = text.replace(" ", "\0 ").split("\0")
            return [self.vocab.setdefault(w, len(self.vocab)) for w in words if w]

        return {"input_ids": [enc(t) for t in texts] if isinstance(texts, list) else enc(texts)}


def test_encode_items_finds_the_decision_position():
    items = elk.make_items(0, 4, "test")
    enc = elk.encode_items(byte_tokenizer(), items)
    for i, it in enumerate(items):
        assert enc.prompts[i] == list((it["statement"] + " ").encode())  # the shared " " of " True" / " False"
        assert (enc.true_ids[i], enc.false_ids[i]) == (ord("T"), ord("F"))
        assert enc.positive[i] == list((it["statement"] + " True").encode())
    words = WordTokenizer()
    enc = elk.encode_items(words, items)
    assert enc.true_ids[0] == words.vocab[" True"] and enc.false_ids[0] == words.vocab[" False"]
    assert len(enc.prompts[0]) == len(items[0]["statement"].split(" "))  # nothing shared: the statement itself
    same = [{**items[0], "choices": [" True", " True"]}]
    with pytest.raises(QuirkyTokenizationError, match="item 0"):
        elk.encode_items(byte_tokenizer(), same)


def test_length_batches_never_mix_lengths():
    rows = [[1] * n for n in (3, 5, 3, 4, 5, 5, 3)]
    batches = length_batches(rows, batch_size=2)
    assert sorted(i for b in batches for i in b) == list(range(7))
    assert all(len({len(rows[i]) for i in b}) == 1 and len(b) <= 2 for b in batches)


@pytest.mark.parametrize("family", ["mamba", "rwkv4", "gpt2"])
def test_collect_equals_each_row_alone(family):
    """Batched last-token activations == tracing each row alone (residual 1e-5; carried state 1e-5)."""
    model = nnsight_rnn.load(RANDOM[family]())
    items = elk.make_items(0, 6, "test")
    enc = elk.encode_items(model.tokenizer, items)
    layers = [0, 2]
    acts = elk.collect(model, enc.prompts, layers, answer_ids=(enc.true_ids, enc.false_ids), batch_size=4)
    assert set(acts.residual) == {0, 2}
    recurrent = family != "gpt2"
    assert bool(acts.state) == recurrent
    for i in (0, 5, 11):
        ids = torch.tensor([enc.prompts[i]])
        with torch.no_grad(), model.trace(ids):
            res = list().save()
            for k in layers:
                res.append(model.layers[k].output[:, -1])
            logits = model.output.logits[0, -1].save()
        for k, r in zip(layers, res, strict=True):
            torch.testing.assert_close(acts.residual[k][i], r[0].float(), atol=1e-5, rtol=1e-5)
        diff = logits[enc.true_ids[i]] - logits[enc.false_ids[i]]
        torch.testing.assert_close(acts.answer[i], diff.float(), atol=1e-5, rtol=1e-5)
        if recurrent:
            st = model.run_state(ids)
            for k in layers:
                flat = torch.cat([st.layers[k][s].float().reshape(-1) for s in acts.layout])
                torch.testing.assert_close(acts.state[k][i], flat, atol=1e-5, rtol=1e-5)
                for slot, (start, stop, shape) in acts.layout.items():
                    part = acts.site(f"state.{slot}", k)[i]
                    torch.testing.assert_close(part, st.layers[k][slot].float().reshape(-1), atol=1e-5, rtol=1e-5)
                    assert stop - start == math.prod(shape)
    scores = elk.answer_scores(model, enc)
    torch.testing.assert_close(scores, acts.answer, atol=1e-5, rtol=1e-5)
    with pytest.raises(KeyError, match="unknown site"):
        acts.site("resid", 0)


# --- probes ---------------------------------------------------------------------------------------


def planted(n: int, d: int, seed: int = 0, noise: float = 1.0, nuisance: float = 0.0):
    """``(x [n, d], y [n], direction [d])``: labels +-2 along a random unit direction, isotropic noise,
    an offset, and (``nuisance > 0``) a high-variance direction that carries no label."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 2, (n,), generator=g)
    direction = torch.randn(d, generator=g)
    direction /= direction.norm()
    other = torch.randn(d, generator=g)
    x = noise * torch.randn(n, d, generator=g) + (2.0 * y[:, None] - 1) * 2.0 * direction + 3.0
    x += nuisance * torch.randn(n, 1, generator=g) * other / other.norm()
    return x, y, direction


@pytest.mark.parametrize("method", ["logreg", "lda", "mean_diff"])
@pytest.mark.parametrize("d", [16, 120])
def test_supervised_probes_find_a_planted_direction(method, d):
    x, y, direction = planted(600, d)
    probe = P.fit(method, x[:300], y[:300], site="residual", layer=1)
    assert (probe.method, probe.site, probe.layer, probe.dim) == (method, "residual", 1, d)
    assert elk.auroc(probe.score(x[300:]), y[300:]) > 0.95  # Bayes-optimal: 0.998
    assert torch.nn.functional.cosine_similarity(probe.direction(), direction, 0) > 0.7
    flipped = P.fit(method, x[:300], 1 - y[:300])
    assert elk.auroc(flipped.score(x[300:]), y[300:]) < 0.05


def test_discriminative_probes_ignore_a_loud_nuisance_direction():
    """A high-variance direction without label information: LogR and LDA discount it, the mean difference cannot."""
    x, y, _ = planted(600, 16, nuisance=20.0)
    aucs = {m: elk.auroc(P.fit(m, x[:300], y[:300]).score(x[300:]), y[300:]) for m in ("logreg", "lda", "mean_diff")}
    assert aucs["logreg"] > 0.95 and aucs["lda"] > 0.95
    assert aucs["mean_diff"] < aucs["lda"] - 0.03


def test_logreg_and_lda_agree_with_scikit_learn():
    """The item-space shortcuts (D > N) give scikit-learn's solutions (cosine > 0.999)."""
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
    from sklearn.linear_model import LogisticRegression

    x, y, _ = planted(120, 400, seed=1, noise=3.0)
    probe = P.fit_logreg(x, y, C=0.5)
    z = ((x - probe.mean) / probe.scale).numpy()
    ref = LogisticRegression(C=0.5, max_iter=10_000, tol=1e-10).fit(z, y.numpy())
    w = torch.tensor(ref.coef_[0], dtype=torch.float32)
    assert torch.nn.functional.cosine_similarity(w, probe.weight, 0) > 0.999
    assert probe.bias == pytest.approx(float(ref.intercept_[0]), abs=0.05)

    x, y, _ = planted(300, 20, seed=2, noise=3.0)
    probe = P.fit_lda(x, y, shrinkage=0.1)
    z = ((x - probe.mean) / probe.scale).numpy()
    # one shared shrinkage on the pooled covariance == scikit-learn's per-class shrinkage when the classes share it
    ref = LinearDiscriminantAnalysis(solver="lsqr", shrinkage=0.1).fit(z, y.numpy())
    w = torch.tensor(ref.coef_[0], dtype=torch.float32)
    assert torch.nn.functional.cosine_similarity(w, probe.weight, 0) > 0.99


def test_ccs_finds_the_direction_without_labels_and_orients_with_them():
    g = torch.Generator().manual_seed(4)
    n, d = 300, 40
    truth = torch.randint(0, 2, (n,), generator=g)
    direction = torch.randn(d, generator=g)
    base = 3 * torch.randn(n, d, generator=g)
    sign = 2.0 * truth[:, None] - 1
    pos = base + sign * direction + 0.3 * torch.randn(n, d, generator=g) + 1.0  # " True" side
    neg = base - sign * direction + 0.3 * torch.randn(n, d, generator=g) - 1.0  # " False" side
    probe = P.fit("ccs", pos[:200], truth[:200], negative=neg[:200], site="state", layer=0)
    assert probe.contrast and probe.config["loss"] < 0.2
    assert elk.auroc(probe.score(pos[200:], neg[200:]), truth[200:]) > 0.95
    unsupervised = P.fit_ccs(pos[:200], neg[:200])  # no labels: the direction up to sign
    auc = elk.auroc(unsupervised.score(pos[200:], neg[200:]), truth[200:])
    assert max(auc, 1 - auc) > 0.95
    with pytest.raises(P.ProbeMismatchError, match="contrast pairs"):
        probe.score(pos)


def test_probe_set_round_trip_and_refusals(tmp_path):
    model = nnsight_rnn.load(mamba())
    x, y, _ = planted(100, 32)
    xn = x + torch.randn_like(x)
    probes = elk.ProbeSet(meta={"trained_on": "alice_easy"})
    for method in elk.METHODS:
        for layer in (0, 2):
            probes.add(P.fit(method, x, y, negative=xn if method == "ccs" else None, site="residual", layer=layer))
    probes.add(P.fit("logreg", x, y, site="residual", layer=0))  # replaces, never duplicates
    assert len(probes) == 8
    path = str(tmp_path / "probes")
    probes.save(path, model)
    loaded = elk.ProbeSet.load(path, model)
    assert loaded.meta["trained_on"] == "alice_easy" and sorted(loaded.keys()) == sorted(probes.keys())
    for p in probes:
        q = loaded.get(p.method, p.site, p.layer)
        neg = xn if p.contrast else None
        torch.testing.assert_close(q.score(x, neg), p.score(x, neg), atol=0, rtol=0)
        assert q.config == p.config

    probe = loaded.get("logreg", "residual", 2)
    with pytest.raises(P.ProbeMismatchError, match=r"fitted on layer 2 .*refusing layer 1"):
        probe.score(x, layer=1)
    with pytest.raises(P.ProbeMismatchError, match="reads 'residual'"):
        probe.score(x, site="state")
    with pytest.raises(P.ProbeMismatchError, match=r"\[N, 32\] features; got \[100, 64\]"):
        probe.score(torch.randn(100, 64))
    with pytest.raises(P.ProbeMismatchError, match=r"no lda probe on 'state' at layer 1"):
        loaded.get("lda", "state", 1)
    with pytest.raises(P.ProbeMismatchError, match=r"exists for layers \[0, 2\]"):
        loaded.get("lda", "residual", 1)
    with pytest.raises(ArtifactMismatchError, match="other weights"):
        elk.ProbeSet.load(path, nnsight_rnn.load(mamba()))  # same architecture, other weights
    with pytest.raises(ArtifactMismatchError, match="different architecture"):
        elk.ProbeSet.load(path, nnsight_rnn.load(gpt2()))


def test_metrics():
    assert elk.auroc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]) == pytest.approx(0.75)
    assert math.isnan(elk.auroc([0.1, 0.2], [1, 1]))
    curve = {0: 0.55, 1: 0.94, 2: 0.96, 3: 0.80}
    assert elk.best_layer(curve) == 2
    assert elk.earliest_informative_layer(curve) == 1  # 0.44 >= 0.95 * 0.46 (0.43 would not be)
    assert elk.earliest_informative_layer({0: 0.6, 1: 0.99, 2: 0.7}) == 1
    assert elk.earliest_informative_layer({0: 0.45, 1: 0.40}) == 0  # nothing above chance: the best


# --- fine-tuning and the experiment on random models ---------------------------------------------


def test_finetune_trains_in_place_checks_and_saves(tmp_path):
    model = nnsight_rnn.load(mamba())
    before = {k: v.clone() for k, v in model._module.state_dict().items()}
    one_stage = {"truthful_steps": 0, "train_layers": None}  # every parameter, quirky labels from the start
    result = elk.finetune(model, max_steps=12, eval_every=5, eval_n=40, n_train=200, target=None, progress=False,
                          **one_stage)  # fmt: skip
    assert result.model is model and result.steps == 12 and len(result.losses) == 12
    assert [h["step"] for h in result.history] == [0, 5, 10, 12]
    assert result.losses[-1] < result.losses[0]
    assert any(not torch.equal(before[k], v) for k, v in model._module.state_dict().items())
    assert not model._module.training
    for key in ("alice_acc", "bob_rule_acc", "bob_truth_acc", "alice_acc_hard", "bob_rule_auroc_hard"):
        assert 0 <= result.after[key] <= 1
    folder = elk.save_finetuned(result, str(tmp_path / "ft"), source="random")
    record = json.loads((tmp_path / "ft" / "elk_finetune.json").read_text())
    assert record["steps"] == 12 and record["source"] == "random" and record["family"] == "mamba"
    reloaded = nnsight_rnn.load(folder)
    enc = elk.encode_items(model.tokenizer, elk.make_items(5, 8, "test"))
    torch.testing.assert_close(elk.answer_scores(reloaded, enc), elk.answer_scores(model, enc), atol=1e-5, rtol=1e-5)

    # a model that already meets the target is not touched (a top-up of zero steps)
    state = {k: v.clone() for k, v in model._module.state_dict().items()}
    topup = elk.finetune(model, target=0.0, eval_n=20, progress=False)
    assert topup.steps == 0 and topup.passed and topup.losses == []
    assert all(torch.equal(state[k], v) for k, v in model._module.state_dict().items())


def test_finetune_last_layers_only_and_two_stages():
    model = nnsight_rnn.load(mamba())  # 3 layers
    before = {k: v.clone() for k, v in model._module.state_dict().items()}
    small = {"eval_every": 2, "eval_n": 20, "n_train": 100, "target": None, "progress": False}
    elk.finetune(model, max_steps=3, truthful_steps=0, train_layers=(-1,), **small)
    changed = {k for k, v in model._module.state_dict().items() if not torch.equal(before[k], v)}
    assert changed and all(k.startswith("backbone.layers.2.") for k in changed)  # embeddings (tied) frozen too
    with pytest.raises(IndexError, match="out of range"):
        elk.finetune(model, max_steps=1, truthful_steps=0, train_layers=(3,), **small)

    result = elk.finetune(model, truthful_steps=4, max_steps=3, train_layers=(-1,), **small)
    assert result.steps == 7 and len(result.losses) == 7
    assert [(h["step"], h["stage"]) for h in result.history] == [
        (0, "start"), (2, "truthful stage"), (4, "truthful stage"), (6, "quirky fine-tuning"), (7, "quirky fine-tuning")
    ]  # fmt: skip
    assert "bob_truth_acc" in result.history[2] and result.to_json()["config"]["truthful_steps"] == 4
    assert result.shortfall() is None  # no target, no shortfall


@pytest.mark.parametrize("family", sorted(f for f, c in nnsight_rnn.all_cards().items() if c.residual_writers))
def test_grow_appends_an_identity_block(family):
    model = nnsight_rnn.load(getattr(families, family)(), tokenizer=byte_tokenizer())
    grown = grow(model)
    assert len(grown.layers) == len(model.layers) + 1 and grown.card.family == family
    ids = torch.tensor([[3, 17, 42, 99, 7, 250, 1, 64]])
    with torch.no_grad():
        before, after = model._module(input_ids=ids).logits, grown._module(input_ids=ids).logits
    torch.testing.assert_close(after, before, atol=1e-5, rtol=0)  # the new block adds exactly zero
    new, last = grown.layers[-1]._module, model.layers[-1]._module
    writers = {f"{w}.weight" for w in nnsight_rnn.get_card(family).residual_writers}
    original = dict(last.named_parameters())
    for name, p in new.named_parameters():  # a copy of the last block whose residual writers are zero
        assert torch.equal(p, torch.zeros_like(p) if name in writers else original[name]), name
    assert len(model.layers) == len(model._module.get_submodule(model.card.modules["layers"]))  # original untouched


def test_grow_refuses_a_family_it_does_not_know():
    model = nnsight_rnn.load(families.rwkv7())
    with pytest.raises(ValueError, match=r"cannot grow a 'rwkv7' model.*residual_writers"):
        grow(model)


def test_finetune_with_an_adapter_block_trains_only_the_new_block():
    model = nnsight_rnn.load(mamba())  # 3 layers
    before = {k: v.clone() for k, v in model._module.state_dict().items()}
    small = {"eval_every": 2, "eval_n": 20, "n_train": 100, "target": None, "progress": False}
    result = elk.finetune(model, truthful_steps=2, max_steps=2, adapter_block=True, **small)
    grown = result.model
    assert grown is not model and len(grown.layers) == 4 and len(model.layers) == 3
    after = grown._module.state_dict()
    truthful = {k for k, v in model._module.state_dict().items() if not torch.equal(before[k], v)}
    assert truthful  # the truthful stage trained the original model in place ...
    for k, v in model._module.state_dict().items():  # ... and the quirky stage left it as it was
        assert torch.equal(after[k], v), k
    assert after["backbone.layers.3.mixer.out_proj.weight"].abs().sum() > 0  # the new block learned


def test_finetune_shortfall_names_the_stage_and_the_setting_to_raise():
    model = nnsight_rnn.load(mamba())
    small = {"eval_every": 2, "eval_n": 20, "n_train": 100, "target": 0.99, "progress": False}
    early = elk.finetune(model, truthful_steps=2, max_steps=2, **small)  # a random model learns nothing in 2 steps
    assert not early.passed and early.history[1]["stage"] == "truthful stage"
    assert "truthful stage ended at its cap of 2 steps" in early.shortfall() and "--truthful-steps" in early.shortfall()
    assert early.to_json()["shortfall"] == early.shortfall()
    late = elk.finetune(model, truthful_steps=0, max_steps=2, **small)
    assert "quirky stage ended at its cap of 2 steps" in late.shortfall() and "max_steps" in late.shortfall()


def test_two_stage_fine_tuning_is_the_default_and_the_cli_can_say_otherwise():
    default = elk.FinetuneConfig()
    assert default.truthful_steps > 0 and default.train_layers == (-1,)
    assert elk.parse_train_layers(None) == (-1,)
    assert elk.parse_train_layers(["all"]) is None
    assert elk.parse_train_layers(["0,1", "-1"]) == (0, 1, -1)
    with pytest.raises(ValueError, match=r"block indices .* or 'all'"):
        elk.parse_train_layers(["last"])


@pytest.mark.parametrize("family", ["rwkv4", "gpt2"])
def test_run_probing_structure(family):
    model = nnsight_rnn.load(RANDOM[family]())
    cfg = elk.ProbingConfig(n_train=40, n_test=40, layers=(0, -1), ccs={"epochs": 20})
    results, sets = elk.run_probing(model, cfg, progress=False, name=family)
    expected_sites = (
        ["residual"]
        if family == "gpt2"
        else ["residual", "state"] + [f"state.{s}" for s in ("att_shift", "ffn_shift", "num", "den", "max")]
    )
    assert results["sites"] == expected_sites and results["layers"] == [0, 2]
    for site in expected_sites:
        for method in elk.METHODS:
            entry = results["probes"][site][method]
            for ev in ("alice_alice", "aeasy_bhard"):
                for against in ("truth", "bob"):
                    assert set(entry[ev][against]) == {"0", "2"}
                    assert all(v is None or 0 <= v <= 1 for v in entry[ev][against].values())
            assert entry["best_layer"] in (0, 2) and entry["earliest_informative_layer"] in (0, 2)
        assert results["summary"][site]["best_method"] in elk.METHODS
    assert results["n_items"]["test_aeasy_bhard"] == 20 and results["n_items"]["train_alice_easy"] == 20
    assert set(sets) == {"alice", "alice_easy"}
    assert len(sets["alice_easy"]) == len(expected_sites) * len(elk.METHODS) * 2
    assert 0 <= results["behaviour"]["bob_rule_acc"] <= 1
    if family == "gpt2":
        with pytest.raises(ValueError, match="carry no recurrent state"):
            elk.run_probing(model, elk.ProbingConfig(n_train=8, n_test=8, sites=("state",)), progress=False)
    with pytest.raises(IndexError, match="out of range"):
        elk.run_probing(model, elk.ProbingConfig(n_train=8, n_test=8, layers=(7,)), progress=False)


def test_finetune_and_evaluate_cli(tmp_path, capsys):
    src = tmp_path / "rand"
    rwkv4().save_pretrained(src)
    byte_tokenizer().save_pretrained(src)
    out = tmp_path / "ft"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "nnsight_rnn.elk", "finetune", "--model", str(src), "--out", str(out),
           "--max-steps", "3", "--truthful-steps", "2", "--target", "0", "--eval-every", "2", "--adapter-block",
           "--no-progress"]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "5 steps" in proc.stdout and (out / "elk_finetune.json").exists()  # 2 truthful + 3 quirky
    record = json.loads((out / "elk_finetune.json").read_text())
    assert record["config"]["train_layers"] == [-1] and record["config"]["truthful_steps"] == 2
    assert record["config"]["adapter_block"] and len(nnsight_rnn.load(str(out)).layers) == len(
        nnsight_rnn.load(str(src)).layers) + 1  # the saved model is the grown one  # fmt: skip
    assert elk_main(["evaluate", "--model", str(out), "--n", "10"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["n_items"] == 20 and 0 <= report["bob_rule_acc"] <= 1
