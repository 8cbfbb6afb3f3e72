"""recipes/tuned_lens.py: logit vs tuned lens (and the state lens) on several zoo architectures in one run.

The first run builds the zoo models (minutes, cached afterwards); the recipe itself takes seconds per
model at these settings.
"""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import torch

pytest.importorskip("tuned_lens", reason="optional extra: pip install 'nnsight-rnn[tuned-lens]'")

from tuned_lens import TunedLens

from nnsight_rnn.integrations import tuned_lens as tl_rnn
from nnsight_rnn.integrations.tuned_lens_cli import load_model

# Runs the recipe CLI on the zoo's trained models (built on first use: minutes of CPU): -m slow.
pytestmark = pytest.mark.slow

RECIPE = Path(__file__).resolve().parents[2] / "recipes" / "tuned_lens.py"
MODELS = ["zoo/mamba-tiny", "zoo/mamba2-tiny", "zoo/rwkv4-tiny", "zoo/gpt2-tiny"]


def _recipe() -> ModuleType:
    spec = importlib.util.spec_from_file_location("nnsight_rnn_recipe_tuned_lens", RECIPE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def recipe() -> ModuleType:
    return _recipe()


@pytest.fixture(scope="module")
def run(recipe: ModuleType, tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], Path]:
    out = tmp_path_factory.mktemp("tuned-lens")
    results = recipe.main(["--models", *MODELS, "--out", str(out), "--steps", "60", "--eval-tokens", "2048",
                           "--state-lens", "--state-lens-steps", "60", "--state-lens-sequences", "16",
                           "--no-progress"])  # fmt: skip
    yield results, out
    tl_rnn.disable()


def test_writes_json_and_png_for_every_architecture(run: tuple[dict[str, Any], Path]) -> None:
    results, out = run
    assert json.loads((out / "tuned_lens.json").read_text()) == json.loads(json.dumps(results))
    png = (out / "tuned_lens.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000
    families = {rec["family"] for rec in results["models"].values()}
    assert families == {"mamba", "mamba2", "rwkv4", "gpt2"}


def test_tuned_lens_beats_logit_lens_at_every_layer(run: tuple[dict[str, Any], Path]) -> None:
    results, _ = run
    for name, rec in results["models"].items():
        assert len(rec["layers"]) == rec["n_layers"]
        assert [layer["depth"] for layer in rec["layers"]] == [i / rec["n_layers"] for i in range(rec["n_layers"])]
        for layer in rec["layers"]:
            assert layer["tuned"]["ce_bpb"] < layer["logit"]["ce_bpb"], (name, layer)
            assert layer["tuned"]["kl_bits"] < layer["logit"]["kl_bits"], (name, layer)
            assert layer["tuned"]["ce_bpb"] >= rec["final_ce_bpb"] - 0.05, (name, layer)  # no lens beats the model
        assert rec["train_loss_kl_nats"]["last"] < rec["train_loss_kl_nats"]["first"]


def test_lenses_are_saved_in_tuned_lens_format(run: tuple[dict[str, Any], Path]) -> None:
    results, _ = run
    for name, rec in results["models"].items():
        model = load_model(name)
        lens = TunedLens.from_model_and_pretrained(model, rec["lens_dir"])
        assert len(lens) == rec["n_layers"]


def test_state_lens_only_for_recurrent_models(run: tuple[dict[str, Any], Path]) -> None:
    results, _ = run
    for rec in results["models"].values():
        if not rec["recurrent"]:
            assert "state_lens" not in rec
            continue
        state = rec["state_lens"]["layers"]
        assert [s["layer"] for s in state] == list(range(rec["n_layers"]))
        for s in state:
            assert math.isfinite(s["ce_bpb"]) and s["kl_bits"] >= 0
            # The memory alone predicts better than the embeddings read by the logit lens.
            assert s["ce_bpb"] < rec["layers"][0]["logit"]["ce_bpb"]


def test_local_text_file(recipe: ModuleType, tmp_path: Path) -> None:
    text = tmp_path / "notes.txt"
    from nnsight_rnn.corpus import grammar_text

    text.write_text("\n".join(grammar_text(5, 400)) + "\n")
    results = recipe.main(["--models", "zoo/rwkv4-tiny", "--data", str(text), "--out", str(tmp_path / "out"),
                           "--steps", "10", "--eval-tokens", "512", "--no-progress"])  # fmt: skip
    rec = results["models"]["zoo/rwkv4-tiny"]
    assert results["data"]["train_documents"] == 360 and results["data"]["eval_documents"] == 40
    assert 1.0 < rec["nats_to_bpb"] * math.log(2) < 1.1  # byte tokens: one per byte plus the separators
    assert (tmp_path / "out" / "tuned_lens.png").exists()


def test_data_errors(recipe: ModuleType, tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"content": "x"}) + "\n")
    with pytest.raises(KeyError, match="no 'text' field"):
        recipe.read_documents(bad)
    tok = type("T", (), {"eos_token_id": 256, "__call__": lambda self, s, **k: {"input_ids": list(s.encode())}})()
    ids, ratio = recipe.pack(tok, ["abc", "de"], 4)
    assert ids.tolist() == [[256, 97, 98, 99], [256, 100, 101, 256]] and ratio == pytest.approx(8 / 5 / math.log(2))
    with pytest.raises(ValueError, match="not enough"):
        recipe.pack(tok, ["a"], 64)


def test_bits_per_byte_matches_the_model_loss(recipe: ModuleType) -> None:
    """The recipe's final CE is the model's own next-token loss, converted (checked on a fresh batch)."""
    model = load_model("zoo/gpt2-tiny")
    ids = torch.randint(0, 256, (2, 16))
    metrics = recipe.evaluate_lenses(model, {}, ids)
    with torch.no_grad():
        loss = model(ids, labels=ids).loss
    assert metrics["final_ce"] == pytest.approx(float(loss), rel=1e-5)
