"""Shared test setup: offline hub, deterministic seeds, quiet transformers fallbacks."""

from __future__ import annotations

import importlib.util
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest
import torch
from transformers.utils import logging as hf_logging

hf_logging.set_verbosity_error()
torch.set_num_threads(1)  # two cores shared by CI; single-thread numbers are also reproducible


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


# sae-lens pins transformer-lens < 4, so its test runs in its own environment (.ci/run's second
# step, docs/transformer-lens.md); elsewhere it is not collected rather than skipped.
collect_ignore = [] if importlib.util.find_spec("sae_lens") else ["tl/test_sae_lens.py"]
