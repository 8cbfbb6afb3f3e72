"""The README's first command's job, `nnsight-rnn demo`, end to end on an empty cache: a broken demo is a red CI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from nnsight_rnn import zoo

SHIPPED = sorted(p.name for p in zoo.SHIPPED.iterdir() if p.is_dir())


def test_every_zoo_model_ships() -> None:
    assert SHIPPED == sorted(name.removeprefix("zoo/") for name in zoo.available())
    assert zoo.shipped_info("zoo/mamba-tiny") is not None, "the shipped mamba-tiny no longer matches its recipe"


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_zoo_models_load_without_training(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import nnsight_rnn

    monkeypatch.setenv(zoo.HOME_ENV, str(tmp_path / "empty-home"))
    info = zoo.shipped_info(name)
    assert info is not None, f"zoo/{name}'s shipped copy does not match its recipe: rebuild and ship it (docs/zoo.md)"
    t0 = time.perf_counter()
    model = nnsight_rnn.load(f"zoo/{name}")
    assert time.perf_counter() - t0 < 10
    assert zoo.zoo_path(name, build=False) == str(zoo.shipped_dir(name))
    assert not (tmp_path / "empty-home").exists()  # nothing was built or cached
    assert model.config.model_type in nnsight_rnn.get_card(info["family"]).model_types


def test_demo_runs_end_to_end_on_an_empty_cache(tmp_path: Path) -> None:
    env = {**os.environ, zoo.HOME_ENV: str(tmp_path / "empty-home"), "HF_HUB_OFFLINE": "1"}
    t0 = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "nnsight_rnn.cli", "demo"], cwd=tmp_path, env=env, capture_output=True, text=True,
        timeout=600,
    )  # fmt: skip
    wall = time.perf_counter() - t0
    assert result.returncode == 0, result.stderr[-3000:]
    out = tmp_path / "out" / "demo"
    report = json.loads((out / "demo.json").read_text())
    assert (out / "demo.png").stat().st_size > 10_000
    assert set(report) >= {"logit_lens", "state", "state_edit", "steering"}
    assert len(report["logit_lens"]["layers"]) >= 2
    assert "training" not in result.stdout + result.stderr  # shipped weights: no training on a user's machine
    assert not (tmp_path / "empty-home").exists()
    assert wall < 120, f"the demo took {wall:.0f} s (README: under a minute)"


@pytest.mark.slow
@pytest.mark.parametrize("name", SHIPPED)
def test_a_rebuild_reproduces_the_shipped_recipe(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`nnsight-rnn zoo build NAME` from scratch: same fingerprint, and the same training within CPU noise."""
    monkeypatch.setenv(zoo.HOME_ENV, str(tmp_path))
    shipped = zoo.shipped_info(name)
    assert shipped is not None
    folder = zoo.build_model(name, force=True, progress=False)
    rebuilt = json.loads((folder / "zoo.json").read_text())
    assert rebuilt["fingerprint"] == shipped["fingerprint"]
    assert rebuilt["steps"] == shipped["steps"] and rebuilt["seed"] == shipped["seed"]
    # Deterministic on one machine; other CPUs / BLAS builds may round differently: 5 % on the held-out loss.
    assert abs(rebuilt["metrics"]["loss"] - shipped["metrics"]["loss"]) <= 0.05 * shipped["metrics"]["loss"]


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_models_meet_the_documented_quality(name: str) -> None:
    """The held-out metrics recorded when the shipped copy was built meet zoo.QUALITY (docs/zoo.md)."""
    info = zoo.shipped_info(name)
    assert info is not None
    metrics, bar = info["metrics"], zoo.QUALITY[f"zoo/{name}"]
    assert metrics["loss"] <= bar["loss_ratio"] * metrics["unigram_loss"]
    for key, low in bar.items():
        if key != "loss_ratio":
            assert metrics[key] >= low, (key, metrics[key], low)
