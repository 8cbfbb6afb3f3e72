"""The tiny model zoo: deterministic training, the fused Mamba training scan, save / cache / load, quality.

Fast tests train micro models for a few steps. The full-zoo quality test (``-m slow``) builds every
registered model into the cache (``$NNSIGHT_RNN_HOME`` or ``~/.cache/nnsight_rnn``; several CPU
minutes the first time) and checks the documented quality thresholds on held-out data.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

import nnsight_rnn
from nnsight_rnn import zoo
from nnsight_rnn.scans.selective_scan import selective_scan

MICRO_LLAMA = zoo.ZooSpec(
    name="test-micro-llama",
    family="llama",
    config_class="LlamaConfig",
    config=dict(
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
        intermediate_size=32,
        max_position_embeddings=64,
        tie_word_embeddings=True,
    ),
    steps=6,
    batch_size=4,
    seq_len=32,
    lr=1e-2,
    warmup=2,
    answer_weight=5.0,
    description="micro test model",
)
MICRO_MAMBA = zoo.ZooSpec(
    name="test-micro-mamba",
    family="mamba",
    config_class="MambaConfig",
    config=dict(hidden_size=16, state_size=4, num_hidden_layers=1, intermediate_size=32, time_step_rank=2),
    steps=8,
    batch_size=4,
    seq_len=32,
    lr=1e-2,
    warmup=2,
    hookable=True,
    description="micro test model",
)


@pytest.fixture
def micro_zoo(tmp_path, monkeypatch) -> Iterator[str]:
    """Micro specs registered under ``zoo/test-micro-*`` and a fresh cache in ``tmp_path``."""
    monkeypatch.setenv(zoo.HOME_ENV, str(tmp_path))
    for spec in (MICRO_LLAMA, MICRO_MAMBA):
        zoo.register(spec)
    yield str(tmp_path)
    for spec in (MICRO_LLAMA, MICRO_MAMBA):
        zoo._REGISTRY.pop(spec.name, None)


# -- training ----------------------------------------------------------------------------------


@pytest.mark.parametrize("spec", [MICRO_LLAMA, MICRO_MAMBA], ids=lambda s: s.family)
def test_training_is_deterministic(spec: zoo.ZooSpec) -> None:
    first = zoo.train(spec, progress=False)
    again = zoo.train(spec, progress=False)
    other = zoo.train(spec, seed=1, progress=False)
    assert len(first.losses) == spec.steps
    assert abs(first.final_loss - again.final_loss) <= 1e-4  # bitwise equal in practice
    assert first.losses == again.losses
    for p, q in zip(first.model.parameters(), again.model.parameters(), strict=True):
        assert torch.equal(p, q)
    assert abs(first.final_loss - other.final_loss) > 1e-4
    assert first.losses[-1] < first.losses[0]  # it learns something even in a few steps


def test_training_batches_are_packed_at_document_boundaries() -> None:
    ids, labels, weights = zoo.training_batches(MICRO_LLAMA, 3, seed=0)
    assert ids.shape == labels.shape == weights.shape == (3, 4, 32)
    again = zoo.training_batches(MICRO_LLAMA, 3, seed=0)
    assert all(torch.equal(x, y) for x, y in zip((ids, labels, weights), again, strict=True))
    assert torch.all((labels == -100) == (weights == 0))
    assert torch.all(labels[labels != -100] == ids[labels != -100])
    assert (weights == MICRO_LLAMA.answer_weight).any()
    decisions = ids[weights == MICRO_LLAMA.answer_weight]
    assert set(decisions.tolist()) <= {ord(c) for c in "TFAB"}


def test_fused_training_scan_matches_autograd_through_the_reference_scan() -> None:
    torch.manual_seed(0)
    b, length, d, n = 3, 11, 6, 4
    inputs = [
        torch.randn(b, length, d),
        torch.rand(b, length, d) * 0.5,
        -torch.rand(d, n) - 0.3,
        torch.randn(b, length, n),
        torch.randn(b, length, n),
        torch.randn(b, d, n),
    ]
    results = []
    for fn in (lambda *x: selective_scan(*x)[:2], zoo.fused_selective_scan):
        xs = [x.clone().requires_grad_() for x in inputs]
        y, h = fn(*xs)
        (y.sin().sum() + (h * h).sum()).backward()
        results.append([y.detach(), h.detach()] + [x.grad for x in xs])
    for ref, got in zip(*results, strict=True):
        torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)  # observed max 4e-7 relative


# -- building, caching, loading -------------------------------------------------------------------


def test_build_save_and_load(micro_zoo: str) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    name = "zoo/test-micro-llama"
    assert name in zoo.available()
    folder = zoo.zoo_path(name, progress=False)
    assert folder == str(zoo.zoo_dir(name)) and folder.startswith(micro_zoo)
    files = {p.name for p in zoo.zoo_dir(name).iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "zoo.json"} <= files
    info = json.loads((zoo.zoo_dir(name) / "zoo.json").read_text())
    assert info["seed"] == 0 and info["steps"] == MICRO_LLAMA.steps
    assert info["corpus_version"] == zoo.corpus_version()
    assert set(info["metrics"]) >= {"loss", "unigram_loss", "alice_acc", "bob_rule_acc", "copy_acc", "disposition_acc"}

    # cached: no rebuild (same zoo.json), and the real loading code works offline
    stamp = (zoo.zoo_dir(name) / "model.safetensors").stat().st_mtime_ns
    assert zoo.zoo_path(name) == folder
    assert (zoo.zoo_dir(name) / "model.safetensors").stat().st_mtime_ns == stamp
    tok = AutoTokenizer.from_pretrained(folder)
    assert tok("7 + 5")["input_ids"] == [55, 32, 43, 32, 53]
    hf = AutoModelForCausalLM.from_pretrained(folder)
    start = time.perf_counter()
    model = nnsight_rnn.load(name)
    assert time.perf_counter() - start < 1.0
    ids = torch.tensor([tok("3 + 4 = 7. Alice:")["input_ids"]])
    with model.trace(ids):
        logits = model.output.logits.save()
    torch.testing.assert_close(logits, hf(ids).logits, rtol=0, atol=1e-5)


def test_hookable_mamba_zoo_model_loads_as_stock_hf(micro_zoo: str) -> None:
    from transformers import MambaForCausalLM

    folder = zoo.zoo_path("zoo/test-micro-mamba", progress=False)
    stock = MambaForCausalLM.from_pretrained(folder)  # saved from the hookable model: same state dict
    model = nnsight_rnn.load("zoo/test-micro-mamba")
    ids = torch.tensor([[49, 50, 32, 43, 32, 53]])
    with model.trace(ids):
        logits = model.output.logits.save()
    torch.testing.assert_close(logits, stock(ids).logits, rtol=0, atol=1e-5)


def test_stale_cache_is_rebuilt(micro_zoo: str, capsys) -> None:
    name = "zoo/test-micro-llama"
    zoo.zoo_path(name, progress=False)
    assert "for the first time" in capsys.readouterr().err
    assert zoo.cached_info(name) is not None
    zoo.register(dataclasses.replace(MICRO_LLAMA, steps=MICRO_LLAMA.steps + 1))
    assert zoo.cached_info(name) is None
    with pytest.raises(FileNotFoundError, match="not built yet"):
        zoo.zoo_path(name, build=False)
    zoo.build_zoo([name], progress=False)
    assert "rebuilding" in capsys.readouterr().err
    assert zoo.cached_info(name)["steps"] == MICRO_LLAMA.steps + 1


def test_parallel_build_in_worker_processes_gives_the_same_weights(micro_zoo: str) -> None:
    from safetensors.torch import load_file

    names = ["zoo/test-micro-llama", "zoo/test-micro-mamba"]
    folders = zoo.build_zoo(names, progress=False, jobs=2)  # workers get the (custom) specs as JSON
    assert set(folders) == set(names)
    for name, spec in zip(names, (MICRO_LLAMA, MICRO_MAMBA), strict=True):
        info = zoo.cached_info(name)
        assert info is not None
        local = zoo.train(spec, progress=False)
        assert abs(info["final_train_loss"] - local.final_loss) <= 1e-4
        saved = load_file(f"{folders[name]}/model.safetensors")
        for key, value in saved.items():
            assert torch.equal(value, local.model.state_dict()[key]), key


def test_unknown_zoo_name_lists_the_available_ones() -> None:
    with pytest.raises(zoo.UnknownZooModelError, match=r"zoo/mamba-tiny") as err:
        nnsight_rnn.load("zoo/mamba-tinyy")
    assert "Did you mean ['zoo/mamba-tiny'" in str(err.value)
    assert "zoo/gpt2-tiny" in str(err.value)


def test_registry_has_every_family() -> None:
    families = {zoo.get_spec(n).family for n in zoo.available()}
    assert {"mamba", "mamba2", "rwkv4", "gpt2", "llama"} <= families
    for name in zoo.available():
        spec = zoo.get_spec(name)
        config = spec.make_config()
        assert config.vocab_size == 257 and config.eos_token_id == 256


# -- quality (builds the whole zoo: slow) --------------------------------------------------------


# Documented quality on held-out data (see zoo.QUALITY): every model must clear these.
@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(zoo.QUALITY))
def test_zoo_model_quality(name: str) -> None:
    from transformers import AutoModelForCausalLM

    folder = zoo.zoo_path(name)  # the shipped copy, or one built here
    info = json.loads((Path(folder) / "zoo.json").read_text())
    metrics = zoo.evaluate(AutoModelForCausalLM.from_pretrained(folder))
    assert metrics == pytest.approx(info["metrics"], abs=1e-3)  # the saved model is the evaluated one
    for key, threshold in zoo.QUALITY[name].items():
        if key == "loss_ratio":
            assert metrics["loss"] <= threshold * metrics["unigram_loss"], metrics
        else:
            assert metrics[key] >= threshold, (key, metrics)
    start = time.perf_counter()
    nnsight_rnn.load(name)
    assert time.perf_counter() - start < 1.0
