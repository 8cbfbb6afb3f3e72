"""Eliciting latent knowledge on quirky models (Mallen et al. 2024), on any architecture.

- :mod:`~nnsight_rnn.elk.data`: the quirky arithmetic dataset (generate, jsonl, easy / hard, Alice / Bob).
- :mod:`~nnsight_rnn.elk.finetune`: quirky fine-tuning with a held-out check of both personas.
- :mod:`~nnsight_rnn.elk.activations`: last-token residual stream and carried state per layer.
- :mod:`~nnsight_rnn.elk.probes`: logistic regression, LDA, difference of means, CCS; saved probe sets.
- :mod:`~nnsight_rnn.elk.experiment`: Alice -> Alice and Alice-easy -> Bob-hard AUROC per layer.

Command line: ``python -m nnsight_rnn.elk {dataset,finetune,evaluate} --help``; the whole experiment
with plots is ``recipes/elk_probing.py``.
"""

from .activations import Activations, EncodedItems, answer_scores, collect, encode_items
from .behaviour import evaluate_personas, persona_report
from .data import make_dataset, make_items, read_jsonl, write_dataset, write_jsonl
from .experiment import ProbingConfig, run_probing
from .finetune import FinetuneConfig, FinetuneResult, finetune, parse_train_layers, save_finetuned
from .metrics import auroc, best_layer, earliest_informative_layer
from .probes import METHODS, Probe, ProbeMismatchError, ProbeSet, fit

__all__ = [
    "METHODS",
    "Activations",
    "EncodedItems",
    "FinetuneConfig",
    "FinetuneResult",
    "Probe",
    "ProbeMismatchError",
    "ProbeSet",
    "ProbingConfig",
    "answer_scores",
    "auroc",
    "best_layer",
    "collect",
    "earliest_informative_layer",
    "encode_items",
    "evaluate_personas",
    "finetune",
    "fit",
    "make_dataset",
    "make_items",
    "parse_train_layers",
    "persona_report",
    "read_jsonl",
    "run_probing",
    "save_finetuned",
    "write_dataset",
    "write_jsonl",
]
