"""Speed and memory benchmark: nnsight-rnn against the upstream baselines, in one process.

``nnsight-rnn bench`` (or ``python -m nnsight_rnn.bench``) builds ~130M-parameter random configs
of each family whose card has a ``[bench] config`` (no download), then times, side by side:

- ``hf``: the untouched HF model's forward (``torch.no_grad``);
- ``nnsight``: a plain nnsight trace of the untouched HF model that saves every layer's output;
- ``rnn_idle``: the nnsight-rnn model's forward with hooks idle (no trace);
- ``rnn_resid``: a nnsight-rnn trace that saves every layer's residual stream (same as ``nnsight``);
- ``rnn_states``: states captured at 16 positions of 4 layers (recurrent families);
- ``rnn_traj``: the full per-position state trajectory of one layer (recurrent families);
- ``tl_states``: TransformerLens's ``TransformerBridge`` (native adapters, ``eager_scan=True`` on
  the same 4 layers) caching ``hook_ssm_state`` for the same capture, where transformer-lens 4 is
  installed (Mamba, Mamba-2).

Ratios are printed against ``hf`` and ``nnsight`` measured in the same run. Peak memory is the
growth of memory in use during a call (glibc ``mallinfo2``, sampled every millisecond). Results go to
stdout and, with ``--json``, to a file.
"""

from __future__ import annotations

import copy
import ctypes
import gc
import json
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from .command_line import ArgumentParser


def benchmarked_families() -> list[str]:
    """Families whose card has a ``[bench] config`` (and whose mixer kind is registered in this install)."""
    from .cards import all_cards
    from .mixers import MIXER_KINDS

    return sorted(
        family
        for family, card in all_cards().items()
        if card.bench_config and (not card.is_recurrent or card.mixer_kind in MIXER_KINDS)
    )


def bench_model(family: str) -> Any:
    """A ~130M random model of ``family``: the stock HF class built from the card's ``[bench] config``."""
    from transformers import AutoConfig, AutoModelForCausalLM

    from .cards import get_card

    card = get_card(family)
    if not card.bench_config:
        raise ValueError(f"the {family!r} card has no [bench] config; benchmarked families: {benchmarked_families()}")
    return AutoModelForCausalLM.from_config(AutoConfig.for_model(card.model_types[0], **card.bench_config))


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",
            "keepcost",
        )
    ]


def _malloc_in_use() -> Callable[[], int] | None:
    """Bytes currently allocated through glibc malloc (torch's CPU allocator), if readable."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallinfo2.restype = _MallInfo2
    except (OSError, AttributeError):
        return None

    def in_use() -> int:
        info = libc.mallinfo2()
        return info.uordblks + info.hblkhd

    return in_use


class PeakMemory:
    """Peak growth (bytes) of memory in use over a block, sampled every millisecond.

    Reads glibc's ``mallinfo2`` (bytes allocated, so memory freed and reused between runs is not
    hidden as RSS would hide it); falls back to the resident set size from /proc.
    """

    def __init__(self, interval: float = 0.001) -> None:
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()
        self.read = _malloc_in_use() or self.rss

    @staticmethod
    def rss() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * 4096

    def __enter__(self) -> PeakMemory:
        gc.collect()
        self.base = self.read()
        self.peak = self.base
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()
        return self

    def _watch(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.read())
            time.sleep(self.interval)

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.read())

    @property
    def growth(self) -> int:
        return self.peak - self.base


@dataclass
class Result:
    family: str
    mode: str
    batch: int
    seq: int
    seconds: float
    tokens_per_s: float
    peak_mib: float


def _time(fn: Callable[[], Any], repeats: int) -> tuple[float, float]:
    fn()  # warm-up (allocator, lazy init)
    times = []
    peak = 0
    for _ in range(repeats):
        with PeakMemory() as mem:
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        peak = max(peak, mem.growth)
    return statistics.median(times), peak / 2**20


def _modes(family: str, ref: Any, ids: torch.Tensor) -> dict[str, Callable[[], Any]]:
    import nnsight
    from nnsight.modeling.transformers import TransformersModel

    import nnsight_rnn
    from nnsight_rnn.tokenizer import byte_tokenizer

    hooked = nnsight_rnn.load(copy.deepcopy(ref))
    # A copy: nnsight instruments the modules it wraps, and `ref` must stay the untouched baseline.
    plain = TransformersModel(copy.deepcopy(ref), tokenizer=byte_tokenizer(), task="text-generation")
    card = hooked.card
    plain_layers = plain._module.get_submodule(card.modules["layers"])
    plain_env = plain
    for part in card.modules["layers"].split("."):
        plain_env = getattr(plain_env, part)

    def hf() -> None:
        with torch.no_grad():
            ref(ids)

    def plain_trace() -> None:
        with torch.no_grad(), plain.trace(ids):
            outs = list().save()
            for i in range(len(plain_layers)):
                outs.append(plain_env[i].output)

    def rnn_idle() -> None:
        with torch.no_grad():
            hooked._module(ids)

    def rnn_resid() -> None:
        with torch.no_grad(), hooked.trace(ids):
            outs = list().save()
            for i in range(len(hooked.layers)):
                outs.append(hooked.layers[i].output)

    modes = {"hf": hf, "nnsight": plain_trace, "rnn_idle": rnn_idle, "rnn_resid": rnn_resid}
    if card.is_recurrent:
        from nnsight_rnn.capture import capture_states

        n = len(hooked.layers)
        layers = sorted({0, n // 3, (2 * n) // 3, n - 1})
        positions = sorted(set(torch.linspace(0, ids.shape[1] - 1, 16).long().tolist()))  # < 16 if seq < 16

        def rnn_states() -> None:
            capture_states(hooked, ids, layers=layers, positions=positions)

        def rnn_traj() -> None:
            capture_states(hooked, ids, layers=[n // 2], positions=None)

        modes["rnn_states"] = rnn_states
        modes["rnn_traj"] = rnn_traj
        pos_dim = card.tl_bridge.state_pos_dim if card.tl_bridge is not None else None
        tl = _tl_bridge_states(pos_dim, ref, ids, layers, positions)
        if tl is not None:
            modes["tl_states"] = tl
    del nnsight
    return modes


def _tl_bridge_states(
    pos_dim: int | None, ref: Any, ids: torch.Tensor, layers: list[int], positions: list[int]
) -> Callable[[], Any] | None:
    """TransformerBridge's own eager-scan state capture (position axis ``pos_dim``, from the card), or None.

    None where TransformerLens's bridge has no state hook for the family or transformer-lens 4 is absent.
    """
    if pos_dim is None:
        return None
    try:
        from nnsight_rnn.tl.bridge import boot_bridge, unregister_bridge_adapters
    except ImportError:
        return None
    try:
        unregister_bridge_adapters()  # the native adapters, as a TransformerLens user has them
        bridge = boot_bridge(copy.deepcopy(ref))
    except Exception:  # transformer-lens 3.x has no bridge
        return None
    for layer in layers:
        bridge.blocks[layer].mixer.eager_scan = True
    names = [f"blocks.{layer}.mixer.hook_ssm_state" for layer in layers]
    index = torch.tensor(positions)

    def tl_states() -> None:
        with torch.no_grad():
            _, cache = bridge.run_with_cache(ids, names_filter=names, use_cache=False)
        picked = [cache[n].index_select(pos_dim, index) for n in names]  # noqa: F841

    return tl_states


def run(
    families: list[str], batches: list[int], seqs: list[int], modes: list[str] | None, repeats: int
) -> list[Result]:
    from tqdm import tqdm

    results = []
    for family in families:
        torch.manual_seed(0)
        ref = bench_model(family).eval()
        params = sum(p.numel() for p in ref.parameters()) / 1e6
        print(f"\n== {family}: {params:.0f}M parameters, {torch.get_num_threads()} threads")
        for batch in batches:
            for seq in seqs:
                ids = torch.randint(0, 256, (batch, seq))
                available = _modes(family, ref, ids)
                chosen = [m for m in (modes or available) if m in available]
                for mode in tqdm(chosen, desc=f"{family} b{batch} L{seq}", leave=False):
                    seconds, peak = _time(available[mode], repeats)
                    results.append(Result(family, mode, batch, seq, seconds, batch * seq / seconds, peak))
                _print_block([r for r in results if (r.family, r.batch, r.seq) == (family, batch, seq)])
    return results


def _print_block(rows: list[Result]) -> None:
    by_mode = {r.mode: r for r in rows}
    hf = by_mode.get("hf")
    plain = by_mode.get("nnsight")
    head = rows[0]
    print(f"-- {head.family} batch {head.batch} seq {head.seq}")
    print(f"   {'mode':11s} {'seconds':>8s} {'tok/s':>9s} {'peak MiB':>9s} {'vs hf':>7s} {'vs nnsight':>10s}")
    for r in rows:
        vs_hf = f"{hf.seconds / r.seconds:6.2f}x" if hf else "-"
        vs_plain = f"{r.seconds / plain.seconds:9.2f}t" if plain else "-"
        print(f"   {r.mode:11s} {r.seconds:8.3f} {r.tokens_per_s:9.1f} {r.peak_mib:9.1f} {vs_hf:>7s} {vs_plain:>10s}")
    print("   (vs hf: speed-up over stock HF, >1 is faster; vs nnsight: time relative to a plain nnsight trace)")


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog="nnsight-rnn bench", description=__doc__.split("\n\n")[0])
    available = benchmarked_families()
    parser.add_argument("--families", nargs="+", default=available, choices=available)
    parser.add_argument("--batch", nargs="+", type=int, default=[1])
    parser.add_argument("--seq", nargs="+", type=int, default=[512])
    parser.add_argument("--modes", nargs="+", default=None)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--json", default=None, help="write results to this JSON file")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    results = run(args.families, args.batch, args.seq, args.modes, args.repeats)
    if args.json:
        with open(args.json, "w") as f:
            json.dump([r.__dict__ for r in results], f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
