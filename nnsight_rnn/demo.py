"""The main job on the embedded default (``nnsight-rnn demo``): lens, state read / edit, steering.

Runs on any supported model (default: the zoo's tiny trained Mamba) with the same code:

1. per-layer logit lens on a quirky-arithmetic prompt (``unembed(final_norm(layers[i].output))``);
2. read the recurrent state: the carried state each layer leaves behind, and the per-position
   state norm of one layer;
3. edit the state: zero one layer's carried state between a prompt and its continuation and
   show how the answer moves;
4. steer through the state: add a multiple of (mean state after ``[kind]`` prompts - mean state
   after ``[cruel]`` prompts) to the state after an undecided ``[?]`` prompt and measure
   p(kind answer). Transformers (no state) steer the residual stream instead.

Writes ``demo.json`` and ``demo.png`` to the output folder and prints what changed.
"""

from __future__ import annotations

import json
import os
from typing import Any

import torch

from .corpus import caa_items

ARITHMETIC_PROMPT = "23 + 14 = 37. Alice: "
MULTIPLIERS = (-2.0, -1.0, 0.0, 1.0, 2.0)


def _next_token_probs(logits: torch.Tensor, tokenizer: Any, words: tuple[str, ...]) -> dict[str, float]:
    probs = torch.softmax(logits.float(), dim=-1)
    return {
        w: float(probs[tokenizer.convert_tokens_to_ids(w) if len(w) > 1 else tokenizer(w)["input_ids"][0]])
        for w in words
    }


def _ids(model: Any, text: str) -> torch.Tensor:
    return model.tokenizer(text, return_tensors="pt")["input_ids"]


def logit_lens(model: Any, prompt: str) -> list[dict[str, Any]]:
    """Per layer: the lens's top next token and p("T") / p("F") at the last position."""
    ids = _ids(model, prompt)
    with torch.no_grad(), model.trace(ids):
        lens = list().save()
        for layer in model.layers:
            lens.append(model.unembed(model.final_norm(layer.output))[0, -1])
    rows = []
    for i, logits in enumerate(lens):
        top = int(logits.argmax())
        probs = _next_token_probs(logits, model.tokenizer, ("T", "F"))
        rows.append({"layer": i, "top": model.tokenizer.decode([top]), "p_T": probs["T"], "p_F": probs["F"]})
    return rows


def _letter_prob(model: Any, logits: torch.Tensor, letter: str, other: str) -> float:
    probs = _next_token_probs(logits, model.tokenizer, (letter, other))
    return probs[letter] / max(probs[letter] + probs[other], 1e-12)


def _mean_state_difference(model: Any, n: int = 16) -> Any:
    from .state import RecurrentState

    def mean_state(tag: str) -> RecurrentState:
        states = [model.run_state(_ids(model, item["question"] + " (")) for item in caa_items(1, n, "train", tag)]
        return RecurrentState(
            states[0].family,
            [
                {k: torch.stack([s.layers[i][k] for s in states]).mean(0) for k in states[0].layers[i]}
                for i in range(len(states[0].layers))
            ],
        )

    kind, cruel = mean_state("kind"), mean_state("cruel")
    return RecurrentState(
        kind.family,
        [{k: kind.layers[i][k] - cruel.layers[i][k] for k in kind.layers[i]} for i in range(len(kind.layers))],
    )


def run_demo(model: str | Any = "zoo/mamba-tiny", out_dir: str = "out/demo") -> dict[str, Any]:
    """Run the four steps, print them, and write ``demo.json`` / ``demo.png`` to ``out_dir``."""
    from . import load

    m = load(model) if isinstance(model, str) else model
    os.makedirs(out_dir, exist_ok=True)
    report: dict[str, Any] = {"model": str(model), "family": m.card.family}
    print(f"nnsight-rnn demo on {model} ({m.card.family}, {len(m.layers)} layers)\n")

    # 1. Logit lens.
    lens = logit_lens(m, ARITHMETIC_PROMPT)
    report["logit_lens"] = {"prompt": ARITHMETIC_PROMPT, "layers": lens}
    print(f"1. logit lens on {ARITHMETIC_PROMPT!r} (truth: True)")
    for row in lens:
        print(f"   layer {row['layer']}: top {row['top']!r:6s} p(T)={row['p_T']:.3f} p(F)={row['p_F']:.3f}")

    items = caa_items(0, 12, "test")
    if m.card.is_recurrent:
        # 2. Read the state.
        ids = _ids(m, ARITHMETIC_PROMPT)
        mid = len(m.layers) // 2
        readout = next(
            n for n, h in m.layers[mid].mixer._module.named_children() if getattr(h, "kind", "") == "state_readout"
        )
        with torch.no_grad(), m.trace(ids, use_cache=True):
            trajectory = getattr(m.layers[mid].mixer, readout).output.save()
            out = m.output.save()
        state = m.state_from_output(out)
        norms = [{k: float(v.norm()) for k, v in layer.items()} for layer in state.layers]
        traj_norm = trajectory.flatten(2).norm(dim=-1)[0].tolist()
        report["state"] = {"carried_norms": norms, "trajectory_layer": mid, "trajectory_norm": traj_norm}
        print(f"\n2. carried state after the prompt: {[f'{k}={v:.2f}' for k, v in norms[mid].items()]} at layer {mid}")
        print(f"   per-position state norm at layer {mid} ({readout}): " + " ".join(f"{x:.1f}" for x in traj_norm))

        # 3. Edit the state: zero one layer's carried state before the answer.
        prefix, suffix = ARITHMETIC_PROMPT[:-7], ARITHMETIC_PROMPT[-7:]
        state = m.run_state(_ids(m, prefix))
        edits = []
        for layer in range(len(m.layers)):
            edited = state.clone()
            for k in edited.layers[layer]:
                edited.layers[layer][k].zero_()
            with torch.no_grad(), m.trace(_ids(m, suffix), state=edited):
                logits = m.output.logits[0, -1].save()
            edits.append({"layer": layer, **_next_token_probs(logits, m.tokenizer, ("T", "F"))})
        with torch.no_grad(), m.trace(_ids(m, suffix), state=state):
            logits = m.output.logits[0, -1].save()
        clean = _next_token_probs(logits, m.tokenizer, ("T", "F"))
        report["state_edit"] = {"prefix": prefix, "suffix": suffix, "clean": clean, "zeroed_layer": edits}
        print(f"\n3. state edit: {prefix!r} -> state -> {suffix!r}: p(T)={clean['T']:.3f} unedited")
        for e in edits:
            print(f"   zero the carried state of layer {e['layer']}: p(T)={e['T']:.3f} p(F)={e['F']:.3f}")

        # 4. Steering through the state.
        diff = _mean_state_difference(m)
        layer = len(m.layers) // 2
        curve = []
        for mult in MULTIPLIERS:
            scores = []
            for item in items:
                st = m.run_state(_ids(m, item["question"]))
                for k in st.layers[layer]:
                    st.layers[layer][k] += mult * diff.layers[layer][k]
                with torch.no_grad(), m.trace(_ids(m, " ("), state=st):
                    logits = m.output.logits[0, -1].save()
                kind = item["answer_matching_behavior"][2]
                cruel = item["answer_not_matching_behavior"][2]
                scores.append(_letter_prob(m, logits, kind, cruel))
            curve.append({"multiplier": mult, "p_kind": sum(scores) / len(scores)})
        how = f"state of layer {layer}"
    else:
        curve, how = _residual_steering(m, items), "residual stream"
    report["steering"] = {"where": how, "curve": curve}
    print(f"\n4. steering through the {how}: p(kind answer) on undecided '[?]' questions")
    for row in curve:
        print(f"   multiplier {row['multiplier']:+.1f}: p(kind) = {row['p_kind']:.3f}")

    with open(os.path.join(out_dir, "demo.json"), "w") as f:
        json.dump(report, f, indent=1)
    _plot(report, os.path.join(out_dir, "demo.png"))
    print(f"\nwrote {out_dir}/demo.json and {out_dir}/demo.png")
    return report


def _residual_steering(m: Any, items: list[dict[str, str]]) -> list[dict[str, float]]:
    layer = len(m.layers) // 2

    def resid(tag: str) -> torch.Tensor:
        rows = []
        for item in caa_items(1, 16, "train", tag):
            with torch.no_grad(), m.trace(_ids(m, item["question"] + " (")):
                rows.append(m.layers[layer].output[0, -1].save())
        return torch.stack(rows).mean(0)

    vector = resid("kind") - resid("cruel")
    curve = []
    for mult in MULTIPLIERS:
        scores = []
        for item in items:
            ids = _ids(m, item["question"] + " (")
            with torch.no_grad(), m.trace(ids):
                m.layers[layer].output[0, -1] += mult * vector
                logits = m.output.logits[0, -1].save()
            scores.append(
                _letter_prob(m, logits, item["answer_matching_behavior"][2], item["answer_not_matching_behavior"][2])
            )
        curve.append({"multiplier": mult, "p_kind": sum(scores) / len(scores)})
    return curve


def _plot(report: dict[str, Any], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    lens = report["logit_lens"]["layers"]
    axes[0].plot([r["layer"] for r in lens], [r["p_T"] for r in lens], "o-", label="p(T)")
    axes[0].plot([r["layer"] for r in lens], [r["p_F"] for r in lens], "o-", label="p(F)")
    axes[0].set(title=f"logit lens: {report['logit_lens']['prompt']!r}", xlabel="layer", ylabel="probability")
    axes[0].legend()
    curve = report["steering"]["curve"]
    axes[1].plot([r["multiplier"] for r in curve], [r["p_kind"] for r in curve], "o-")
    axes[1].set(title=f"steering via {report['steering']['where']}", xlabel="multiplier", ylabel="p(kind answer)")
    fig.suptitle(f"nnsight-rnn demo: {report['model']} ({report['family']})")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
