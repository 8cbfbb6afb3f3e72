"""``python -m nnsight_rnn.remote {key,check,deploy-config} ...``."""

from __future__ import annotations

import json
from collections.abc import Sequence

from ..command_line import ArgumentParser
from .deploy import deploy_config
from .server import check_key, model_key


def main(argv: Sequence[str] | None = None, prog: str = "python -m nnsight_rnn.remote") -> int:
    parser = ArgumentParser(prog=prog, description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("key", help="print the model key of a folder, zoo/<name> or hub id")
    p.add_argument("source")
    p.add_argument("--card", default=None, help="card family (default: matched on the config)")
    p = sub.add_parser("check", help="rebuild a key (or a source's key) as a server does and compare the trees")
    p.add_argument("source", help="a model key, folder or zoo/<name>")
    p.add_argument("--dtype", default=None, help="dtype to dispatch with (e.g. bfloat16); default: the checkpoint's")
    p = sub.add_parser("deploy-config", help="YAML for `ndif deploy -f` with the key of each model")
    p.add_argument("sources", nargs="+")
    p.add_argument("--dtype", default="float32")
    args = parser.parse_args(argv)
    if args.cmd == "key":
        print(model_key(args.source, card=args.card))
    elif args.cmd == "check":
        key = args.source if ":" in args.source and "{" in args.source else model_key(args.source)
        kwargs = {"dtype": args.dtype} if args.dtype else {}
        print(json.dumps(check_key(key, **kwargs), indent=2))
    else:
        print(deploy_config(args.sources, dtype=args.dtype), end="")
    return 0
