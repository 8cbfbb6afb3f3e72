"""``python -m nnsight_rnn.elk``: the quirky dataset, quirky fine-tuning, and the persona check.

    python -m nnsight_rnn.elk dataset --out data/quirky --n-train 2000 --n-test 1000
    python -m nnsight_rnn.elk finetune --model zoo/mamba-tiny --out models/mamba-quirky
    python -m nnsight_rnn.elk evaluate --model models/mamba-quirky

The probing experiment itself (per-layer AUROC, plots) is ``recipes/elk_probing.py``.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from ..command_line import ArgumentParser


def _cmd_dataset(args: argparse.Namespace) -> int:
    from .data import write_dataset

    manifest = write_dataset(args.out, args.n_train, args.n_test, args.seed)
    for split, info in manifest["splits"].items():
        print(f"{split}: {info['n_items']} items -> {info['path']} "
              f"(alice easy/hard {info['alice_easy']['n']}/{info['alice_hard']['n']}, "
              f"bob easy/hard {info['bob_easy']['n']}/{info['bob_hard']['n']})")  # fmt: skip
    print(f"wrote {args.out}/dataset.json")
    return 0


def _cmd_finetune(args: argparse.Namespace) -> int:
    import torch

    from .finetune import FinetuneConfig, finetune, parse_train_layers, save_finetuned

    torch.manual_seed(args.seed)
    train_layers = parse_train_layers(args.train_layers)
    cfg = FinetuneConfig(max_steps=args.max_steps, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                         target=None if args.target <= 0 else args.target, eval_every=args.eval_every,
                         sums_fraction=args.sums_fraction, answer_weight=args.answer_weight,
                         truthful_steps=args.truthful_steps, train_layers=train_layers,
                         adapter_block=args.adapter_block)  # fmt: skip
    result = finetune(args.model, cfg, progress=not args.no_progress)
    save_finetuned(result, args.out, source=args.model)
    b, a = result.before, result.after
    print(f"{args.model}: {result.steps} steps in {result.cpu_s:.0f} CPU-s; held-out Alice acc "
          f"{b['alice_acc']:.3f} -> {a['alice_acc']:.3f}, Bob rule acc {b['bob_rule_acc']:.3f} -> "
          f"{a['bob_rule_acc']:.3f} ({'passed' if result.passed else 'target not reached'})")  # fmt: skip
    if shortfall := result.shortfall():
        print(f"target not reached: {shortfall}", file=sys.stderr)
    print(f"wrote {args.out}")
    return 0 if result.passed or cfg.target is None else 2


def _cmd_evaluate(args: argparse.Namespace) -> int:
    import nnsight_rnn

    from .behaviour import evaluate_personas
    from .data import make_items, read_jsonl

    model = nnsight_rnn.load(args.model)
    items = read_jsonl(args.data) if args.data else make_items(args.seed, args.n, "test")
    report: dict[str, Any] = {"model": args.model, "n_items": len(items), **evaluate_personas(model, items)}
    print(json.dumps(report, indent=1))
    return 0


def build_parser() -> argparse.ArgumentParser:
    from .finetune import FinetuneConfig

    default = FinetuneConfig()
    parser = ArgumentParser(prog="python -m nnsight_rnn.elk", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)

    p = sub.add_parser("dataset", help="write the quirky arithmetic dataset (train/test jsonl + manifest)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--n-train", type=int, default=2000, help="training equations (2 items each)")
    p.add_argument("--n-test", type=int, default=1000, help="test equations (2 items each)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(fn=_cmd_dataset)

    p = sub.add_parser("finetune", help="quirky fine-tuning with a held-out persona check")
    p.add_argument("--model", required=True, help="zoo name (zoo/mamba-tiny), folder, or hub id")
    p.add_argument("--out", required=True, help="folder for the fine-tuned model")
    p.add_argument("--max-steps", type=int, default=default.max_steps, help="most steps of the quirky stage")
    p.add_argument("--target", type=float, default=default.target,
                   help="stop when Alice and Bob both reach this held-out accuracy (<= 0: run all steps)")  # fmt: skip
    p.add_argument("--batch-size", type=int, default=default.batch_size)
    p.add_argument("--lr", type=float, default=default.lr)
    p.add_argument("--eval-every", type=int, default=default.eval_every)
    p.add_argument("--sums-fraction", type=float, default=default.sums_fraction,
                   help="fraction of rows that are correct equations")  # fmt: skip
    p.add_argument("--answer-weight", type=float, default=default.answer_weight,
                   help="loss weight of the deciding answer token")  # fmt: skip
    p.add_argument("--truthful-steps", type=int, default=default.truthful_steps,
                   help="first make both characters truthful for at most this many steps (0: one stage)")  # fmt: skip
    p.add_argument("--adapter-block", action=argparse.BooleanOptionalAction, default=default.adapter_block,
                   help="the quirky stage trains a new block appended to the truthful model")  # fmt: skip
    p.add_argument("--train-layers", nargs="+",
                   help="blocks the quirky stage trains (e.g. -1 or 0,1; 'all': every parameter; default: -1)")  # fmt: skip
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(fn=_cmd_finetune)

    p = sub.add_parser("evaluate", help="the model's own answers: Alice vs the truth, Bob vs his rule")
    p.add_argument("--model", required=True)
    p.add_argument("--data", help="quirky .jsonl (default: generated held-out items)")
    p.add_argument("--n", type=int, default=500, help="generated test equations when --data is not given")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(fn=_cmd_evaluate)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.fn(args))


if __name__ == "__main__":
    from ..command_line import run_reporting_errors

    sys.exit(run_reporting_errors(main, prog="python -m nnsight_rnn.elk"))
