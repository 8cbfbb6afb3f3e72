#!/usr/bin/env python
"""Steering through the carried recurrent state, compared with residual-stream CAA and with both at once.

What only recurrent models allow: the state a layer carries after the prompt is a fixed-size
summary of everything read so far. For each layer, the steering vector is the mean carried state
after ``prompt + prefix + matching letter`` minus after the non-matching letter (every state
tensor of the family, in its linear coordinates: Mamba's ``conv`` and ``ssm``, RWKV-4's token
shifts and WKV numerator / denominator). It is added (times a multiplier) to the state carried
out of each held-out prompt, the answer prefix is run from the edited state, and
``p(matching) / (p(A) + p(B))`` is read at the answer position. Then, at the best layers, the
state steer is compared with residual CAA (``recipes/caa_steering.py``) and with both at once
(is the effect of both the sum of the two?). Generation from the steered state is checked
against plain generation with a zero vector (identical tokens expected).

    python recipes/state_steering.py --model zoo/mamba-tiny zoo/rwkv4-tiny --out out/state

Same command line as ``caa_steering.py``. On a transformer (no state) only the residual part runs.
Writes ``state_steering.json``, ``state_steering.png`` and the vectors (``vectors/<model>/``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import caa_steering as caa  # the sibling recipe: shared command line and data

from nnsight_rnn import steering as S
from nnsight_rnn.command_line import ArgumentParser


def compare(model: Any, enc: S.EncodedItems, resid: S.Steer, state: S.Steer, multipliers: list[float],
            batch_size: int) -> list[dict[str, Any]]:  # fmt: skip
    """Per multiplier: mean p(matching) under residual only, state only, both, and the additive prediction.

    The additive prediction adds the two per-item logit-difference shifts:
    ``sigmoid(d_resid + d_state - d_none)``. ``additivity`` is ``shift(both) / (shift(resid) +
    shift(state))`` in mean logit difference (1: additive; < 1: sub-additive).
    """
    m0, o0 = S.letter_logits(model, enc, batch_size=batch_size)
    d0 = m0 - o0
    rows = []
    for mult in multipliers:
        r = S.Steer(resid.vectors, resid.layer, mult)
        s = S.Steer(state.vectors, state.layer, mult)
        d = {}
        for name, steers in (("residual", [r]), ("state", [s]), ("both", [r, s])):
            m, o = S.letter_logits(model, enc, *steers, batch_size=batch_size)
            d[name] = m - o
        shift = {k: float((v - d0).mean()) for k, v in d.items()}
        denom = shift["residual"] + shift["state"]
        rows.append(
            {
                "multiplier": mult,
                "p_none": float(torch.sigmoid(d0).mean()),
                **{f"p_{k}": float(torch.sigmoid(v).mean()) for k, v in d.items()},
                "p_additive": float(torch.sigmoid(d["residual"] + d["state"] - d0).mean()),
                **{f"logit_shift_{k}": v for k, v in shift.items()},
                "additivity": shift["both"] / denom if abs(denom) > 1e-6 else None,
            }
        )
    return rows


def zero_vector_check(model: Any, enc: S.EncodedItems, vectors: S.SteeringVectors, layer: int,
                      max_new_tokens: int) -> dict[str, Any]:  # fmt: skip
    """A zero state vector must leave logits and greedy generation exactly as without steering."""
    zero = S.Steer(vectors.zeros_like(), layer, 1.0)
    m0, o0 = S.letter_logits(model, enc)
    mz, oz = S.letter_logits(model, enc, zero)
    plain = S.generate(model, enc.prompts[0], max_new_tokens=max_new_tokens)
    steered = S.generate(model, enc.prompts[0], zero, max_new_tokens=max_new_tokens)
    return {
        "max_abs_logit_diff": float(torch.maximum((mz - m0).abs(), (oz - o0).abs()).max()),
        "generation_identical": plain == steered,
        "generation": S.decode(model, steered),
    }


def run_model(name: str, args: argparse.Namespace, train: list[S.Item], test: list[S.Item]) -> dict[str, Any]:
    start, cpu = time.perf_counter(), time.process_time()
    model = caa.load_model(name)
    layers = caa.parse_layers(args.layers, len(model.layers))
    multipliers = caa.parse_floats(args.multipliers)
    enc_train = S.encode_items(model.tokenizer, train, args.template)
    enc_test = S.encode_items(model.tokenizer, test, args.template)
    progress = not args.no_progress
    out_dir = os.path.join(args.out, "vectors", caa.slug(name))
    resid = S.residual_vectors(model, enc_train, layers, batch_size=args.batch_size)
    resid.save(os.path.join(out_dir, "residual"), model)
    resid_rows = S.sweep(model, enc_test, resid, layers, multipliers, progress=progress, desc=f"residual {name}",
                         batch_size=args.batch_size)  # fmt: skip
    resid_best = S.best_layer(resid_rows)
    result: dict[str, Any] = {
        "family": model.card.family,
        "n_layers": len(model.layers),
        "layers": layers,
        "residual": {
            "sweep": resid_rows,
            "best_layer": resid_best,
            "effect_at_best": S.effect(resid_rows, resid_best),
            "effect_t_at_best": S.effect_t(resid_rows, resid_best),
        },
    }
    if not model.card.is_recurrent:
        result["state"] = None
        result["note"] = f"{model.card.family} carries no recurrent state: only residual steering was run"
        print(
            f"{name} ({model.card.family}): no recurrent state; residual effect {S.effect(resid_rows, resid_best):+.3f}"
        )
    else:
        vectors = S.state_vectors(model, enc_train, layers, batch_size=args.batch_size)
        vectors.save(os.path.join(out_dir, "state"), model)
        rows = S.sweep(model, enc_test, vectors, layers, multipliers, progress=progress, desc=f"state {name}",
                       batch_size=args.batch_size)  # fmt: skip
        best = S.best_layer(rows)
        per_slot = {}
        for slot in vectors.meta["slots"]:
            slot_rows = S.sweep(model, enc_test, vectors, layers, multipliers, slots=(slot,), progress=progress,
                                desc=f"state[{slot}] {name}", batch_size=args.batch_size)  # fmt: skip
            per_slot[slot] = {
                "sweep": slot_rows,
                "effect": {str(layer): S.effect(slot_rows, layer) for layer in layers},
            }
        comparison = compare(model, enc_test, S.Steer(resid, resid_best, 0), S.Steer(vectors, best, 0), multipliers,
                             args.batch_size)  # fmt: skip
        gens = []
        if args.generate > 0:
            pick = sorted({multipliers[0], 0.0, multipliers[-1]})
            gens = caa.generations(model, enc_test, {m: [S.Steer(vectors, best, m)] for m in pick}, args.generate,
                                   args.max_new_tokens)  # fmt: skip
        result["state"] = {
            "state_space": vectors.meta["state_space"],
            "slots": vectors.meta["slots"],
            "vector_norms": {str(k): v for k, v in vectors.norms().items()},
            "sweep": rows,
            "best_layer": best,
            "effect_at_best": S.effect(rows, best),
            "effect_t_at_best": S.effect_t(rows, best),
            "monotonic_at_best": S.is_monotonic(rows, best),
            "per_slot": per_slot,
            "comparison": {"residual_layer": resid_best, "state_layer": best, "rows": comparison},
            "zero_vector": zero_vector_check(model, enc_test, vectors, best, args.max_new_tokens),
            "generations": gens,
        }
        c = S.curve(rows, best)
        print(f"{name} ({model.card.family}): state steering, best layer {best}: "
              + " ".join(f"{m:+g}:{p:.3f}" for m, p in c) + f" (paired t {S.effect_t(rows, best):.1f})"
              + f"; residual best layer {resid_best} effect {S.effect(resid_rows, resid_best):+.3f}")  # fmt: skip
    result["wall_s"] = round(time.perf_counter() - start, 2)
    result["cpu_s"] = round(time.process_time() - cpu, 2)
    return result


def plot(results: dict[str, Any], path: str) -> None:
    """Per model: state steering per layer (left), residual vs state vs both at the best layers (right)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = results["models"]
    fig, axes = plt.subplots(len(models), 2, figsize=(10, 3.6 * len(models)), squeeze=False)
    for (ax_state, ax_cmp), (name, res) in zip(axes, models.items(), strict=True):
        title = f"{caa.short(name)} ({res['family']})"
        if res["state"] is None:
            for layer in res["layers"]:
                pts = sorted(
                    (r["multiplier"], r["p_matching"]) for r in res["residual"]["sweep"] if r["layer"] == layer
                )
                ax_cmp.plot(*zip(*pts, strict=True), "o-", ms=3, label=f"residual, layer {layer}")
            ax_state.text(0.5, 0.5, "no recurrent state", ha="center", va="center", transform=ax_state.transAxes)
            ax_state.set_title(f"{title}: state steering", fontsize=9)
            ax_state.set(xticks=[], yticks=[])
            ax_cmp.set_title(f"{title}: residual steering", fontsize=9)
        else:
            st = res["state"]
            for layer in res["layers"]:
                pts = sorted((r["multiplier"], r["p_matching"]) for r in st["sweep"] if r["layer"] == layer)
                ax_state.plot(*zip(*pts, strict=True), "o-", ms=3, lw=2.2 if layer == st["best_layer"] else 1.0,
                              label=f"layer {layer} (all slots)")  # fmt: skip
            for slot, data in st["per_slot"].items():
                pts = sorted(
                    (r["multiplier"], r["p_matching"]) for r in data["sweep"] if r["layer"] == st["best_layer"]
                )
                ax_state.plot(*zip(*pts, strict=True), "--", lw=1, label=f"layer {st['best_layer']} {slot} only")
            ax_state.set_title(f"{title}: state steering", fontsize=9)
            rows = st["comparison"]["rows"]
            xs = [r["multiplier"] for r in rows]
            cmp = st["comparison"]
            for key, label, style in (
                ("p_residual", f"residual (layer {cmp['residual_layer']})", "o-"),
                ("p_state", f"state (layer {cmp['state_layer']})", "s-"),
                ("p_both", "both", "^-"),
                ("p_additive", "additive prediction", "k:"),
            ):
                ax_cmp.plot(xs, [r[key] for r in rows], style, ms=3, label=label)
            ax_cmp.set_title(f"{title}: residual vs state vs both", fontsize=9)
        for ax in (ax_state, ax_cmp):
            if res["state"] is not None or ax is ax_cmp:
                ax.set(xlabel="multiplier", ylabel="p(matching)", ylim=(0, 1))
                ax.grid(alpha=0.3)
                ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# Decorator, not torch.set_grad_enabled(False): main() is also called in-process (tests, notebooks),
# and a bare global switch left autograd off for everything run after it.
@torch.no_grad()
def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    caa.add_common_args(parser, "out/state_steering")
    args = parser.parse_args(argv)
    train, test, data = caa.load_data(args)
    os.makedirs(args.out, exist_ok=True)
    results: dict[str, Any] = {"recipe": "state_steering", "data": data,
                               "multipliers": caa.parse_floats(args.multipliers), "models": {}}  # fmt: skip
    for name in args.model:
        results["models"][name] = run_model(name, args, train, test)
    with open(os.path.join(args.out, "state_steering.json"), "w") as f:
        json.dump(results, f, indent=1)
    plot(results, os.path.join(args.out, "state_steering.png"))
    print(f"wrote {args.out}/state_steering.json and {args.out}/state_steering.png")
    return 0


if __name__ == "__main__":
    from nnsight_rnn.command_line import run_reporting_errors

    sys.exit(run_reporting_errors(main, prog="state_steering.py"))
