"""``nnsight-rnn doctor``: installed versions, the tested ranges, and the upstream contract check per card."""

from __future__ import annotations

from collections.abc import Callable

from .cards import all_cards
from .contract import run_checks
from .surgery import install
from .upstream import TESTED, versions_line


def doctor(print_fn: Callable[[str], None] = print) -> int:
    """``nnsight-rnn doctor``: versions, tested ranges, and one pass/fail line per card. Returns the exit code."""
    from transformers import AutoConfig, AutoModelForCausalLM

    print_fn(f"installed: {versions_line()}")
    print_fn("tested: " + ", ".join(f"{p} {lo}-{hi}" for p, (lo, hi) in TESTED.items()))
    failures = 0
    for family, card in sorted(all_cards().items()):
        if not card.is_recurrent or not card.contract_config:
            print_fn(f"  {family:14s} -     (no recurrent contract to check)")
            continue
        config = AutoConfig.for_model(card.model_types[0], **card.contract_config)
        result = run_checks(card, type(AutoModelForCausalLM.from_config(config)), type(config), install)
        if result.ok:
            skipped = "".join(f"; {k} skipped: {v}" for k, v in result.skipped.items())
            print_fn(f"  {family:14s} ok    {', '.join(result.passed)} ({result.seconds:.2f} s){skipped}")
        else:
            failures += 1
            why = "; ".join(f"{k}: {v}" for k, v in result.failed.items())
            print_fn(f"  {family:14s} FAIL  {why}")
    return 1 if failures else 0
