#!/usr/bin/env python
"""Contrastive activation addition (Rimsky et al. 2024) on any architecture nnsight-rnn supports.

For each model: compute one steering vector per layer (mean of ``layers[i].output`` at the answer
letter, behaviour-matching minus non-matching completions of the A/B items in ``--data``), add
``multiplier * vector`` at the positions after the prompt, and measure
``p(matching) / (p(A) + p(B))`` at the answer position on the held-out items (``--test-data``),
for every layer and multiplier. At the layer that moves most, also generate open-ended
continuations under steering. The same code runs on a transformer, Mamba, Mamba-2 and RWKV-4.

    python recipes/caa_steering.py --model zoo/mamba-tiny zoo/gpt2-tiny --out out/caa

Writes to ``--out``: ``caa_steering.json`` (every number), ``caa_steering.png`` (p(matching)
against the multiplier, one line per layer, one panel per model, like the paper's figures) and
the vectors (``vectors/<model>/``, safetensors + JSON fingerprint; reuse with ``--vectors``).
Data: CAA JSON files (a list of ``{question, answer_matching_behavior,
answer_not_matching_behavior}``), e.g. the paper's behaviour files; by default the zoo's
disposition task shipped in ``recipes/data/`` (behaviour: choosing the kind act).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from pathlib import Path
from typing import Any

import torch

from nnsight_rnn import steering as S
from nnsight_rnn.command_line import ArgumentParser

DATA_DIR = Path(__file__).resolve().parent / "data"
DEFAULT_TRAIN = DATA_DIR / "disposition_caa_train.json"
DEFAULT_TEST = DATA_DIR / "disposition_caa_test.json"
DEFAULT_MULTIPLIERS = ["-2", "-1", "-0.5", "0", "0.5", "1", "2"]


def shipped_dataset(split: str) -> list[S.Item]:
    """The shipped disposition items (``recipes/data/``), generated on the fly if the file is absent."""
    path = DEFAULT_TRAIN if split == "train" else DEFAULT_TEST
    if path.exists():
        return S.load_items(str(path))
    return S.disposition_dataset(split, 64 if split == "train" else 48)


def add_common_args(parser: argparse.ArgumentParser, out_default: str) -> None:
    """The command line both steering recipes share."""
    parser.add_argument(
        "--model",
        nargs="+",
        default=["zoo/mamba-tiny"],
        help="zoo name (zoo/mamba-tiny), folder, or hub id; several: one panel each",
    )
    parser.add_argument("--data", help="CAA JSON items for the vectors (default: shipped disposition train set)")
    parser.add_argument(
        "--test-data",
        help="CAA JSON items to evaluate on (default: shipped test set; with "
        "--data alone, the last quarter of --data is held out)",
    )
    parser.add_argument("--layers", nargs="+", default=["all"], help="layer indices (0 2 or 0,2), or 'all' (default)")
    parser.add_argument(
        "--multipliers",
        nargs="+",
        default=DEFAULT_MULTIPLIERS,
        help=f"multipliers (default: {' '.join(DEFAULT_MULTIPLIERS)})",
    )
    parser.add_argument(
        "--template",
        default=S.DEFAULT_TEMPLATE,
        help="prompt template with {question}, e.g. '[INST] {question} [/INST]'",
    )
    parser.add_argument("--max-items", type=int, help="use at most this many items of each set")
    parser.add_argument("--generate", type=int, default=3, help="open-ended generations per multiplier (0: none)")
    parser.add_argument("--max-new-tokens", type=int, default=12)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--out", default=out_default, help="output folder")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")  # fmt: skip


def _split(values: list[str]) -> list[str]:
    return [x.strip() for v in values for x in v.split(",") if x.strip()]


def parse_floats(text: list[str]) -> list[float]:
    try:
        values = sorted({float(x) for x in _split(text)})
    except ValueError as e:
        raise SystemExit(f"--multipliers must be numbers, got {' '.join(text)!r}") from e
    if len(values) < 2:
        raise SystemExit("--multipliers needs at least two values")
    return values


def parse_layers(text: list[str], n_layers: int) -> list[int]:
    if _split(text) == ["all"]:
        return list(range(n_layers))
    try:
        layers = [int(x) for x in _split(text)]
    except ValueError as e:
        raise SystemExit(f"--layers must be 'all' or integers, got {' '.join(text)!r}") from e
    bad = [x for x in layers if not -n_layers <= x < n_layers]
    if bad:
        raise SystemExit(f"--layers {bad} out of range: the model has {n_layers} layers (0..{n_layers - 1})")
    return sorted({x % n_layers for x in layers})


def load_data(args: argparse.Namespace) -> tuple[list[S.Item], list[S.Item], dict[str, Any]]:
    """(vector items, test items, description) from the command line."""
    if args.data:
        train = S.load_items(args.data)
        if args.test_data:
            test = S.load_items(args.test_data)
        else:
            cut = max(1, len(train) // 4)
            if len(train) < 2:
                raise SystemExit(f"{args.data} has {len(train)} item(s): need at least 2 to hold some out")
            train, test = train[:-cut], train[-cut:]
    else:
        train = shipped_dataset("train")
        test = S.load_items(args.test_data) if args.test_data else shipped_dataset("test")
    if args.max_items:
        train, test = train[: args.max_items], test[: args.max_items]
    info = {
        "data": args.data or str(DEFAULT_TRAIN),
        "test_data": args.test_data or (None if args.data else str(DEFAULT_TEST)),
        "n_train": len(train),
        "n_test": len(test),
        "train_sha256": S.dataset_sha256(train),
        "test_sha256": S.dataset_sha256(test),
        "template": args.template,
    }
    return train, test, info


def slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name.strip("/")).strip("_") or "model"


def short(name: str, width: int = 28) -> str:
    """A model name short enough for a plot title (the tail of a long path)."""
    return name if len(name) <= width else "..." + name[-(width - 3) :]


def load_model(name: str) -> Any:
    import nnsight_rnn

    return nnsight_rnn.load(name)


def generations(model: Any, test: S.EncodedItems, steers_by_mult: dict[float, list[S.Steer]], n: int,
                max_new_tokens: int) -> list[dict[str, Any]]:  # fmt: skip
    """Greedy continuations of the first ``n`` test prompts under each multiplier's steers."""
    rows = []
    for mult, steers in steers_by_mult.items():
        for i in range(min(n, len(test))):
            text = S.decode(model, S.generate(model, test.prompts[i], *steers, max_new_tokens=max_new_tokens))
            prompt = test.template.format(question=test.items[i]["question"])
            choice = S.generated_choice(text, test.items[i])
            rows.append({"multiplier": mult, "item": i, "prompt": prompt, "text": text, "choice": choice})
    return rows


def run_model(name: str, args: argparse.Namespace, train: list[S.Item], test: list[S.Item]) -> dict[str, Any]:
    start, cpu = time.perf_counter(), time.process_time()
    model = load_model(name)
    layers = parse_layers(args.layers, len(model.layers))
    multipliers = parse_floats(args.multipliers)
    enc_train = S.encode_items(model.tokenizer, train, args.template)
    enc_test = S.encode_items(model.tokenizer, test, args.template)
    vec_dir = os.path.join(args.out, "vectors", slug(name), "residual")
    vectors = S.residual_vectors(model, enc_train, layers, batch_size=args.batch_size)
    vectors.save(vec_dir, model)
    rows = S.sweep(model, enc_test, vectors, layers, multipliers, progress=not args.no_progress,
                   desc=f"CAA {name}", batch_size=args.batch_size)  # fmt: skip
    best = S.best_layer(rows)
    gens = []
    if args.generate > 0:
        pick = sorted({multipliers[0], 0.0, multipliers[-1]})
        gens = generations(model, enc_test, {m: [S.Steer(vectors, best, m)] for m in pick}, args.generate,
                           args.max_new_tokens)  # fmt: skip
    baseline = float(S.score(model, enc_test, batch_size=args.batch_size).mean())
    result = {
        "family": model.card.family,
        "n_layers": len(model.layers),
        "layers": layers,
        "vectors": vec_dir,
        "vector_norms": {str(k): v for k, v in vectors.norms().items()},
        "baseline_p_matching": baseline,
        "sweep": rows,
        "best_layer": best,
        "effect_at_best": S.effect(rows, best),
        "effect_t_at_best": S.effect_t(rows, best),
        "monotonic_at_best": S.is_monotonic(rows, best),
        "generations": gens,
        "wall_s": round(time.perf_counter() - start, 2),
        "cpu_s": round(time.process_time() - cpu, 2),
    }
    c = S.curve(rows, best)
    print(f"{name} ({model.card.family}): baseline p(matching) {baseline:.3f}; best layer {best}: "
          + " ".join(f"{m:+g}:{p:.3f}" for m, p in c) + f" (paired t {S.effect_t(rows, best):.1f})")  # fmt: skip
    return result


def plot(results: dict[str, Any], path: str, title: str) -> None:
    """p(matching) against the multiplier, one line per layer, one panel per model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = results["models"]
    fig, axes = plt.subplots(1, len(models), figsize=(4.5 * len(models), 3.8), squeeze=False)
    for ax, (name, res) in zip(axes[0], models.items(), strict=True):
        for layer in res["layers"]:
            pts = sorted((r["multiplier"], r["p_matching"], r["sem"]) for r in res["sweep"] if r["layer"] == layer)
            xs, ps, es = zip(*pts, strict=True)
            ax.errorbar(xs, ps, yerr=es, marker="o", ms=3, capsize=2, label=f"layer {layer}",
                        lw=2.2 if layer == res["best_layer"] else 1.0)  # fmt: skip
        ax.axhline(res["baseline_p_matching"], color="grey", ls=":", lw=1)
        ax.set_title(f"{short(name)} ({res['family']})", fontsize=9)
        ax.set(xlabel="multiplier", ylim=(0, 1))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    axes[0][0].set_ylabel("p(answer matching behaviour)")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# Decorator, not torch.set_grad_enabled(False): main() is also called in-process (tests, notebooks),
# and a bare global switch left autograd off for everything run after it.
@torch.no_grad()
def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    add_common_args(parser, "out/caa_steering")
    args = parser.parse_args(argv)
    train, test, data = load_data(args)
    os.makedirs(args.out, exist_ok=True)
    results: dict[str, Any] = {"recipe": "caa_steering", "data": data, "multipliers": parse_floats(args.multipliers),
                               "models": {}}  # fmt: skip
    for name in args.model:
        results["models"][name] = run_model(name, args, train, test)
    with open(os.path.join(args.out, "caa_steering.json"), "w") as f:
        json.dump(results, f, indent=1)
    plot(results, os.path.join(args.out, "caa_steering.png"), "CAA: residual-stream steering at the answer positions")
    print(f"wrote {args.out}/caa_steering.json and {args.out}/caa_steering.png")
    return 0


if __name__ == "__main__":
    from nnsight_rnn.command_line import run_reporting_errors

    sys.exit(run_reporting_errors(main, prog="caa_steering.py"))
