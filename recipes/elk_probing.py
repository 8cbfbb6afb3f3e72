#!/usr/bin/env python
"""ELK probing on quirky models (Mallen et al. 2024) on any architecture nnsight-rnn supports.

For each model: (1) quirky fine-tuning until the model answers truthfully as Alice and by Bob's
rule as Bob on held-out equations (a top-up that stops at once if the model already does;
``--finetune never`` skips it); (2) last-token activations per layer, the residual stream
``layers[i].output[:, -1]`` on every architecture and the carried state after the prompt on
recurrent ones (all slots flattened, and each slot alone); (3) probes per layer (logistic
regression, LDA, difference of means, CCS) trained on Alice's items with the truth as label, and
their AUROC for Alice -> Alice and Alice-easy -> Bob-hard, against the truth and against Bob's
labels; the best and the earliest informative layer (first with AUROC - 0.5 >= 0.95 (max - 0.5)).

    python recipes/elk_probing.py --model zoo/mamba-tiny --model zoo/rwkv4-tiny --out out/elk
    python recipes/elk_probing.py --model zoo/llama-tiny --adapter-block --truthful-steps 4000 --out out/elk-llama

(``--adapter-block``: the quirky stage trains a block appended to the truthful model, the paper's
setting; the zoo's transformer learns the addition only with the longer truthful stage;
docs/recipes/elk.md).

Writes to ``--out``: ``elk_probing.json`` (every number), ``elk_probing.png`` (best Alice-easy ->
Bob-hard AUROC per site and model), ``<model>/elk_probing.png`` (AUROC per layer, one panel per
site, one colour per method), ``probes/<model>/{alice,alice_easy}/`` (the probes: safetensors +
JSON with the model's fingerprint; reload with ``nnsight_rnn.elk.ProbeSet.load(path, model)``) and
``models/<model>/`` (the fine-tuned model, when it was fine-tuned; the probes belong to it).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
import time
from typing import Any

import torch

from nnsight_rnn import elk
from nnsight_rnn.command_line import ArgumentParser

SITE_STYLES = {"alice_alice": ":", "aeasy_bhard": "-"}
METHOD_COLORS = {"logreg": "C0", "lda": "C1", "mean_diff": "C2", "ccs": "C3"}
FINETUNE = elk.FinetuneConfig()
"""The fine-tuning defaults the command line starts from."""


def slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name.strip("/")).strip("_") or "model"


def _split(values: list[str] | None) -> list[str]:
    return [x.strip() for v in values or [] for x in v.split(",") if x.strip()]


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--model", action="extend", nargs="+", default=None,
                        help="zoo name (zoo/mamba-tiny), folder or hub id; repeat (or list several) for more "
                        "models (default: zoo/mamba-tiny)")  # fmt: skip
    parser.add_argument("--out", default="out/elk_probing", help="output folder")
    parser.add_argument("--finetune", choices=["auto", "always", "never"], default="auto",
                        help="auto: fine-tune until the held-out check passes (no steps if it already does); "
                        "always: run --finetune-steps steps; never: probe the model as it is")  # fmt: skip
    parser.add_argument("--finetune-steps", type=int, default=FINETUNE.max_steps, help="most quirky-stage steps")
    parser.add_argument("--finetune-target", type=float, default=FINETUNE.target,
                        help="held-out accuracy both personas must reach (auto mode)")  # fmt: skip
    parser.add_argument("--finetune-lr", type=float, default=FINETUNE.lr)
    parser.add_argument("--truthful-steps", type=int, default=FINETUNE.truthful_steps,
                        help="two-stage fine-tuning: first make both characters truthful (at most this many "
                        "steps), then train --train-layers on the quirky labels (0: one stage)")  # fmt: skip
    parser.add_argument("--adapter-block", action=argparse.BooleanOptionalAction, default=FINETUNE.adapter_block,
                        help="the quirky stage trains a new block appended to the truthful model (the paper's "
                        "setting; docs/recipes/elk.md)")  # fmt: skip
    parser.add_argument("--train-layers", nargs="+",
                        help="blocks the quirky stage trains (e.g. -1 or 0,1; 'all': every parameter; default: -1)")  # fmt: skip
    parser.add_argument("--n-train", type=int, default=1000, help="training equations for the probes (2 items each)")
    parser.add_argument("--n-test", type=int, default=1000, help="held-out equations (2 items each)")
    parser.add_argument("--methods", nargs="+", default=list(elk.METHODS), help=f"probe methods {list(elk.METHODS)}")
    parser.add_argument("--sites", nargs="+", help="residual, state, state.<slot> (default: residual; RNNs also "
                        "state and every slot)")  # fmt: skip
    parser.add_argument("--layers", nargs="+", help="layer indices (default: all)")
    parser.add_argument("--logreg-c", type=float, default=0.1, help="inverse L2 strength of the logistic regression")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    return parser


def run_model(name: str, args: argparse.Namespace) -> dict[str, Any]:
    import nnsight_rnn

    start, cpu = time.perf_counter(), time.process_time()
    model = nnsight_rnn.load(name)
    record: dict[str, Any] = {"family": model.card.family}
    if args.finetune != "never":
        target = args.finetune_target if args.finetune == "auto" else None
        train_layers = elk.parse_train_layers(args.train_layers)
        result = elk.finetune(model, max_steps=args.finetune_steps, target=target, lr=args.finetune_lr,
                              seed=args.seed, truthful_steps=args.truthful_steps, train_layers=train_layers,
                              adapter_block=args.adapter_block, progress=not args.no_progress)  # fmt: skip
        model = result.model  # with --adapter-block: the grown copy
        record["finetune"] = result.to_json()
        if result.steps > 0:
            folder = os.path.join(args.out, "models", slug(name))
            elk.save_finetuned(result, folder, source=name)
            record["finetune"]["saved_to"] = folder
        print(f"{name}: quirky fine-tuning {result.steps} steps ({result.cpu_s:.0f} CPU-s): held-out Alice "
              f"{result.before['alice_acc']:.3f} -> {result.after['alice_acc']:.3f}, Bob rule "
              f"{result.before['bob_rule_acc']:.3f} -> {result.after['bob_rule_acc']:.3f}")  # fmt: skip
        if shortfall := result.shortfall():
            print(f"{name}: fine-tuning target not reached ({shortfall}); probing the model as it is", file=sys.stderr)
    layers = tuple(int(x) for x in _split(args.layers)) if args.layers else None
    cfg = elk.ProbingConfig(n_train=args.n_train, n_test=args.n_test, seed=args.seed, methods=tuple(_split(args.methods)),
                            sites=tuple(_split(args.sites)) if args.sites else None, layers=layers,
                            batch_size=args.batch_size, logreg_C=args.logreg_c)  # fmt: skip
    results, probe_sets = elk.run_probing(model, cfg, progress=not args.no_progress, name=name)
    record.update(results)
    record["probe_sets"] = {}
    for trained_on, probes in probe_sets.items():
        path = os.path.join(args.out, "probes", slug(name), trained_on)
        probes.save(path, model)
        record["probe_sets"][trained_on] = path
    record["total_wall_s"] = round(time.perf_counter() - start, 2)
    record["total_cpu_s"] = round(time.process_time() - cpu, 2)
    b = results["behaviour"]
    print(f"{name} ({model.card.family}): own answers Alice acc {b['alice_acc']:.3f}, Bob rule acc "
          f"{b['bob_rule_acc']:.3f}; Alice-easy -> Bob-hard AUROC vs truth: "
          + ", ".join(f"{site} {s['best_auroc']} ({s['best_method']}, layer {s['best_layer']})"
                      for site, s in results["summary"].items())
          + f"; {record['total_cpu_s']:.0f} CPU-s")  # fmt: skip
    return record


def plot_model(name: str, res: dict[str, Any], path: str) -> None:
    """AUROC per layer: one panel per site; colour = method; solid = Alice-easy -> Bob-hard vs truth,
    dashed = same vs Bob's labels, dotted = Alice -> Alice vs truth; grey = the model's own answers."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sites = res["sites"]
    fig, axes = plt.subplots(1, len(sites), figsize=(4.2 * len(sites), 3.6), squeeze=False)
    for ax, site in zip(axes[0], sites, strict=True):
        for method, entry in res["probes"][site].items():
            color = METHOD_COLORS.get(method)
            for ev, key, style, label in (("aeasy_bhard", "truth", "-", f"{method}"),
                                          ("aeasy_bhard", "bob", "--", None),
                                          ("alice_alice", "truth", ":", None)):  # fmt: skip
                curve = entry[ev][key]
                xs = [int(k) for k in curve]
                ys = [math.nan if v is None else v for v in curve.values()]
                ax.plot(xs, ys, style, color=color, marker="o", ms=3, lw=1.6 if style == "-" else 1.0, label=label)
        own = res["model_output_auroc"]["aeasy_bhard"]
        if own["truth"] is not None:
            ax.axhline(own["truth"], color="grey", lw=1, label="own answers vs truth")
        if own["bob"] is not None:
            ax.axhline(own["bob"], color="grey", lw=1, ls="--", label="own answers vs Bob")
        ax.axhline(0.5, color="black", lw=0.5, ls=":")
        ax.set(title=f"{site}", xlabel="layer", ylim=(0, 1.02), xticks=res["layers"])
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("AUROC (Bob hard)")
    axes[0][-1].legend(fontsize=7, loc="lower right")
    fig.suptitle(f"{name} ({res['family']}): probes on Alice-easy -> Bob-hard; solid vs truth, dashed vs Bob, "
                 "dotted Alice -> Alice", fontsize=9)  # fmt: skip
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_summary(results: dict[str, Any], path: str) -> None:
    """Best Alice-easy -> Bob-hard AUROC against the truth per site (bars) for every model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = results["models"]
    fig, ax = plt.subplots(figsize=(1.2 + 2.2 * len(models), 3.6))
    width = 0.8 / max(len(r["summary"]) + 1 for r in models.values())
    for m, res in enumerate(models.values()):
        bars = [("own answers", res["model_output_auroc"]["aeasy_bhard"]["truth"] or math.nan)]
        bars += [
            (site, s["best_auroc"] if s["best_auroc"] is not None else math.nan) for site, s in res["summary"].items()
        ]
        for k, (label, value) in enumerate(bars):
            ax.bar(m + k * width, value, width, color="grey" if k == 0 else f"C{k - 1}")
            ax.text(m + k * width, 0.02, label, rotation=90, fontsize=7, ha="center", va="bottom")
    ax.set_xticks([m + 0.4 - width / 2 for m in range(len(models))], [f"{n}\n({r['family']})" for n, r in models.items()],
                  fontsize=8)  # fmt: skip
    ax.axhline(0.5, color="black", lw=0.5, ls=":")
    ax.set(ylabel="AUROC vs truth, Bob hard", ylim=(0, 1.02), title="Alice-easy -> Bob-hard, best layer per site")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    models = args.model or ["zoo/mamba-tiny"]
    os.makedirs(args.out, exist_ok=True)
    results: dict[str, Any] = {"recipe": "elk_probing", "reference": "Mallen et al. 2024 (quirky arithmetic)",
                               "args": {k: v for k, v in vars(args).items() if k != "model"}, "models": {}}  # fmt: skip
    for name in models:
        with torch.no_grad():
            record = run_model(name, args)
        results["models"][name] = record
        folder = os.path.join(args.out, slug(name))
        os.makedirs(folder, exist_ok=True)
        plot_model(name, record, os.path.join(folder, "elk_probing.png"))
        with open(os.path.join(folder, "elk_probing.json"), "w") as f:
            json.dump(record, f, indent=1)
    with open(os.path.join(args.out, "elk_probing.json"), "w") as f:
        json.dump(results, f, indent=1)
    plot_summary(results, os.path.join(args.out, "elk_probing.png"))
    print(f"wrote {args.out}/elk_probing.json and {args.out}/elk_probing.png")
    return 0


if __name__ == "__main__":
    from nnsight_rnn.command_line import run_reporting_errors

    sys.exit(run_reporting_errors(main, prog="elk_probing.py"))
