"""Every recipe runs unchanged on an RWKV-7 zoo model (issue 9): CAA and state steering, tuned lens, ELK.

The same command lines as on Mamba or GPT-2, pointed at ``zoo/rwkv7-tiny`` (built on first use, about
3 CPU-minutes, then cached: ``-m slow``), at small settings. The effects themselves are measured by
the per-recipe tests; here the point is that nothing in a recipe is architecture-specific.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import nnsight_rnn

pytestmark = pytest.mark.slow

RECIPES = Path(__file__).resolve().parents[2] / "recipes"
MODEL = "zoo/rwkv7-tiny"


@pytest.fixture(scope="module", autouse=True)
def built() -> None:
    nnsight_rnn.load(MODEL)  # build (or find) the zoo model once, outside the recipes' subprocesses


def run(recipe: str, *args: str, out: Path) -> dict:
    cmd = [sys.executable, str(RECIPES / f"{recipe}.py"), *args, "--out", str(out), "--no-progress"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads((out / f"{recipe}.json").read_text())


@pytest.mark.parametrize("recipe", ["caa_steering", "state_steering"])
def test_steering_recipes(recipe: str, tmp_path: Path) -> None:
    results = run(recipe, "--model", MODEL, "--max-items", "16", "--multipliers", "-2", "0", "2",
                  "--generate", "1", "--max-new-tokens", "4", out=tmp_path)  # fmt: skip
    rec = results["models"][MODEL]
    sweeps = [rec["sweep"]] if recipe == "caa_steering" else [rec["residual"]["sweep"], rec["state"]["sweep"]]
    assert rec["family"] == "rwkv7"
    for sweep in sweeps:
        assert len(sweep) == 3 * rec["n_layers"] and all(0 < row["p_matching"] < 1 for row in sweep)


def test_tuned_lens_recipe(tmp_path: Path) -> None:
    results = run("tuned_lens", "--models", MODEL, "--steps", "60", "--eval-tokens", "2048", out=tmp_path)
    rec = results["models"][MODEL]
    assert rec["family"] == "rwkv7"
    for layer in rec["layers"]:
        assert layer["tuned"]["ce_bpb"] < layer["logit"]["ce_bpb"], layer


def test_elk_recipe(tmp_path: Path) -> None:
    results = run("elk_probing", "--model", MODEL, "--finetune", "never", "--n-train", "100", "--n-test", "100",
                  "--methods", "logreg", "mean_diff", out=tmp_path)  # fmt: skip
    rec = results["models"][MODEL]
    assert rec["sites"][:2] == ["residual", "state"] and "state.wkv" in rec["sites"]
    assert 0 <= rec["summary"]["state"]["best_auroc"] <= 1
