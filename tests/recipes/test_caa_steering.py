"""recipes/caa_steering.py runs end to end (CLI, JSON, PNG, vectors); shared helpers for the steering recipes.

The CLIs run on tiny random models saved to a temporary folder (what a user passes as --model),
with a few items, so that the whole file takes seconds; the steering effects themselves are
tested on the zoo's trained models in tests/test_steering.py.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

import nnsight_rnn
from nnsight_rnn import steering as S
from nnsight_rnn.tokenizer import byte_tokenizer

from ..families import gpt2, mamba, rwkv4

RECIPES = Path(__file__).resolve().parents[2] / "recipes"


def recipe(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"recipe_{name}", RECIPES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, str]:
    """Tiny random Mamba / RWKV-4 / GPT-2 saved like user checkpoints (with the byte tokenizer)."""
    root = tmp_path_factory.mktemp("models")
    out = {}
    for name, factory in (("mamba", mamba), ("rwkv4", rwkv4), ("gpt2", gpt2)):
        path = root / name
        factory().save_pretrained(path)
        byte_tokenizer().save_pretrained(path)
        out[name] = str(path)
    return out


def test_shipped_dataset_is_the_generated_one():
    """recipes/data/ holds exactly what steering.disposition_dataset generates (regenerate if this fails:
    S.save_items(S.disposition_dataset(split, n), path))."""
    caa = recipe("caa_steering")
    train = S.load_items(str(caa.DEFAULT_TRAIN))
    test = S.load_items(str(caa.DEFAULT_TEST))
    assert train == S.disposition_dataset("train", len(train)) and len(train) == 64
    assert test == S.disposition_dataset("test", len(test)) and len(test) == 48


def test_caa_cli_two_architectures(folders, tmp_path):
    caa = recipe("caa_steering")
    out = tmp_path / "caa"
    argv = ["--model", folders["mamba"], folders["gpt2"], "--out", str(out), "--max-items", "8",
            "--multipliers", "-1", "0", "1", "--generate", "1", "--max-new-tokens", "4", "--no-progress"]  # fmt: skip
    assert caa.main(argv) == 0
    results = json.loads((out / "caa_steering.json").read_text())
    assert results["recipe"] == "caa_steering" and results["data"]["n_train"] == 8
    assert set(results["models"]) == {folders["mamba"], folders["gpt2"]}
    for name, res in results["models"].items():
        n_layers = res["n_layers"]
        assert {(r["layer"], r["multiplier"]) for r in res["sweep"]} == {
            (layer, m) for layer in range(n_layers) for m in (-1.0, 0.0, 1.0)
        }
        assert all(0 < r["p_matching"] < 1 for r in res["sweep"])
        assert 0 <= res["best_layer"] < n_layers
        assert len(res["generations"]) == 3  # one prompt x multipliers {-1, 0, 1}
        vectors = S.SteeringVectors.load(res["vectors"], nnsight_rnn.load(name))
        assert vectors.kind == "residual" and vectors.meta["dataset_sha256"] == results["data"]["train_sha256"]
    png = out / "caa_steering.png"
    assert png.exists() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000


def test_caa_cli_user_data_with_held_out_quarter(folders, tmp_path):
    caa = recipe("caa_steering")
    data = tmp_path / "behaviour.json"
    S.save_items(S.disposition_dataset("train", 12), str(data))
    out = tmp_path / "caa"
    assert caa.main(["--model", folders["rwkv4"], "--data", str(data), "--out", str(out), "--layers", "1",
                     "--multipliers", "0,2", "--generate", "0", "--no-progress"]) == 0  # fmt: skip
    results = json.loads((out / "caa_steering.json").read_text())
    assert results["data"]["n_train"] == 9 and results["data"]["n_test"] == 3
    assert results["models"][folders["rwkv4"]]["layers"] == [1]
    with pytest.raises(SystemExit, match="out of range"):
        caa.main(["--model", folders["rwkv4"], "--layers", "9", "--out", str(out), "--no-progress"])


@pytest.mark.parametrize("name", ["caa_steering", "state_steering"])
def test_recipe_runs_as_a_script(folders, tmp_path, name):
    """The real command line (a fresh interpreter), as a user runs it."""
    out = tmp_path / name
    cmd = [sys.executable, str(RECIPES / f"{name}.py"), "--model", folders["rwkv4"], "--out", str(out),
           "--max-items", "4", "--layers", "1", "--multipliers", "-1", "1", "--generate", "0"]  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (out / f"{name}.json").exists() and (out / f"{name}.png").exists()
    assert f"wrote {out}/{name}.json" in proc.stdout
