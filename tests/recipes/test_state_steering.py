"""recipes/state_steering.py runs end to end: state sweep per layer and slot, comparison, zero-vector check."""

from __future__ import annotations

import json
from typing import Any

import pytest
import torch

import nnsight_rnn
from nnsight_rnn import steering as S

from ..families import mamba
from .test_caa_steering import folders, recipe

__all__ = ["folders"]  # the module-scoped fixture of tiny saved models


def test_state_cli_recurrent_and_transformer(folders, tmp_path):
    state = recipe("state_steering")
    out = tmp_path / "state"
    argv = ["--model", folders["mamba"], folders["gpt2"], "--out", str(out), "--max-items", "6",
            "--multipliers", "-1", "0", "1", "--generate", "1", "--max-new-tokens", "4", "--no-progress"]  # fmt: skip
    assert state.main(argv) == 0
    results = json.loads((out / "state_steering.json").read_text())
    rec = results["models"][folders["mamba"]]
    st = rec["state"]
    assert st["slots"] == ["conv", "ssm"] and set(st["per_slot"]) == {"conv", "ssm"}
    assert st["zero_vector"]["generation_identical"] is True
    assert st["zero_vector"]["max_abs_logit_diff"] < 1e-5
    rows = st["comparison"]["rows"]
    assert [r["multiplier"] for r in rows] == [-1.0, 0.0, 1.0]
    zero = rows[1]
    assert zero["p_residual"] == pytest.approx(zero["p_none"], abs=1e-6)
    assert zero["p_both"] == pytest.approx(zero["p_none"], abs=1e-6)
    vec_dir = next(p for p in (out / "vectors").iterdir() if p.name.endswith("mamba"))
    assert S.SteeringVectors.load(str(vec_dir / "state"), nnsight_rnn.load(folders["mamba"])).kind == "state"
    assert results["models"][folders["gpt2"]]["state"] is None
    assert "no recurrent state" in results["models"][folders["gpt2"]]["note"]
    png = out / "state_steering.png"
    assert png.exists() and png.stat().st_size > 10_000


def _global_torch_state() -> dict[str, Any]:
    return {
        "grad": torch.is_grad_enabled(),
        "inference_mode": torch.is_inference_mode_enabled(),
        "threads": torch.get_num_threads(),
        "dtype": torch.get_default_dtype(),
        "deterministic": torch.are_deterministic_algorithms_enabled(),
        "global_hooks": (
            len(torch.nn.modules.module._global_forward_hooks),
            len(torch.nn.modules.module._global_forward_pre_hooks),
        ),
    }


@pytest.mark.parametrize("name", ["state_steering", "caa_steering"])
def test_recipe_main_leaves_global_state_unchanged(folders, tmp_path, name):
    """main() once switched autograd off globally (torch.set_grad_enabled(False)), so any test after
    it that called .backward() failed; in-process runs must leave torch as they found it."""
    before = _global_torch_state()
    argv = ["--model", folders["mamba"], "--out", str(tmp_path / name), "--max-items", "4", "--layers", "1",
            "--multipliers", "-1", "1", "--generate", "1", "--max-new-tokens", "2", "--no-progress"]  # fmt: skip
    assert recipe(name).main(argv) == 0
    assert _global_torch_state() == before
    model = mamba()
    model(torch.tensor([[1, 2, 3]])).logits.sum().backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
