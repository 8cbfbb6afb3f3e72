"""tuned-lens's own API and CLI on the zoo's trained Mamba, Mamba-2, RWKV-4 and transformer models.

Lenses are trained with tuned-lens's objects (``TunedLens.from_model``, ``lens(h, idx)``) and its default
objective (KL from the final output, SGD + Nesterov, lr 1.0 * (1 - 0.9), weight decay 1e-3) on
generated grammar text, then evaluated on held-out text (another seed). The claim tested is the
paper's: the tuned lens predicts the next token better than the logit lens at every layer.
The first run builds the zoo models (minutes, cached afterwards).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

pytest.importorskip("tuned_lens", reason="optional extra: pip install 'nnsight-rnn[tuned-lens]'")

from tuned_lens import TunedLens
from tuned_lens.nn.lenses import LogitLens
from tuned_lens.plotting import PredictionTrajectory

from nnsight_rnn.corpus import grammar_text
from nnsight_rnn.integrations import tuned_lens as tl_rnn
from nnsight_rnn.integrations.tuned_lens_cli import load_model, load_tokenizer

# Trains lenses on the zoo's trained models (built on first use: minutes of CPU): -m slow.
pytestmark = pytest.mark.slow

ZOO = ["zoo/mamba-tiny", "zoo/mamba2-tiny", "zoo/rwkv4-tiny", "zoo/gpt2-tiny", "zoo/llama-tiny"]
SEQ = 64
STEPS = 60


def _pack(tokenizer: Any, docs: list[str]) -> torch.Tensor:
    eos = tokenizer.eos_token_id
    stream = [eos]
    for doc in docs:
        stream += tokenizer(doc, add_special_tokens=False)["input_ids"] + [eos]
    n = len(stream) // SEQ
    return torch.tensor(stream[: n * SEQ]).view(n, SEQ)


@pytest.fixture(scope="module")
def data() -> dict[str, Any]:
    tok = load_tokenizer("zoo/mamba-tiny")
    return {"train": _pack(tok, grammar_text(0, 1200)), "eval": _pack(tok, grammar_text(1, 300))[:32]}


@pytest.fixture(scope="module", autouse=True)
def enabled() -> Any:
    tl_rnn.enable()
    yield
    tl_rnn.disable()


def _train(model: torch.nn.Module, ids: torch.Tensor) -> TunedLens:
    lens = TunedLens.from_model(model)
    opt = torch.optim.SGD(lens.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-3)
    for step in range(STEPS):
        batch = ids[(step * 8) % (len(ids) - 8) :][:8]
        with torch.no_grad():
            out = model(batch, output_hidden_states=True)
        target = out.logits.log_softmax(-1)
        for i, h in enumerate(out.hidden_states[:-1]):
            lp = lens(h, idx=i).log_softmax(-1)
            (target.exp() * (target - lp)).sum(-1).mean().backward()
        torch.nn.utils.clip_grad_norm_(lens.parameters(), 1.0)
        opt.step()
        opt.zero_grad()
    return lens.eval()


@torch.no_grad()
def _ce_per_layer(model: torch.nn.Module, lens: Any, ids: torch.Tensor) -> list[float]:
    out = model(ids, output_hidden_states=True)
    targets = ids[:, 1:]
    return [
        float(torch.nn.functional.cross_entropy(lens(h, idx=i)[:, :-1].flatten(0, 1), targets.flatten()))
        for i, h in enumerate(out.hidden_states[:-1])
    ]


@pytest.mark.parametrize("name", ZOO)
def test_tuned_lens_beats_logit_lens(name: str, data: dict[str, Any], tmp_path: Path) -> None:
    model = load_model(name, precision="float32")
    lens = _train(model, data["train"])
    lens.save(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "params.pt"]
    reloaded = TunedLens.from_model_and_pretrained(model, str(tmp_path))
    assert all(torch.equal(a, b) for a, b in zip(lens.parameters(), reloaded.parameters(), strict=True))

    tuned = _ce_per_layer(model, reloaded, data["eval"])
    logit = _ce_per_layer(model, LogitLens.from_model(model), data["eval"])
    print(name, "CE nats/token  logit:", [round(x, 3) for x in logit], " tuned:", [round(x, 3) for x in tuned])
    assert len(tuned) == model.config.num_hidden_layers
    assert all(t < g for t, g in zip(tuned, logit, strict=True)), (tuned, logit)

    ids = data["eval"][0, :20].tolist()
    traj = PredictionTrajectory.from_lens_and_model(reloaded, model, ids, targets=[*ids[1:], 0])
    assert traj.log_probs.shape == (model.config.num_hidden_layers + 1, 20, 257)
    ce = traj.cross_entropy().stats  # [layers + 1, positions]: tuned-lens's own statistic
    assert ce.shape == (model.config.num_hidden_layers + 1, 20)
    assert len(traj.cross_entropy().figure(title=name).data) == 1  # tuned-lens's plotly heatmap
    with torch.no_grad():
        model_lp = model(torch.tensor([ids])).logits.log_softmax(-1)[0, :-1]
    direct = -model_lp.gather(-1, torch.tensor(ids[1:])[:, None])[:, 0]
    assert torch.allclose(torch.from_numpy(ce[-1, :-1]).float(), direct, atol=1e-4)  # last row: the model itself


def test_lens_refuses_another_zoo_model(tmp_path: Path) -> None:
    mamba, mamba2 = load_model("zoo/mamba-tiny"), load_model("zoo/mamba2-tiny")
    TunedLens.from_model(mamba).save(tmp_path)
    with pytest.raises(tl_rnn.LensMismatchError, match="unembedding hash") as info:
        TunedLens.from_model_and_pretrained(mamba2, str(tmp_path))
    assert "mamba-tiny" in str(info.value) and "mamba2" in str(info.value)
    rwkv = load_model("zoo/rwkv4-tiny")
    with pytest.raises(tl_rnn.LensMismatchError):
        TunedLens.from_model_and_pretrained(rwkv, str(tmp_path))


@pytest.mark.slow
def test_tuned_lens_cli_trains_and_evaluates_on_zoo_mamba(tmp_path: Path) -> None:
    """`python -m nnsight_rnn.integrations.tuned_lens_cli train|eval` = tuned-lens's own CLI, shimmed."""
    from nnsight_rnn.zoo import zoo_path

    zoo_path("zoo/mamba-tiny")  # build (or find) it here, so that the CLI runs only load it
    jsonl = tmp_path / "text.jsonl"
    jsonl.write_text("".join(json.dumps({"text": t}) + "\n" for t in grammar_text(0, 1500)))
    common = ["--model.name", "zoo/mamba-tiny", "--data.name", str(jsonl), "--max_length", "64"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    cli = [sys.executable, "-m", "nnsight_rnn.integrations.tuned_lens_cli"]
    train = subprocess.run(
        [
            *cli,
            "train",
            *common,
            "--per_gpu_batch_size",
            "8",
            "--tokens_per_step",
            "512",
            "--num_steps",
            "60",
            "--output",
            str(tmp_path / "lens"),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert train.returncode == 0, (train.stdout[-2000:], train.stderr[-3000:])
    assert (tmp_path / "lens" / "params.pt").exists() and (tmp_path / "lens" / "config.json").exists()
    evaluate = subprocess.run(
        [
            *cli,
            "eval",
            *common,
            "--dist.per_gpu_batch_size",
            "8",
            "--lens_name",
            str(tmp_path / "lens"),
            "--lens_types",
            "logit",
            "tuned",
            "--tokens",
            "4096",
            "--output",
            str(tmp_path / "eval"),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert evaluate.returncode == 0, (evaluate.stdout[-2000:], evaluate.stderr[-3000:])
    metrics = json.loads((tmp_path / "eval" / "aggregate_metrics.json").read_text())
    layers = sorted(metrics["tuned"]["ce"])
    assert layers == ["layer_0", "layer_1"]
    for layer in layers:
        assert metrics["tuned"]["ce"][layer] < metrics["logit"]["ce"][layer]
        assert metrics["tuned"]["kl"][layer] < metrics["logit"]["kl"][layer]
