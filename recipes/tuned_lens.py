"""Logit lens vs tuned lens across architectures (Belrose et al. 2023), with the unmodified tuned-lens package.

For each model (a zoo name such as ``zoo/mamba-tiny``, a local folder, or a hub id when you have
network) the recipe

1. loads it ready for tuned-lens (:func:`nnsight_rnn.integrations.tuned_lens_cli.load_model`:
   nnsight-rnn's hookable mixers, card-based model surgery, transformer hidden-state convention);
2. trains a tuned lens (``tuned_lens.TunedLens.from_model``) with tuned-lens's own recipe: KL from the
   model's final output distribution at every position, SGD with Nesterov momentum 0.9, learning rate
   ``lr_scale * (1 - 0.9)``, weight decay 1e-3, linear decay, gradient clipping at 1, translators
   initialised to the identity (fp32 here, no bf16 autocast);
3. saves it in tuned-lens's format (``lenses/<model>/config.json`` + ``params.pt``, loadable with
   ``TunedLens.from_model_and_pretrained(model, path)``) and reloads it as a check;
4. evaluates the logit lens and the tuned lens at every layer on held-out text: next-token
   cross-entropy in bits per byte, and KL divergence from the model's final output (bits per token);
5. optionally (``--state-lens``, recurrent models) trains and evaluates a lens on each layer's recurrent
   state (:mod:`nnsight_rnn.integrations.state_lens`);
6. writes ``tuned_lens.json`` and one figure ``tuned_lens.png`` with every model's curves against
   relative depth (like the paper's comparison figure).

Depth: lens index ``i`` decodes ``hidden_states[i]``, the residual stream *entering* layer ``i``
(``i = 0``: the embeddings), plotted at relative depth ``i / n``; the model's own output is depth 1.
The state lens of layer ``i`` (the state after the current token was written, inside layer ``i``) is
plotted at ``(i + 0.5) / n``.

Bits per byte: cross-entropy in nats per token times ``tokens / UTF-8 bytes`` of the documents (the
end-of-text separators count as tokens, not bytes), divided by ln 2.

Data: ``--data file.jsonl`` (a ``text`` column, ``--text-column`` to change) or a plain-text file (one
document per non-empty line); every 10th document is held out for evaluation. Without ``--data``,
generated grammar text (:func:`nnsight_rnn.corpus.grammar_text`) is written to a temporary jsonl
(training: seed 0, evaluation: seed 1).

Usage::

    python recipes/tuned_lens.py --models zoo/mamba-tiny zoo/mamba2-tiny zoo/rwkv4-tiny zoo/gpt2-tiny \\
        --out runs/tuned-lens --state-lens
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if __name__ == "__main__":  # run as a script: this folder must not shadow the `tuned_lens` package
    _here = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _here]

import torch

from nnsight_rnn.command_line import ArgumentParser

DEFAULT_MODELS = ["zoo/mamba-tiny", "zoo/mamba2-tiny", "zoo/rwkv4-tiny", "zoo/gpt2-tiny"]


# ---------------------------------------------------------------------------------------------
# data
# ---------------------------------------------------------------------------------------------


def read_documents(path: str | Path, text_column: str = "text") -> list[str]:
    """Documents of a ``.jsonl`` file (``text_column`` of each line) or a text file (one per non-empty line)."""
    path = Path(path)
    docs = []
    with path.open(encoding="utf-8") as f:
        if path.suffix == ".jsonl":
            for n, line in enumerate(f, 1):
                if line.strip():
                    record = json.loads(line)
                    if text_column not in record:
                        raise KeyError(f"{path}:{n} has no {text_column!r} field (fields: {sorted(record)})")
                    docs.append(str(record[text_column]))
        else:
            docs = [line.rstrip("\n") for line in f if line.strip()]
    if not docs:
        raise ValueError(f"{path} has no documents")
    return docs


def write_default_corpus(folder: str | Path, n_train: int = 3000, n_eval: int = 600) -> tuple[Path, Path]:
    """Generated grammar text as two jsonl files (training seed 0, evaluation seed 1)."""
    from nnsight_rnn.corpus import grammar_text

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, seed, n in (("train", 0, n_train), ("eval", 1, n_eval)):
        path = folder / f"grammar-{name}.jsonl"
        path.write_text("".join(json.dumps({"text": t}) + "\n" for t in grammar_text(seed, n)), encoding="utf-8")
        paths.append(path)
    return paths[0], paths[1]


def pack(tokenizer: Any, docs: list[str], max_length: int) -> tuple[torch.Tensor, float]:
    """tuned-lens-style chunks: ``[eos, doc_0, eos, doc_1, ...]`` cut into ``[n, max_length]`` ids (tail dropped).

    Returns ``(ids, nats_to_bpb)`` with ``nats_to_bpb = tokens / bytes / ln 2`` over the whole stream.
    """
    eos = tokenizer.eos_token_id
    if eos is None:
        raise ValueError("the tokenizer has no eos token (needed to separate documents)")
    stream = [eos]
    n_bytes = 0
    for doc in docs:
        stream += tokenizer(doc, add_special_tokens=False)["input_ids"] + [eos]
        n_bytes += len(doc.encode("utf-8"))
    n = len(stream) // max_length
    if n == 0:
        raise ValueError(f"{len(stream)} tokens are not enough for one sequence of {max_length}")
    ids = torch.tensor(stream[: n * max_length]).view(n, max_length)
    return ids, len(stream) / n_bytes / math.log(2)


# ---------------------------------------------------------------------------------------------
# training and evaluation (tuned-lens's API: TunedLens / LogitLens, lens(h, idx))
# ---------------------------------------------------------------------------------------------


def hidden_and_logits(model: torch.nn.Module, ids: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
    """``hidden_states[:-1]`` (what tuned-lens lenses: ``n`` tensors ``[b, L, d]``) and the logits ``[b, L, V]``."""
    with torch.no_grad():
        out = model(ids, output_hidden_states=True)
    hidden = list(out.hidden_states[:-1])
    if len(hidden) != model.config.num_hidden_layers:
        raise RuntimeError(f"expected {model.config.num_hidden_layers} lensable hidden states, got {len(hidden)}")
    return hidden, out.logits.float()


def train_tuned_lens(
    model: torch.nn.Module,
    train_ids: torch.Tensor,
    *,
    steps: int = 250,
    batch_size: int = 8,
    lr_scale: float = 1.0,
    momentum: float = 0.9,
    weight_decay: float = 1e-3,
    seed: int = 0,
    progress: bool = True,
    desc: str = "tuned lens",
) -> tuple[Any, list[float]]:
    """Train ``TunedLens.from_model(model)`` on KL(final || lens) summed over layers; returns (lens, loss per step)."""
    from tqdm.auto import trange
    from transformers import get_linear_schedule_with_warmup
    from tuned_lens import TunedLens

    device = next(model.parameters()).device
    lens = TunedLens.from_model(model).float().to(device)  # tuned-lens builds the translators on the CPU
    params = [p for p in lens.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=lr_scale * (1 - momentum), momentum=momentum, nesterov=True,
                          weight_decay=weight_decay)  # fmt: skip
    sched = get_linear_schedule_with_warmup(opt, 0, steps)
    gen = torch.Generator().manual_seed(seed)
    losses = []
    order = torch.randperm(len(train_ids), generator=gen)
    cursor = 0
    for _ in trange(steps, desc=desc, disable=not progress, leave=False):
        if cursor + batch_size > len(order):
            order, cursor = torch.randperm(len(train_ids), generator=gen), 0
        ids = train_ids[order[cursor : cursor + batch_size]]
        cursor += batch_size
        hidden, logits = hidden_and_logits(model, ids)
        target = logits.log_softmax(-1)
        total = 0.0
        for i, h in enumerate(hidden):
            lp = lens(h, idx=i).float().log_softmax(-1)
            loss = (target.exp() * (target - lp)).sum(-1).mean()
            loss.backward()
            total += float(loss.detach())
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=False)
        sched.step()
        losses.append(total / len(hidden))
    return lens.eval(), losses


@torch.no_grad()
def evaluate_lenses(
    model: torch.nn.Module, lenses: dict[str, Any], eval_ids: torch.Tensor, batch_size: int = 16
) -> dict[str, Any]:
    """Per lens and layer: next-token cross-entropy and KL(final || lens), in nats per token; plus the model's CE."""
    n = model.config.num_hidden_layers
    sums = {name: {"ce": [0.0] * n, "kl": [0.0] * n} for name in lenses}
    final_ce, count = 0.0, 0
    for start in range(0, len(eval_ids), batch_size):
        ids = eval_ids[start : start + batch_size]
        hidden, logits = hidden_and_logits(model, ids)
        final = logits.log_softmax(-1)[:, :-1]
        targets = ids[:, 1:, None]
        final_ce += float(-final.gather(-1, targets).sum())
        count += targets.numel()
        for name, lens in lenses.items():
            for i, h in enumerate(hidden):
                lp = lens(h, idx=i).float().log_softmax(-1)[:, :-1]
                sums[name]["ce"][i] += float(-lp.gather(-1, targets).sum())
                sums[name]["kl"][i] += float((final.exp() * (final - lp)).sum(-1).sum())
    out: dict[str, Any] = {name: {k: [v / count for v in vals] for k, vals in s.items()} for name, s in sums.items()}
    out["final_ce"] = final_ce / count
    out["tokens"] = count
    return out


# ---------------------------------------------------------------------------------------------
# one model
# ---------------------------------------------------------------------------------------------


def slug(name: str) -> str:
    return name.replace("\\", "/").strip("/").replace("/", "__")


def run_model(
    name: str,
    train_docs: list[str],
    eval_docs: list[str],
    out_dir: Path,
    args: argparse.Namespace,
) -> dict[str, Any]:
    """Train, save, reload, evaluate one model; returns its JSON record."""
    from tuned_lens import TunedLens
    from tuned_lens.nn.lenses import LogitLens

    from nnsight_rnn import card_for
    from nnsight_rnn.integrations.tuned_lens_cli import load_model, load_tokenizer

    t0 = time.perf_counter()
    model = load_model(name, precision="float32", device=args.device)
    tokenizer = load_tokenizer(name)
    card = card_for(model)
    n_layers = model.config.num_hidden_layers
    train_ids, _ = pack(tokenizer, train_docs, args.max_length)
    eval_ids, nats_to_bpb = pack(tokenizer, eval_docs, args.max_length)
    eval_ids = eval_ids[: max(1, args.eval_tokens // args.max_length)]
    train_ids, eval_ids = train_ids.to(args.device), eval_ids.to(args.device)
    load_s = time.perf_counter() - t0

    t0 = time.perf_counter()
    lens, losses = train_tuned_lens(model, train_ids, steps=args.steps, batch_size=args.batch_size,
                                    lr_scale=args.lr_scale, seed=args.seed, progress=args.progress,
                                    desc=f"tuned lens {name}")  # fmt: skip
    train_s = time.perf_counter() - t0
    lens_dir = out_dir / "lenses" / slug(name)
    lens.save(lens_dir)
    reloaded = TunedLens.from_model_and_pretrained(model, str(lens_dir)).float().to(args.device).eval()
    for a, b in zip(lens.parameters(), reloaded.parameters(), strict=True):
        if not torch.equal(a, b):
            raise RuntimeError(f"the lens saved to {lens_dir} did not reload identically")

    t0 = time.perf_counter()
    metrics = evaluate_lenses(model, {"logit": LogitLens.from_model(model), "tuned": reloaded}, eval_ids)
    eval_s = time.perf_counter() - t0
    bits = 1 / math.log(2)
    layers = []
    for i in range(n_layers):
        layers.append(
            {
                "index": i,
                "depth": i / n_layers,
                "stream": "embeddings" if i == 0 else f"layers.{i - 1}.output",
                **{
                    kind: {"ce_bpb": metrics[kind]["ce"][i] * nats_to_bpb, "kl_bits": metrics[kind]["kl"][i] * bits}
                    for kind in ("logit", "tuned")
                },
            }
        )
    record: dict[str, Any] = {
        "model": name,
        "family": card.family,
        "recurrent": card.is_recurrent,
        "n_layers": n_layers,
        "d_model": model.config.hidden_size,
        "lens_dir": str(lens_dir),
        "nats_to_bpb": nats_to_bpb,
        "train_sequences": len(train_ids),
        "eval_tokens": metrics["tokens"],
        "final_ce_bpb": metrics["final_ce"] * nats_to_bpb,
        "layers": layers,
        "train_loss_kl_nats": {"first": losses[0], "last": losses[-1], "every_10": losses[::10]},
        "seconds": {"load": load_s, "train": train_s, "eval": eval_s},
    }
    if args.state_lens and card.is_recurrent:
        record["state_lens"] = run_state_lens(model, train_ids, eval_ids, nats_to_bpb, out_dir, name, args)
    return record


def run_state_lens(model: torch.nn.Module, train_ids: torch.Tensor, eval_ids: torch.Tensor, nats_to_bpb: float,
                   out_dir: Path, name: str, args: argparse.Namespace) -> dict[str, Any]:  # fmt: skip
    """Train / save / evaluate a state lens (see nnsight_rnn.integrations.state_lens); JSON record."""
    from nnsight_rnn.integrations.state_lens import StateLens, evaluate_state_lens, state_source, train_state_lens

    try:
        source = state_source(model)
    except ValueError as error:
        return {"skipped": str(error)}
    t0 = time.perf_counter()
    n_seq = min(len(train_ids), args.state_lens_sequences)
    batches = list(train_ids[:n_seq].split(args.batch_size))
    lens = StateLens.from_model(model, train_ids[:1])
    losses = train_state_lens(lens, model, batches, steps=args.state_lens_steps, progress=args.progress)
    lens_dir = out_dir / "state_lenses" / slug(name)
    lens.save(lens_dir)
    train_s = time.perf_counter() - t0
    metrics = evaluate_state_lens(lens, model, list(eval_ids.split(args.batch_size)))
    n = len(lens)
    return {
        "features": source.description,
        "d_state": lens.config.d_state,
        "lens_dir": str(lens_dir),
        "layers": [
            {
                "layer": i,
                "depth": (i + 0.5) / n,
                "ce_bpb": metrics["ce"][i] * nats_to_bpb,
                "kl_bits": metrics["kl"][i] / math.log(2),
            }
            for i in range(n)
        ],
        "train_loss_kl_nats": {"first": losses[0], "last": losses[-1]},
        "seconds": {"train": train_s},
    }


# ---------------------------------------------------------------------------------------------
# figure
# ---------------------------------------------------------------------------------------------


def _short(name: str) -> str:
    return name if name.startswith("zoo/") or not os.path.isdir(name) else os.path.basename(os.path.normpath(name))


def plot(results: dict[str, Any], path: str | Path, title: str | None = None) -> None:
    """Cross-entropy (bits per byte) and KL to the final output (bits) against relative depth, every model.

    One colour per model; solid: tuned lens, dashed: logit lens, dotted squares: state lens. Both
    y axes are logarithmic (the logit lens on the embeddings is often an order of magnitude off).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    fig, (ax_ce, ax_kl) = plt.subplots(1, 2, figsize=(11, 4.4))
    colours = plt.get_cmap("tab10")
    model_handles = []
    any_state = False
    for k, (name, rec) in enumerate(results["models"].items()):
        c = colours(k % 10)
        depth = [layer["depth"] for layer in rec["layers"]] + [1.0]
        for kind, style in (("tuned", "-"), ("logit", "--")):
            ce = [layer[kind]["ce_bpb"] for layer in rec["layers"]] + [rec["final_ce_bpb"]]
            kl = [layer[kind]["kl_bits"] for layer in rec["layers"]]
            ax_ce.plot(depth, ce, style, color=c, marker="o", ms=4)
            ax_kl.plot(depth[:-1], kl, style, color=c, marker="o", ms=4)
        state = rec.get("state_lens", {}).get("layers")
        if state:
            any_state = True
            sd = [s["depth"] for s in state]
            ax_ce.plot(sd, [s["ce_bpb"] for s in state], ":", color=c, marker="s", ms=5)
            ax_kl.plot(sd, [s["kl_bits"] for s in state], ":", color=c, marker="s", ms=5)
        label = f"{_short(name)} ({rec['family']}, {rec['n_layers']} layers, d={rec['d_model']})"
        model_handles.append(Line2D([], [], color=c, lw=2.5, label=label))
    style_handles = [
        Line2D([], [], color="k", ls="-", marker="o", ms=4, label="tuned lens"),
        Line2D([], [], color="k", ls="--", marker="o", ms=4, label="logit lens"),
    ]
    if any_state:
        style_handles.append(Line2D([], [], color="k", ls=":", marker="s", ms=5, label="state lens (state of layer i)"))
    xlabel = "relative depth (0 = embeddings, 1 = model output)"
    ax_ce.set_xlabel(xlabel)
    ax_kl.set_xlabel(xlabel)
    ax_ce.set_ylabel("next-token cross-entropy (bits per byte)")
    ax_kl.set_ylabel("KL(model output || lens) (bits per token)")
    ax_ce.set_yscale("log")
    ax_kl.set_yscale("log")
    for ax in (ax_ce, ax_kl):
        ax.grid(alpha=0.3, which="both")
        ax.set_xlim(-0.03, 1.03)
    ax_ce.legend(handles=style_handles, fontsize=8, loc="upper right")
    fig.legend(handles=model_handles, loc="lower center", ncol=min(3, len(model_handles)), fontsize=8, frameon=False)
    fig.suptitle(title or "Logit lens vs tuned lens across architectures (held-out text)")
    n_rows = math.ceil(len(model_handles) / 3)
    fig.tight_layout(rect=(0, 0.05 * n_rows + 0.01, 1, 1))
    fig.savefig(path, dpi=130)
    plt.close(fig)


# ---------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--models", nargs="+", default=DEFAULT_MODELS, help="zoo names, folders or hub ids")
    p.add_argument("--data", help="training text: .jsonl or .txt (default: generated grammar text)")
    p.add_argument("--eval-data", help="evaluation text (default: every 10th document of --data held out)")
    p.add_argument("--text-column", default="text")
    p.add_argument("--out", default="runs/tuned-lens", help="output folder (JSON, PNG, lenses)")
    p.add_argument("--steps", type=int, default=250, help="tuned-lens training steps (tuned-lens's default: 250)")
    p.add_argument("--batch-size", type=int, default=8, help="sequences per step")
    p.add_argument("--max-length", type=int, default=64, help="tokens per sequence")
    p.add_argument("--eval-tokens", type=int, default=8192)
    p.add_argument("--lr-scale", type=float, default=1.0, help="SGD learning rate = lr_scale * (1 - momentum)")
    p.add_argument("--state-lens", action="store_true", help="also train a lens on each layer's recurrent state")
    p.add_argument("--state-lens-steps", type=int, default=300)
    p.add_argument("--state-lens-sequences", type=int, default=64)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (1 is fastest on shared CPUs)")
    p.add_argument("--title", default=None)
    p.add_argument("--no-progress", dest="progress", action="store_false")
    return p


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the recipe; returns the JSON record (also written to ``<out>/tuned_lens.json``)."""
    from tqdm.auto import tqdm

    args = build_parser().parse_args(argv)
    torch.manual_seed(args.seed)
    if args.threads:
        torch.set_num_threads(args.threads)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        if args.data is None:
            train_path, eval_path = write_default_corpus(tmp)
            data_info = {"source": "generated grammar text (nnsight_rnn.corpus.grammar_text, seeds 0 / 1)"}
        else:
            train_path, eval_path = Path(args.data), Path(args.eval_data) if args.eval_data else None
            data_info = {"source": str(train_path), "eval_source": str(eval_path or "every 10th document")}
        docs = read_documents(train_path, args.text_column)
        if eval_path is None:
            train_docs = [d for k, d in enumerate(docs) if k % 10 != 9]
            eval_docs = [d for k, d in enumerate(docs) if k % 10 == 9]
        else:
            train_docs, eval_docs = docs, read_documents(eval_path, args.text_column)
    results: dict[str, Any] = {
        "recipe": "tuned_lens",
        "data": {**data_info, "train_documents": len(train_docs), "eval_documents": len(eval_docs)},
        "settings": {k: v for k, v in vars(args).items() if k not in ("models", "progress")},
        "units": {
            "ce_bpb": "next-token cross-entropy, bits per UTF-8 byte",
            "kl_bits": "KL(model output || lens), bits per token",
        },
        "models": {},
    }
    for name in tqdm(args.models, desc="models", disable=not args.progress):
        results["models"][name] = run_model(name, train_docs, eval_docs, out_dir, args)
        _write(results, out_dir)
    plot(results, out_dir / "tuned_lens.png", args.title)
    _write(results, out_dir)
    _summary(results)
    return results


def _write(results: dict[str, Any], out_dir: Path) -> None:
    tmp = out_dir / "tuned_lens.json.tmp"
    tmp.write_text(json.dumps(results, indent=1))
    os.replace(tmp, out_dir / "tuned_lens.json")


def _summary(results: dict[str, Any]) -> None:
    for name, rec in results["models"].items():
        print(f"{name} ({rec['family']}): model output {rec['final_ce_bpb']:.3f} bits/byte")
        for layer in rec["layers"]:
            print(f"  {layer['stream']:>18}: logit lens {layer['logit']['ce_bpb']:.3f}  tuned lens "
                  f"{layer['tuned']['ce_bpb']:.3f} bits/byte   KL {layer['logit']['kl_bits']:.3f} -> "
                  f"{layer['tuned']['kl_bits']:.3f} bits")  # fmt: skip
        for s in rec.get("state_lens", {}).get("layers", []):
            print(
                f"  state of layer {s['layer']:>3}: state lens {s['ce_bpb']:.3f} bits/byte  KL {s['kl_bits']:.3f} bits"
            )


if __name__ == "__main__":
    from nnsight_rnn.command_line import run_reporting_errors

    sys.exit(run_reporting_errors(lambda: main(sys.argv[1:]) and 0, prog="tuned_lens.py"))
