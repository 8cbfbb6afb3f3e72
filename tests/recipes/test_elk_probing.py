"""ELK on quirky models (issue 8): the zoo's tiny models, quirky-fine-tuned, keep the truth where they answer as Bob.

- On a transformer, a Mamba and an RWKV-4 from the zoo (built on first use, then cached), after the
  quirky top-up (:func:`nnsight_rnn.elk.finetune` with an adapter block, the paper's setting; it stops at once
  if the model already passes):
  the model's own answers in Bob contexts follow Bob's rule >= 90 % of the time on held-out
  equations, while a probe trained on Alice's easy items reaches AUROC >= 0.9 against the truth on
  Bob's hard items at its best residual layer. On Mamba and RWKV the same probing on the carried
  state is run and its best-layer AUROC recorded (printed; run with ``-s`` to see the numbers).
- The whole recipe (fine-tune + probe) on one tiny model, as a user runs it, in under 5 CPU-minutes.
- The recipe's command line on tiny random models: JSON, plots, probes that reload onto their model
  and refuse another.
"""

from __future__ import annotations

import importlib.util
import json
import os
import resource
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

import nnsight_rnn
from nnsight_rnn import elk
from nnsight_rnn.artifacts import ArtifactMismatchError
from nnsight_rnn.tokenizer import byte_tokenizer

from ..families import gpt2, mamba

RECIPES = Path(__file__).resolve().parents[2] / "recipes"
# The transformer is llama-tiny, as in the steering tests: gpt2-tiny does not learn the quirky arithmetic in budget
# (Alice 86 %, Bob rule 87 % after 8000 steps, docs/recipes/elk.md).
ZOO = {"llama": "zoo/llama-tiny", "mamba": "zoo/mamba-tiny", "rwkv4": "zoo/rwkv4-tiny"}
# Fine-tune settings, per family (a table, not a rule). The paper's setting: a truthful model made quirky by a
# late fine-tune that leaves the truth below it, here an adapter block (FinetuneConfig.adapter_block; with the
# default, retraining the last block, the residual probe reaches only 0.52-0.64, docs/recipes/elk.md).
# llama-tiny learns the addition only with a longer truthful stage (Alice 77 % under the default cap of 1000
# steps), Mamba-1's new block needs more than the default 2000 quirky steps to reach the check's target.
ADAPTER = {"adapter_block": True}
FINETUNE = {"llama": {**ADAPTER, "truthful_steps": 4000}, "mamba": {**ADAPTER, "max_steps": 3000}, "rwkv4": ADAPTER}
_results: dict[str, tuple[object, elk.FinetuneResult, dict]] = {}
MEASURED = Path(os.environ.get("NNSIGHT_RNN_ELK_RESULTS", "")) if os.environ.get("NNSIGHT_RNN_ELK_RESULTS") else None
"""If set, a JSON file the zoo tests write their measured numbers to (for reports)."""


def recipe() -> ModuleType:
    spec = importlib.util.spec_from_file_location("recipe_elk_probing", RECIPES / "elk_probing.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def quirky_results(family: str) -> tuple[object, elk.FinetuneResult, dict]:
    """The zoo model after the quirky top-up (:class:`~nnsight_rnn.elk.FinetuneConfig`, ``FINETUNE``), and its probing."""
    if family not in _results:
        model = nnsight_rnn.load(ZOO[family])
        ft = elk.finetune(model, progress=False, **FINETUNE.get(family, {}))
        model = ft.model  # the grown copy when the quirky stage adds a block
        results, _ = elk.run_probing(model, elk.ProbingConfig(n_train=1000, n_test=1000, seed=0), progress=False,
                                     name=ZOO[family])  # fmt: skip
        _results[family] = (model, ft, results)
        b = results["behaviour"]
        print(f"\n{family}: fine-tuning {ft.steps} steps ({ft.cpu_s:.0f} CPU-s); held-out own answers: Alice acc "
              f"{b['alice_acc']}, Bob rule acc {b['bob_rule_acc']} (hard {b['bob_rule_acc_hard']}), Bob vs truth "
              f"{b['bob_truth_acc']}; probing {results['cpu_s']:.0f} CPU-s")  # fmt: skip
        for site, sm in results["summary"].items():
            print(f"  {site}: Alice-easy -> Bob-hard AUROC vs truth {sm['best_auroc']} ({sm['best_method']}, layer "
                  f"{sm['best_layer']}; earliest informative {sm['earliest_informative_layer']})")  # fmt: skip
        if MEASURED is not None:
            done = json.loads(MEASURED.read_text()) if MEASURED.exists() else {}
            done[family] = {"finetune": ft.to_json(), **results}
            MEASURED.write_text(json.dumps(done, indent=1))
    return _results[family]


@pytest.mark.slow  # the zoo's trained models (built on first use: minutes of CPU) and their quirky top-up
@pytest.mark.parametrize("family", ["llama", "mamba", "rwkv4"])
def test_quirky_zoo_model_follows_bob_and_its_state_is_probed(family):
    model, ft, results = quirky_results(family)
    # the fine-tune's own check (600 equations): Bob follows his rule (its 0.92 stop target may be missed by a hair)
    assert ft.after["bob_rule_acc"] >= 0.9 and ft.after["alice_acc"] >= 0.85, ft.after
    assert results["n_items"]["test_aeasy_bhard"] >= 200 and results["n_items"]["train_alice_easy"] >= 200

    # the model's own answers in Bob contexts follow Bob's rule (held-out equations, also the hard ones)
    behaviour = results["behaviour"]
    assert behaviour["bob_rule_acc"] >= 0.9  # the bar: >= 90 % in Bob contexts
    assert behaviour["bob_rule_acc_hard"] >= 0.85  # also on the hard half the probes are tested on
    assert behaviour["alice_acc"] >= 0.8  # Alice is right where Bob is not (always-False: 0.75)
    own = results["model_output_auroc"]["aeasy_bhard"]
    # on Bob-hard its output tracks Bob's labels; the truth it leaks (llama-tiny: 0.62) is far below the probe bar
    # of 0.9, so a probe that meets the bar is not reading the model's answer
    assert own["bob"] > 0.9 and own["truth"] < 0.7, own

    # probes trained on Alice read Alice's truth back about as well as the model's own answer does
    residual = results["probes"]["residual"]
    best_alice = max(max(v for v in residual[m]["alice_alice"]["truth"].values()) for m in ("logreg", "lda"))
    assert best_alice >= 0.9 and best_alice >= behaviour["alice_auroc"] - 0.02, (best_alice, behaviour["alice_auroc"])

    if family != "llama":  # the carried state is probed too; its numbers are recorded, whatever they are
        for site in ("state", *(f"state.{s}" for s in elk.activations.state_layout(model))):
            sm = results["summary"][site]
            assert 0 <= sm["best_auroc"] <= 1 and 0 <= sm["best_layer"] < results["n_layers"]
            assert set(results["probes"][site]) == set(elk.METHODS)


@pytest.mark.slow  # with the adapter block (FINETUNE): the truthful model stays intact below the quirky block
@pytest.mark.parametrize("family", ["llama", "mamba", "rwkv4"])
def test_alice_easy_probe_finds_the_truth_on_bob_hard_in_the_residual_stream(family):
    _, _, results = quirky_results(family)
    residual = results["summary"]["residual"]
    best = results["probes"]["residual"][residual["best_method"]]["aeasy_bhard"]
    layer = str(residual["best_layer"])
    assert residual["best_auroc"] >= 0.9
    assert best["truth"][layer] > best["bob"][layer]  # it tracks the truth, not what Bob says


@pytest.mark.slow  # a zoo model, fine-tuned and probed as a user runs it
@pytest.mark.parametrize(("family", "flags"), [("mamba", []), ("rwkv4", ["--adapter-block"])])
def test_full_recipe_on_one_tiny_model_under_five_cpu_minutes(tmp_path, family, flags):
    """The recipe (two-stage fine-tune until the check passes, then probing): the defaults on zoo/mamba-tiny, and
    the tests' adapter-block setting, where the residual probe meets the paper's bar, on zoo/rwkv4-tiny."""
    nnsight_rnn.load(ZOO[family])  # build the zoo model first (cached): its training is not the recipe
    out = tmp_path / "elk"
    cmd = [sys.executable, str(RECIPES / "elk_probing.py"), "--model", ZOO[family], "--out", str(out),
           "--no-progress", *flags]  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1800)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    assert proc.returncode == 0, proc.stderr[-3000:]
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    results = json.loads((out / "elk_probing.json").read_text())
    rec = results["models"][ZOO[family]]
    print(f"\nfull recipe on {ZOO[family]} {flags}: {cpu:.0f} CPU-s in all (fine-tuning {rec['finetune']['cpu_s']} CPU-s, "
          f"{rec['finetune']['steps']} steps; probing {rec['cpu_s']} CPU-s); summary {rec['summary']}")  # fmt: skip
    assert rec["finetune"]["steps"] > 0 and rec["finetune"]["passed"]  # the zoo model is not quirky: it is trained
    assert cpu < 300, f"the recipe took {cpu:.0f} CPU-s"
    if "--adapter-block" in flags:  # the truthful model is kept below the quirky block: the paper's bar
        assert rec["n_layers"] == len(nnsight_rnn.load(ZOO[family]).layers) + 1
        assert rec["summary"]["residual"]["best_auroc"] >= 0.9, rec["summary"]

    # the probes belong to the fine-tuned model the recipe saved, and refuse the zoo model it started from
    tuned = nnsight_rnn.load(rec["finetune"]["saved_to"])
    probes = elk.ProbeSet.load(rec["probe_sets"]["alice_easy"], tuned)
    assert probes.meta["trained_on"] == "alice_easy" and len(probes) == len(rec["sites"]) * 4 * rec["n_layers"]
    refusal = "different architecture" if "--adapter-block" in flags else "other weights"  # grown: one more block
    with pytest.raises(ArtifactMismatchError, match=refusal):
        elk.ProbeSet.load(rec["probe_sets"]["alice_easy"], nnsight_rnn.load(ZOO[family]))
    # ... and reproduce the recorded AUROC on freshly collected activations
    site, method, layer = (
        "residual",
        rec["summary"]["residual"]["best_method"],
        rec["summary"]["residual"]["best_layer"],
    )
    probe = probes.get(method, site, layer)
    items = elk.make_items(0, 1000, "test")
    bob_hard = [it for it in items if it["character"] == "Bob" and not it["easy"]]
    enc = elk.encode_items(tuned.tokenizer, bob_hard)
    if probe.contrast:
        rows = enc.contrast_rows()
        pos, neg = (elk.collect(tuned, r, [layer], state=False) for r in rows)
        scores = probe.score(pos.residual[layer], neg.residual[layer], layer=layer, site=site)
    else:
        scores = probe.score(
            elk.collect(tuned, enc.prompts, [layer], state=False).residual[layer], layer=layer, site=site
        )
    truth = [it["alice_label"] for it in bob_hard]
    assert elk.auroc(scores, truth) == pytest.approx(rec["summary"]["residual"]["best_auroc"], abs=1e-3)
    assert (out / "elk_probing.png").stat().st_size > 10_000


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("models")
    out = {}
    for name, factory in (("mamba", mamba), ("gpt2", gpt2)):
        path = root / name
        factory().save_pretrained(path)
        byte_tokenizer().save_pretrained(path)
        out[name] = str(path)
    return out


def test_recipe_cli_structure_on_random_models(folders, tmp_path):
    mod = recipe()
    out = tmp_path / "elk"
    argv = ["--model", folders["mamba"], "--model", folders["gpt2"], "--out", str(out), "--finetune", "never",
            "--n-train", "60", "--n-test", "60", "--methods", "logreg", "ccs", "--layers", "0", "2", "--no-progress"]  # fmt: skip
    assert mod.main(argv) == 0
    results = json.loads((out / "elk_probing.json").read_text())
    assert results["recipe"] == "elk_probing" and list(results["models"]) == [folders["mamba"], folders["gpt2"]]
    rec = results["models"][folders["mamba"]]
    assert rec["sites"] == ["residual", "state", "state.conv", "state.ssm"] and rec["layers"] == [0, 2]
    assert "finetune" not in rec and set(rec["probes"]["state.ssm"]) == {"logreg", "ccs"}
    assert results["models"][folders["gpt2"]]["sites"] == ["residual"]
    for name in (folders["mamba"], folders["gpt2"]):
        png = out / mod.slug(name) / "elk_probing.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
        assert json.loads((out / mod.slug(name) / "elk_probing.json").read_text())["family"] in ("mamba", "gpt2")
    model = nnsight_rnn.load(folders["mamba"])
    probes = elk.ProbeSet.load(rec["probe_sets"]["alice"], model)
    assert sorted({p.site for p in probes}) == sorted(rec["sites"]) and {p.layer for p in probes} == {0, 2}
    with pytest.raises(ArtifactMismatchError, match="different architecture"):
        elk.ProbeSet.load(rec["probe_sets"]["alice"], nnsight_rnn.load(folders["gpt2"]))
    with pytest.raises(SystemExit):
        mod.main(["--model", folders["gpt2"], "--out", str(out), "--finetune", "maybe"])
