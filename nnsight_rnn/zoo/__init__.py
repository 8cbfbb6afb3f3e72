"""Tiny models trained by nnsight-rnn on generated data: the embedded default for demos, docs and tests.

Nothing here downloads weights. Each zoo entry is an HF config, a training budget and a seed; the
first ``nnsight_rnn.load("zoo/mamba-tiny")`` (or :func:`zoo_path`) trains the model on CPU on the
generated corpus of :mod:`nnsight_rnn.corpus` (deterministically: same seed, same machine, same
loss), saves it with ``save_pretrained`` (safetensors) next to the byte tokenizer and a
``zoo.json`` (seed, steps, losses, metrics, corpus hash), and later calls load the cached folder.

Cache: ``$NNSIGHT_RNN_HOME/zoo/<name>`` (default ``~/.cache/nnsight_rnn/zoo/<name>``). A folder
whose ``zoo.json`` fingerprint (training recipe + corpus hash) no longer matches the registry is
rebuilt. ``build_zoo()`` builds every entry (the CLI's ``nnsight-rnn zoo build``).

>>> import nnsight_rnn
>>> model = nnsight_rnn.load("zoo/mamba-tiny")      # shipped weights (else trained once, then cached)
>>> with model.trace("12 + 7 = 19. Alice:"):
...     logits = model.output.logits.save()

Metrics (:func:`evaluate`, all on held-out data never seen in training): next-token loss vs the
unigram baseline, Alice's accuracy (truth), Bob's agreement with his rule (leading digit + 1), easy /
hard split, copying accuracy on the second half of repeated random strings, and how often the
(A)/(B) answer follows the named disposition.

Modules: :mod:`.registry` (specs, paths, shipped copies, quality bars), :mod:`.data` (packed batches),
:mod:`.training_scan` (the fused Mamba-1 scan used for training), :mod:`.train`, :mod:`.evaluate`,
:mod:`.build` (build, cache, ship, ``zoo_path``). Shipped weights: ``weights/<name>``.
"""

from __future__ import annotations

from ..errors import UnknownZooModelError
from .build import SHIPPED_FILES, build_model, build_zoo, main, ship, zoo_path
from .data import pack, training_batches
from .evaluate import evaluate, heldout_loss
from .registry import (
    _REGISTRY as _REGISTRY,  # the tests register and drop test-only specs
)
from .registry import (
    HOME_ENV,
    QUALITY,
    SHIPPED,
    WARM_MIX,
    ZOO_FORMAT,
    ZOO_PREFIX,
    ZooSpec,
    available,
    cached_info,
    corpus_version,
    get_spec,
    is_zoo_name,
    register,
    shipped_dir,
    shipped_info,
    zoo_dir,
    zoo_home,
)
from .train import TrainResult, new_model, single_thread, train
from .training_scan import fused_selective_scan, training_scan

__all__ = [
    "HOME_ENV", "QUALITY", "SHIPPED", "SHIPPED_FILES", "WARM_MIX", "ZOO_FORMAT", "ZOO_PREFIX", "TrainResult",
    "UnknownZooModelError", "ZooSpec", "available", "build_model", "build_zoo", "cached_info", "corpus_version",
    "evaluate", "fused_selective_scan", "get_spec", "heldout_loss", "is_zoo_name", "main", "new_model", "pack",
    "register", "ship", "shipped_dir", "shipped_info", "single_thread", "train", "training_batches",
    "training_scan", "zoo_dir", "zoo_home", "zoo_path",
]  # fmt: skip
