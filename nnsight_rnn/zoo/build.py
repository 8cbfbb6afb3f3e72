"""Building, caching and shipping zoo models; ``zoo_path`` finds (or builds) one."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict
from pathlib import Path

import torch

from ..command_line import ArgumentParser
from .evaluate import evaluate
from .registry import (
    SHIPPED,
    ZooSpec,
    available,
    cached_info,
    corpus_version,
    get_spec,
    register,
    shipped_dir,
    shipped_info,
    zoo_dir,
)
from .train import single_thread, train


def zoo_path(name: str, *, build: bool = True, progress: bool = True) -> str:
    """The folder of ``zoo/<name>``, training and caching it first if needed (``build=True``).

    Raises :class:`UnknownZooModelError` for an unknown name, ``FileNotFoundError`` if the model
    is not cached and ``build=False``.
    """
    spec = get_spec(name)
    folder = zoo_dir(name)
    if cached_info(name) is not None:  # built on this machine (`nnsight-rnn zoo build`)
        return str(folder)
    if shipped_info(name) is not None:  # shipped in the wheel: no training on a user's machine
        return str(shipped_dir(name))
    if not build:
        raise FileNotFoundError(
            f"{spec.full_name} is not built yet (expected in {folder}). Build it with "
            f"nnsight_rnn.zoo.build_model({spec.full_name!r}) or `nnsight-rnn zoo build {spec.name}`."
        )
    return str(build_model(name, progress=progress))


# ---------------------------------------------------------------------------------------------
# building and caching
# ---------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    """No "Writing model shards" bar from ``save_pretrained`` (ours is the training bar)."""
    from transformers.utils import logging as hf_logging

    enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if enabled:
            hf_logging.enable_progress_bar()


def _say(message: str) -> None:
    print(f"nnsight-rnn: {message}", file=sys.stderr, flush=True)


def build_model(name: str, *, force: bool = False, progress: bool = True, position: int = 0) -> Path:
    """Train ``zoo/<name>``, evaluate it and save it to :func:`zoo_dir` (atomically); return the folder.

    Skips the work if an up-to-date copy is cached, unless ``force``.
    """
    from transformers import __version__ as transformers_version

    from .._version import __version__
    from ..tokenizer import byte_tokenizer

    spec = get_spec(name)
    folder = zoo_dir(name)
    if not force and cached_info(name) is not None:
        return folder
    stale = folder.exists()
    _say(
        f"{'rebuilding (its recipe or the corpus changed)' if stale else 'building'} {spec.full_name}"
        f"{'' if stale else ' for the first time'}: "
        f"training {spec.description} for {spec.steps} steps on CPU; it will be cached in {folder}"
    )
    result = train(spec, progress=progress, position=position)
    with single_thread():
        metrics = evaluate(result.model)
    info = {
        "name": spec.full_name,
        "family": spec.family,
        "description": spec.description,
        "seed": spec.seed,
        "steps": spec.steps,
        "batch_size": spec.batch_size,
        "seq_len": spec.seq_len,
        "lr": spec.lr,
        "final_train_loss": round(result.final_loss, 6),
        "last_train_loss": result.losses[-1],
        "metrics": metrics,
        "train_wall_s": round(result.wall_s, 1),
        "train_cpu_s": round(result.cpu_s, 1),
        "corpus_version": corpus_version(),
        "fingerprint": spec.fingerprint(),
        "nnsight_rnn_version": __version__,
        "torch_version": torch.__version__,
        "transformers_version": transformers_version,
    }
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{spec.name}-", dir=folder.parent))
    try:
        with _quiet_transformers():
            result.model.save_pretrained(tmp)
            byte_tokenizer().save_pretrained(tmp)
        (tmp / "zoo.json").write_text(json.dumps(info, indent=2) + "\n")
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(tmp, folder)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    _say(
        f"built {spec.full_name} in {result.wall_s:.0f} s (loss {metrics['loss']:.3f} vs unigram "
        f"{metrics['unigram_loss']:.3f}, Alice {metrics['alice_acc']:.1%}, Bob rule {metrics['bob_rule_acc']:.1%}, "
        f"copy {metrics['copy_acc']:.1%}, disposition {metrics['disposition_acc']:.1%}) -> {folder}"
    )
    return folder


def build_zoo(
    names: Sequence[str] | None = None, *, force: bool = False, progress: bool = True, jobs: int | None = None
) -> dict[str, str]:
    """Build (or find cached) every zoo model in ``names`` (default: all); return name -> folder.

    Models train in ``jobs`` parallel worker processes (``python -m nnsight_rnn.zoo NAME``; default:
    one per CPU core, at most one per model), each single-threaded, so the weights do not depend
    on ``jobs``. This is what ``nnsight-rnn zoo build [NAME ...]`` runs.
    """
    specs = [get_spec(n) for n in (names or available())]
    todo = [s for s in specs if force or cached_info(s.name) is None]
    jobs = min(len(todo), os.cpu_count() or 1) if jobs is None else min(jobs, len(todo))
    if jobs > 1:
        import subprocess

        _say(f"building {len(todo)} zoo models in {jobs} processes: {', '.join(s.full_name for s in todo)}")
        running: list[tuple[ZooSpec, subprocess.Popen[bytes]]] = []
        failed: list[str] = []
        queue = list(todo)
        while queue or running:
            while queue and len(running) < jobs:
                spec = queue.pop(0)
                cmd = [sys.executable, "-m", "nnsight_rnn.zoo", "--position", str(len(running))]
                cmd += ["--spec", json.dumps(asdict(spec)), spec.name]  # custom / replaced specs too
                cmd += ["--force"] if force else []
                cmd += [] if progress else ["--quiet"]
                running.append((spec, subprocess.Popen(cmd)))
            time.sleep(0.2)
            for spec, proc in list(running):
                if proc.poll() is not None:
                    running.remove((spec, proc))
                    if proc.returncode != 0:
                        failed.append(spec.full_name)
        if failed:
            raise RuntimeError(
                f"building {failed} failed (see the errors above); retry with build_zoo({failed}, jobs=1)"
            )
    else:
        for spec in todo:
            build_model(spec.name, force=force, progress=progress)
    return {s.full_name: str(zoo_dir(s.name)) for s in specs}


SHIPPED_FILES = (
    "config.json", "generation_config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "zoo.json",
)  # fmt: skip


def ship(names: Sequence[str] | None = None, dest: Path = SHIPPED) -> dict[str, Path]:
    """Copy built (cached, up-to-date) zoo models into the package (``nnsight_rnn/zoo/weights``).

    Run from a source checkout after ``nnsight-rnn zoo build``; the copies are what the wheel ships.
    No pickles: safetensors, JSON and the tokenizer files only.
    """
    shipped: dict[str, Path] = {}
    for name in names or available():
        spec = get_spec(name)
        if cached_info(name) is None:
            raise FileNotFoundError(f"{spec.full_name} is not built; run `nnsight-rnn zoo build {spec.name}` first")
        target = dest / spec.name
        target.mkdir(parents=True, exist_ok=True)
        for file in SHIPPED_FILES:
            if (zoo_dir(name) / file).exists():
                shutil.copyfile(zoo_dir(name) / file, target / file)
        shipped[spec.full_name] = target
    return shipped


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m nnsight_rnn.zoo [--force] [--quiet] [NAME ...]``: build zoo models (worker entry point)."""
    import argparse

    parser = ArgumentParser(prog="python -m nnsight_rnn.zoo", description="Build tiny zoo models.")
    parser.add_argument("names", nargs="*", help=f"zoo names (default: all of {available()})")
    parser.add_argument("--force", action="store_true", help="rebuild even if cached")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument("--position", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--spec", default=None, help=argparse.SUPPRESS)  # JSON of a ZooSpec (from build_zoo)
    args = parser.parse_args(argv)
    if args.spec:
        register(ZooSpec(**json.loads(args.spec)))
    if len(args.names) == 1:
        build_model(args.names[0], force=args.force, progress=not args.quiet, position=args.position)
    else:
        build_zoo(args.names or None, force=args.force, progress=not args.quiet)
