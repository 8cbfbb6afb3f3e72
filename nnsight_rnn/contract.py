"""The load-time upstream contract check: numbers, not version strings, decide.

The first time a recurrent family is installed in a process (:func:`ensure`), nnsight-rnn builds a
tiny random model of the same classes (the card's ``[contract] tiny_config``) and checks, in well
under a second, the things an upstream release has broken before (see :mod:`nnsight_rnn.upstream`):

- ``prefill``: hooked logits equal the untouched upstream model's (families with an upstream model);
- ``decode``: two one-token steps from the cache equal upstream's (both skipped, not failed, when the
  upstream model itself cannot run here, e.g. transformers <= 5.24 with a CUDA-only mamba-ssm on CPU);
- ``round_trip``: prefix -> carried state -> multi-token suffix equals the whole sequence;
- ``edit``: zeroing the carried state changes the suffix (an edit that changes nothing is the
  silent failure a renamed cache keyword produces);
- ``generate``: greedy ``generate``'s per-step logits equal a full forward over the same tokens
  (the cache is carried between steps).

A failure raises :class:`~nnsight_rnn.upstream.UpstreamContractError` naming the check, the
installed versions and the tested range. ``NNSIGHT_RNN_CONTRACT=0`` skips the check (not advised);
``nnsight-rnn doctor`` runs it for every card and prints a line each.
"""

from __future__ import annotations

import copy
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from .cards import Card
from .carry import state_from_output, state_to_forward_kwargs
from .upstream import TESTED, UpstreamContractError, versions_line

CONTRACT_ENV = "NNSIGHT_RNN_CONTRACT"
ATOL = 1e-4  # fp32 tiny models: observed differences are < 1e-5; a broken contract gives > 1e-2
_checked: dict[str, str] = {}  # family -> "ok" / "running" in this process


@dataclass
class CheckResult:
    family: str
    passed: list[str]
    failed: dict[str, str]  # check -> what went wrong
    seconds: float
    skipped: dict[str, str] = field(default_factory=dict)  # check -> why it could not run here

    @property
    def ok(self) -> bool:
        return not self.failed


Install = Callable[[nn.Module, Card], nn.Module]  # nnsight_rnn.surgery.install (passed in: no import circle)


def _tiny_pair(
    card: Card, model_cls: type[nn.Module], config_cls: type, install: Install
) -> tuple[nn.Module, nn.Module]:
    """(untouched, hooked) tiny random copies of ``model_cls``; parameters jittered away from HF's init."""
    torch.manual_seed(0)
    config = config_cls(**card.contract_config)
    stock = model_cls(config).eval()
    with torch.no_grad():  # HF's init leaves some tiny-model parameters degenerate (RWKV-4's time-mix)
        for p in stock.parameters():
            p.add_(torch.randn_like(p) * 0.2)
    return stock, install(copy.deepcopy(stock), card)


def _close(a: torch.Tensor, b: torch.Tensor) -> str | None:
    diff = (a.float() - b.float()).abs().max().item()
    return None if diff <= ATOL else f"max |difference| {diff:.3g} > {ATOL}"


def run_checks(card: Card, model_cls: type[nn.Module], config_cls: type, install: Install) -> CheckResult:
    """Run every check of the module docstring on a tiny model of ``model_cls``; never raises for a failed check."""
    t0 = time.perf_counter()
    passed: list[str] = []
    failed: dict[str, str] = {}
    skipped: dict[str, str] = {}
    try:
        stock, hooked = _tiny_pair(card, model_cls, config_cls, install)
    except Exception as error:  # the tiny model itself cannot be built or hooked
        return CheckResult(card.family, [], {"build": f"{type(error).__name__}: {error}"}, time.perf_counter() - t0)
    vocab = hooked.config.vocab_size
    ids = torch.randint(0, vocab, (1, 7), generator=torch.Generator().manual_seed(1))
    upstream_model = not type(hooked).__module__.startswith("nnsight_rnn")

    def check(name: str, fn: Callable[[], str | None]) -> None:
        try:
            problem = fn()
        except _StockUnusable as error:
            skipped[name] = str(error)
            return
        except Exception as error:
            problem = f"{type(error).__name__}: {error}"
        if problem is None:
            passed.append(name)
        else:
            failed[name] = problem

    def run_stock(*args: Any, **kwargs: Any) -> Any:
        try:
            return stock(*args, **kwargs)
        except Exception as error:  # e.g. transformers <= 5.24 calling an installed mamba-ssm's CUDA kernels on CPU
            raise _StockUnusable(
                f"the untouched upstream model cannot run here ({type(error).__name__}: {error})"
            ) from error

    def prefill() -> str | None:
        return _close(hooked(ids).logits, run_stock(ids).logits)

    def decode() -> str | None:
        a, b = hooked(ids[:, :5], use_cache=True), run_stock(ids[:, :5], use_cache=True)
        for t in (5, 6):
            a = hooked(ids[:, t : t + 1], **_carry(hooked, card, a))
            b = run_stock(ids[:, t : t + 1], **_carry(stock, card, b))
            problem = _close(a.logits, b.logits)
            if problem:
                return f"step {t}: {problem}"
        return None

    def round_trip() -> str | None:
        state = state_from_output(hooked, card, hooked(ids[:, :4], use_cache=True))
        suffix = hooked(ids[:, 4:], **state_to_forward_kwargs(hooked, card, state, 1))
        return _close(suffix.logits, hooked(ids).logits[:, 4:])

    def edit() -> str | None:
        state = state_from_output(hooked, card, hooked(ids[:, :4], use_cache=True))
        zeroed = state.map(torch.zeros_like)
        kept = hooked(ids[:, 4:], **state_to_forward_kwargs(hooked, card, state, 1)).logits
        edited = hooked(ids[:, 4:], **state_to_forward_kwargs(hooked, card, zeroed, 1)).logits
        diff = (kept - edited).abs().max().item()
        return None if diff > 1e-3 else f"zeroing the carried state changed the suffix logits by only {diff:.3g}"

    def generate() -> str | None:
        out = hooked.generate(
            ids[:, :4], max_new_tokens=3, do_sample=False, output_logits=True, return_dict_in_generate=True,
            pad_token_id=0,
        )  # fmt: skip
        full = hooked(out.sequences).logits
        for step, logits in enumerate(out.logits):
            problem = _close(logits, full[:, 3 + step])
            if problem:
                return f"generated token {step}: {problem}"
        return None

    with torch.no_grad():
        if upstream_model:
            check("prefill", prefill)
            check("decode", decode)
        check("round_trip", round_trip)
        check("edit", edit)
        check("generate", generate)
    return CheckResult(card.family, passed, failed, time.perf_counter() - t0, skipped)


class _StockUnusable(Exception):
    """The upstream reference itself cannot run in this environment: that check is skipped, not failed."""


def _carry(model: nn.Module, card: Card, output: Any) -> dict[str, Any]:
    """Forward kwargs that continue from ``output``'s cache, for a hooked or an untouched model."""
    return state_to_forward_kwargs(model, card, state_from_output(model, card, output), 1)


def error_for(result: CheckResult) -> UpstreamContractError:
    low, high = TESTED["transformers"]
    checks = "; ".join(f"{name}: {why}" for name, why in result.failed.items())
    return UpstreamContractError(
        f"nnsight-rnn's contract check failed for {result.family!r} ({checks}). Installed: {versions_line()}. "
        f"nnsight-rnn is tested with transformers {low}-{high}: install one of those "
        f"(pip install 'transformers>={low},<{high.split('.')[0]}.{int(high.split('.')[1]) + 1}'), "
        f"or report the failure with this message. Results would be wrong, so nothing was run."
    )


def ensure(card: Card, model: nn.Module, install: Install) -> None:
    """Check ``card``'s family once per process (on the classes of ``model``); raise if the contract broke."""
    if not card.is_recurrent or not card.contract_config or _checked.get(card.family):
        return
    if os.environ.get(CONTRACT_ENV, "1") == "0":
        return
    _checked[card.family] = "running"  # the check installs its own tiny model: no recursion
    try:
        result = run_checks(card, type(model), type(model.config), install)
    except BaseException:
        del _checked[card.family]
        raise
    if not result.ok:
        del _checked[card.family]
        raise error_for(result)
    _checked[card.family] = "ok"
