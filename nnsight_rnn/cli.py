"""``nnsight-rnn``: supported families and hook points, the demo, the zoo, remote keys, benchmarks."""

from __future__ import annotations

import argparse
import sys

from .cards import all_cards, get_card
from .command_line import ArgumentParser, run_reporting_errors


def _cmd_info(args: argparse.Namespace) -> int:
    from .reference import describe

    if args.family:
        print(describe(get_card(args.family)))
        return 0
    print("nnsight-rnn supported families (card: model types -> mixer kind):")
    for card in all_cards().values():
        print(f"  {card.family:14s} {', '.join(card.model_types):24s} -> {card.mixer_kind:7s} {card.description}")
    print(f"\nfused GPU kernels (used when a layer's internal hooks are idle): {_kernel_line()}")
    print("\n`nnsight-rnn info FAMILY` lists a family's hook points.")
    return 0


def _kernel_line() -> str:
    import torch

    from . import kernels

    if not torch.cuda.is_available():
        return "no CUDA device: hookable path everywhere"
    kernels.mamba1_kernels(torch.device("cuda"))  # probes the import once
    return "; ".join(f"{family}: {status}" for family, status in kernels.kernel_status().items())


def _cmd_docs(args: argparse.Namespace) -> int:
    from .reference import reference_markdown

    text = reference_markdown()
    if args.output:
        with open(args.output, "w") as f:
            f.write(text)
    else:
        print(text)
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    run_demo(model=args.model, out_dir=args.out)
    return 0


def _cmd_doctor(args: argparse.Namespace) -> int:
    from .doctor import doctor

    return doctor()


def _cmd_zoo(args: argparse.Namespace) -> int:
    from . import zoo

    if args.action == "build":
        zoo.build_zoo(args.names or None)
    elif args.action == "ship":
        for name, folder in zoo.ship(args.names or None).items():
            print(f"{name} -> {folder}")
    else:
        for name in zoo.available():
            print(name)
    return 0


def _cmd_remote(args: argparse.Namespace) -> int:
    from .remote import main as remote_main

    return remote_main(args.rest, prog="nnsight-rnn remote")


def _cmd_bench(args: argparse.Namespace) -> int:
    from .bench import main as bench_main

    return bench_main(args.rest)


_FORWARDED = {"remote": _cmd_remote, "bench": _cmd_bench}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in _FORWARDED:  # subcommands with their own parsers get the rest verbatim
        return run_reporting_errors(
            _FORWARDED[argv[0]], argparse.Namespace(rest=argv[1:]), prog=f"nnsight-rnn {argv[0]}"
        )
    parser = ArgumentParser(prog="nnsight-rnn", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("info", help="supported families; with FAMILY, its hook points")
    p.add_argument("family", nargs="?")
    p.set_defaults(fn=_cmd_info)
    p = sub.add_parser("docs", help="write the hook reference (markdown)")
    p.add_argument("-o", "--output")
    p.set_defaults(fn=_cmd_docs)
    p = sub.add_parser("demo", help="the main job on the embedded default: lens, state read/edit, steering")
    p.add_argument("--model", default="zoo/mamba-tiny")
    p.add_argument("--out", default="out/demo")
    p.set_defaults(fn=_cmd_demo)
    p = sub.add_parser("doctor", help="installed versions, tested ranges, and the upstream contract check per card")
    p.set_defaults(fn=_cmd_doctor)
    p = sub.add_parser("zoo", help="list, build, or ship (copy built models into the package) the tiny model zoo")
    p.add_argument("action", choices=["list", "build", "ship"])
    p.add_argument("names", nargs="*")
    p.set_defaults(fn=_cmd_zoo)
    sub.add_parser("remote", help="model keys, checks and NDIF deploy configs (see docs/remote.md)")
    sub.add_parser("bench", help="speed and memory against stock HF and plain nnsight (docs/performance.md)")
    args = parser.parse_args(argv)
    return run_reporting_errors(args.fn, args, prog="nnsight-rnn")


if __name__ == "__main__":
    sys.exit(main())
