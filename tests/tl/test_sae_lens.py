"""sae-lens trains SAEs on a Mamba's recurrent state and residual stream through its own runner.

sae-lens 6 pins transformer-lens < 4, so this runs in the optional environment only (tests/conftest.py
does not collect it where sae-lens is not installed; .ci/run runs it in its own environment)::

    python -m venv .venv-sae
    .venv-sae/bin/pip install -e '.[sae]'      # sae-lens 6 + transformer-lens 3.9 (+ torch, ...)
    HF_HUB_OFFLINE=1 .venv-sae/bin/python -m pytest tests/tl -q

The model goes in through ``override_model=`` (a :class:`nnsight_rnn.tl.HookedLM`), the data through
``override_dataset=`` (random token ids; nothing is downloaded).
"""

from __future__ import annotations

import copy

import pytest
import torch

pytest.importorskip("sae_lens", reason="sae-lens is an optional extra (needs transformer-lens < 4): see docstring")

from datasets import Dataset
from sae_lens import (
    LanguageModelSAERunnerConfig,
    LanguageModelSAETrainingRunner,
    LoggingConfig,
    StandardTrainingSAEConfig,
)
from sae_lens.training.activation_scaler import ActivationScaler

import nnsight_rnn.tl as tl

from ..families import mamba

CTX = 16
BATCH_TOKENS = 64


def _train(hook: str, d_in: int, steps: int) -> tuple[float, float, dict]:
    """Train through sae-lens's runner; return (FVU before, FVU after, sae-lens eval metrics)."""
    model = tl.load(mamba())
    data = Dataset.from_dict({"input_ids": torch.randint(0, 257, (1200, CTX)).tolist()})
    cfg = LanguageModelSAERunnerConfig(
        sae=StandardTrainingSAEConfig(
            d_in=d_in, d_sae=256, l1_coefficient=1e-3, normalize_activations="expected_average_only_in"
        ),
        model_name="tiny-random-mamba", hook_name=hook, dataset_path="", is_dataset_tokenized=True,
        streaming=False, context_size=CTX, training_tokens=steps * BATCH_TOKENS,
        train_batch_size_tokens=BATCH_TOKENS, n_batches_in_buffer=4, store_batch_size_prompts=8, device="cpu",
        prepend_bos=False, logger=LoggingConfig(log_to_wandb=False), n_eval_batches=1, eval_batch_size_prompts=4,
        lr=3e-3,
    )  # fmt: skip
    runner = LanguageModelSAETrainingRunner(cfg, override_dataset=data, override_model=model)
    initial = copy.deepcopy(runner.sae)
    with torch.no_grad():
        _, cache = model.run_with_cache(torch.randint(0, 257, (8, CTX)), names_filter=[hook])
    acts = cache[hook].reshape(-1, d_in)

    def fvu(sae) -> float:  # fraction of variance unexplained on held-out activations
        with torch.no_grad():
            err = sae.decode(sae.encode(acts)) - acts
        return (err.pow(2).sum() / (acts - acts.mean(0)).pow(2).sum()).item()

    before = fvu(initial)
    sae = runner.run()
    # sae-lens's own evaluation splices the SAE into the hook with run_with_hooks (CE loss with SAE / ablation).
    metrics = runner.evaluator(sae, runner.activations_store, ActivationScaler())
    return before, fvu(sae), metrics


def test_sae_on_recurrent_state_hook() -> None:
    """hook_ssm_state_flat: the per-position state [b, pos, d_inner * N], one vector per position."""
    before, after, metrics = _train("blocks.1.mixer.hook_ssm_state_flat", 64 * 8, steps=300)
    assert after < 0.5 * before, (before, after)
    assert metrics["reconstruction_quality"]["explained_variance"] > 0.5, metrics
    perf = metrics["model_performance_preservation"]
    assert all(torch.isfinite(torch.tensor(v)) for k, v in perf.items() if k.startswith("ce_loss_with")), perf


def test_sae_on_residual_hook() -> None:
    before, after, metrics = _train("blocks.1.hook_resid_post", 32, steps=200)
    assert after < 0.5 * before, (before, after)
    assert metrics["reconstruction_quality"]["explained_variance"] > 0.5, metrics
