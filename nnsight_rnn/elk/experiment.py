"""The ELK probing experiment of Mallen et al. on one model, any architecture.

1. Items: ``n_train`` training equations and ``n_test`` held-out ones (disjoint operand pairs),
   one Alice and one Bob item each (:mod:`nnsight_rnn.elk.data`).
2. Activations at the decision position, per layer: the residual stream on every architecture;
   on recurrent models also the carried state (all slots, and each slot alone)
   (:mod:`nnsight_rnn.elk.activations`). For CCS, the same one token later, on the contrast pair:
   the prompt followed by the true / the false answer token
   (:meth:`~nnsight_rnn.elk.activations.EncodedItems.contrast_rows`).
3. Probes (:mod:`nnsight_rnn.elk.probes`) per site, method and layer, trained with the *truth* as
   label on two training subsets:

   - ``alice``: every Alice item -> evaluated on held-out Alice items (``alice_alice``);
   - ``alice_easy``: Alice's easy items -> evaluated on held-out **Bob hard** items (``aeasy_bhard``),
     the transfer that asks whether the probe finds the truth where the model's output follows Bob.

   Each evaluation reports AUROC against the truth (``truth``) and against Bob's labels (``bob``).
4. Per curve: best layer and the earliest informative layer (first layer with
   ``AUROC - 0.5 >= 0.95 (max - 0.5)``), on ``aeasy_bhard`` / ``truth``.
5. The model's own answers on the same held-out items (:mod:`nnsight_rnn.elk.behaviour`) and the
   AUROC of its logit difference, as the baseline the probes are compared with.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from .activations import SITE_RESIDUAL, SITE_STATE, Activations, collect, encode_items, is_recurrent
from .behaviour import persona_report
from .data import dataset_sha256, make_items
from .metrics import auroc, best_layer, earliest_informative_layer
from .probes import METHODS, ProbeSet, fit

TRAIN_SETS = {"alice": ("Alice", None), "alice_easy": ("Alice", True)}
EVALS = {"alice_alice": ("alice", "Alice", None), "aeasy_bhard": ("alice_easy", "Bob", False)}
"""evaluation name -> (training set, test character, test easy?)."""


@dataclass
class ProbingConfig:
    """What :func:`run_probing` does.

    Attributes:
        n_train / n_test: equations (two items each) for training the probes / evaluating them.
        seed: dataset seed.
        methods: probe methods (:data:`nnsight_rnn.elk.probes.METHODS`).
        sites: ``"residual"``, ``"state"``, ``"state.<slot>"``; None: residual, plus (recurrent models)
            the whole state and each slot.
        layers: block indices; None: all.
        batch_size: rows per forward pass.
        logreg_C: inverse L2 strength of the logistic regression.
        ccs: keyword arguments of :func:`nnsight_rnn.elk.probes.fit_ccs`.
    """

    n_train: int = 1000
    n_test: int = 1000
    seed: int = 0
    methods: tuple[str, ...] = METHODS
    sites: tuple[str, ...] | None = None
    layers: tuple[int, ...] | None = None
    batch_size: int = 64
    logreg_C: float = 0.1
    ccs: dict[str, Any] = field(default_factory=dict)


def default_sites(model: Any, acts: Activations | None = None) -> list[str]:
    """``["residual"]`` for transformers; plus ``"state"`` and ``"state.<slot>"`` per slot for RNNs."""
    if not is_recurrent(model):
        return [SITE_RESIDUAL]
    from .activations import state_layout

    slots = list(acts.layout) if acts is not None else list(state_layout(model))
    return [SITE_RESIDUAL, SITE_STATE] + [f"{SITE_STATE}.{s}" for s in slots]


def _select(items: list[dict[str, Any]], character: str, easy: bool | None) -> list[int]:
    return [
        i for i, it in enumerate(items) if it["character"] == character and (easy is None or bool(it["easy"]) == easy)
    ]


def _r(x: float) -> float | None:
    return None if math.isnan(x) else round(float(x), 4)


def run_probing(
    model: Any, config: ProbingConfig | None = None, *, progress: bool = True, name: str | None = None
) -> tuple[dict[str, Any], dict[str, ProbeSet]]:
    """Run the experiment (see the module doc) on ``model`` (a :class:`~nnsight_rnn.HookedLanguageModel`).

    Returns ``(results, probe_sets)``: ``results`` is JSON-ready (layers as string keys);
    ``probe_sets`` maps the training set (``"alice"``, ``"alice_easy"``) to its fitted probes.
    """
    from tqdm.auto import tqdm

    cfg = config or ProbingConfig()
    wall, cpu = time.perf_counter(), time.process_time()
    n_layers = len(model.layers)
    layers = sorted({i % n_layers for i in cfg.layers}) if cfg.layers is not None else list(range(n_layers))
    for i in cfg.layers or ():
        if not -n_layers <= i < n_layers:
            raise IndexError(f"layer {i} is out of range: the model has {n_layers} layers (0..{n_layers - 1})")
    unknown = [m for m in cfg.methods if m not in METHODS]
    if unknown:
        raise ValueError(f"unknown probe methods {unknown}; known: {list(METHODS)}")

    train_items = make_items(cfg.seed, cfg.n_train, "train")
    test_items = make_items(cfg.seed, cfg.n_test, "test")
    items = train_items + test_items
    n_tr = len(train_items)
    enc = encode_items(model.tokenizer, items)
    want_state = is_recurrent(model) and (cfg.sites is None or any(s.startswith(SITE_STATE) for s in cfg.sites))
    if cfg.sites is not None and not is_recurrent(model) and any(s.startswith(SITE_STATE) for s in cfg.sites):
        raise ValueError(f"{model.card.family!r} models carry no recurrent state: use sites=('residual',)")
    acts = collect(model, enc.prompts, layers, state=want_state, answer_ids=(enc.true_ids, enc.false_ids),
                   batch_size=cfg.batch_size, progress=progress, desc="activations (prompts)")  # fmt: skip
    pos = neg = None
    if "ccs" in cfg.methods:
        pos_rows, neg_rows = enc.contrast_rows()
        pos = collect(model, pos_rows, layers, state=want_state, batch_size=cfg.batch_size, progress=progress,
                      desc="activations (+ True)")  # fmt: skip
        neg = collect(model, neg_rows, layers, state=want_state, batch_size=cfg.batch_size, progress=progress,
                      desc="activations (+ False)")  # fmt: skip
    sites = list(cfg.sites) if cfg.sites is not None else default_sites(model, acts)

    truth = torch.tensor([int(it["alice_label"]) for it in items])
    bob = torch.tensor([int(it["bob_label"]) for it in items])
    train_index = {k: _select(train_items, c, e) for k, (c, e) in TRAIN_SETS.items()}
    test_index = {k: [n_tr + i for i in _select(test_items, c, e)] for k, (_, c, e) in EVALS.items()}

    meta = {
        "model": name,
        "family": model.card.family,
        "position": "decision position: last token of statement + the answers' shared prefix",
        "label": "truth (alice_label)",
        "dataset": {
            "generator": "nnsight_rnn.corpus.quirky_arithmetic",
            "seed": cfg.seed,
            "n_train": cfg.n_train,
            "train_sha256": dataset_sha256(train_items),
        },
    }
    probe_sets = {k: ProbeSet([], {**meta, "trained_on": k, "n_items": len(v)}) for k, v in train_index.items()}
    curves: dict[str, Any] = {}
    jobs = [(s, m, layer) for s in sites for m in cfg.methods for layer in layers]
    bar = tqdm(jobs, desc="probes", unit="probe", disable=not progress, leave=False)
    for site, method, layer in bar:
        x = acts.site(site, layer)
        xp = pos.site(site, layer) if pos is not None else None
        xn = neg.site(site, layer) if neg is not None else None
        entry = curves.setdefault(site, {}).setdefault(method, {e: {"truth": {}, "bob": {}} for e in EVALS})
        for ev, (train_set, _, _) in EVALS.items():
            tr, te = train_index[train_set], test_index[ev]
            kwargs: dict[str, Any] = {"site": site, "layer": layer}
            if method == "ccs":
                kwargs.update(negative=xn[tr], **cfg.ccs)
                probe = fit(method, xp[tr], truth[tr], **kwargs)
                scores = probe.score(xp[te], xn[te], layer=layer, site=site)
            else:
                if method == "logreg":
                    kwargs["C"] = cfg.logreg_C
                probe = fit(method, x[tr], truth[tr], **kwargs)
                scores = probe.score(x[te], layer=layer, site=site)
            probe.config["trained_on"] = train_set
            probe_sets[train_set].add(probe)
            entry[ev]["truth"][str(layer)] = _r(auroc(scores, truth[te]))
            entry[ev]["bob"][str(layer)] = _r(auroc(scores, bob[te]))
    bar.close()

    summary: dict[str, Any] = {}
    for site, by_method in curves.items():
        for entry in by_method.values():
            curve = {int(k): (v if v is not None else math.nan) for k, v in entry["aeasy_bhard"]["truth"].items()}
            b = best_layer(curve)
            entry["best_layer"] = b
            entry["best_auroc"] = _r(curve[b])
            entry["earliest_informative_layer"] = earliest_informative_layer(curve)
        top = max(by_method, key=lambda m: by_method[m]["best_auroc"] or -1.0)
        summary[site] = {"best_method": top, "best_layer": by_method[top]["best_layer"],
                         "best_auroc": by_method[top]["best_auroc"],
                         "earliest_informative_layer": by_method[top]["earliest_informative_layer"]}  # fmt: skip

    answers = acts.answer
    own = {}
    for ev, idx in test_index.items():
        own[ev] = {"truth": _r(auroc(answers[idx], truth[idx])), "bob": _r(auroc(answers[idx], bob[idx]))}
    results = {
        **meta,
        "n_layers": n_layers,
        "layers": layers,
        "sites": sites,
        "methods": list(cfg.methods),
        "config": asdict(cfg),
        "n_items": {
            "train": n_tr,
            "test": len(test_items),
            **{f"train_{k}": len(v) for k, v in train_index.items()},
            **{f"test_{k}": len(v) for k, v in test_index.items()},
        },
        "behaviour": persona_report(test_items, answers[n_tr:]),
        "model_output_auroc": own,
        "probes": curves,
        "summary": summary,
        "wall_s": round(time.perf_counter() - wall, 2),
        "cpu_s": round(time.process_time() - cpu, 2),
    }
    return results, probe_sets
