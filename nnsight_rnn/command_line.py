"""What every nnsight-rnn command line shares: errors are one stderr line and exit status 2.

:class:`ArgumentParser` is argparse's with a one-line :meth:`~ArgumentParser.error` (``prog: error:
message (usage: prog --help)``) instead of the usage block; :func:`run_reporting_errors` turns an
:class:`~nnsight_rnn.errors.NnsightRnnError` raised by a command into the same kind of line. Used by
``nnsight-rnn``, ``python -m nnsight_rnn.{elk,remote,zoo}``, the benchmark and the recipe scripts.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any, NoReturn

from .errors import NnsightRnnError


class ArgumentParser(argparse.ArgumentParser):
    """``argparse.ArgumentParser`` whose bad-argument error is one line naming the problem and ``--help``.

    Subparsers made with ``add_subparsers`` are of this class too (argparse's default ``parser_class``).
    """

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (usage: {self.prog} --help)\n")


def run_reporting_errors(fn: Callable[..., int | None], *args: Any, prog: str) -> int:
    """Run a command; an :class:`~nnsight_rnn.errors.NnsightRnnError` becomes one stderr line and exit status 2.

    Anything else is a bug and keeps its traceback.
    """
    try:
        return fn(*args) or 0
    except NnsightRnnError as error:
        print(f"{prog}: error: {error}", file=sys.stderr)
        return 2
