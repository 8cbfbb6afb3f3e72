"""The state lens (nnsight_rnn.integrations.state_lens): features, meaning of "state after t", training, save/load.

Tiny random models (tests/families.py), fp32. "State after t was written" is checked exactly against
the carried-out state of a run on the prefix ``ids[:, :t+1]`` (atol 1e-5: the prefix and the full run
use the same scan, chunked differently for Mamba-2).
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

pytest.importorskip("tuned_lens", reason="optional extra: pip install 'nnsight-rnn[tuned-lens]'")

import nnsight_rnn
from nnsight_rnn.integrations import tuned_lens as tl_rnn
from nnsight_rnn.integrations.state_lens import (
    StateLens,
    capture_state_features,
    evaluate_state_lens,
    train_state_lens,
)
from nnsight_rnn.mixers import mixer_class

from ..families import FAMILIES


def _has_lens(family: str) -> bool:
    card = nnsight_rnn.get_card(family)
    fmt = mixer_class(card.mixer_kind).state_format if card.is_recurrent else None
    return fmt is not None and fmt.lens is not None


WITH_STATE_LENS = [f for f in FAMILIES if _has_lens(f)]


@pytest.fixture(autouse=True)
def enabled() -> Any:
    tl_rnn.enable()
    yield
    tl_rnn.disable()


@pytest.fixture(params=WITH_STATE_LENS)
def family(request: pytest.FixtureRequest) -> str:
    return request.param


def test_families_covered() -> None:
    assert {"mamba", "mamba2", "rwkv4"} <= set(WITH_STATE_LENS)


def test_features_are_the_state_after_t(family: str) -> None:
    model = nnsight_rnn.install(FAMILIES[family]())
    ids = torch.randint(0, 257, (2, 9))
    full, logits = capture_state_features(model, ids)
    with torch.no_grad():
        assert torch.equal(logits, model(ids).logits)  # reading the states changes nothing
    for t in (0, 4, 8):
        prefix, _ = capture_state_features(model, ids[:, : t + 1])
        for layer in full:
            assert full[layer].shape[:2] == (2, 9)
            torch.testing.assert_close(full[layer][:, t], prefix[layer][:, -1], atol=1e-5, rtol=1e-5)


def test_train_save_load(family: str, tmp_path: Any) -> None:
    model = tl_rnn.enable(FAMILIES[family]())
    ids = torch.randint(0, 257, (8, 16))
    lens = StateLens.from_model(model, ids)
    before = evaluate_state_lens(lens, model, [ids[6:]])
    losses = train_state_lens(lens, model, list(ids[:6].split(3)), steps=30, progress=False)
    assert losses[-1] < losses[0]
    after = evaluate_state_lens(lens, model, [ids[:6]])
    assert all(a < b for a, b in zip(after["kl"], before["kl"], strict=True))
    lens.save(tmp_path)
    loaded = StateLens.load(tmp_path, model)
    feats, _ = capture_state_features(model, ids[:2])
    for i in range(len(lens)):
        assert torch.equal(loaded(feats[i], i), lens(feats[i], i))
    other = tl_rnn.enable(FAMILIES[family]())
    with pytest.raises(tl_rnn.LensMismatchError, match="unembedding"):
        StateLens.load(tmp_path, other)
    assert not list(tmp_path.glob("*.pt"))  # safetensors + JSON only: nothing a load would unpickle


def test_tampered_or_pickled_state_lens_is_refused(tmp_path: Any) -> None:
    from nnsight_rnn.errors import ArtifactMismatchError

    model = tl_rnn.enable(FAMILIES["mamba"]())
    StateLens.from_model(model, torch.randint(0, 257, (2, 8))).save(tmp_path)
    params = tmp_path / "params.safetensors"
    data = bytearray(params.read_bytes())
    data[-1] ^= 1
    params.write_bytes(bytes(data))
    with pytest.raises(ArtifactMismatchError, match="does not match the checksum"):
        StateLens.load(tmp_path, model)
    config = tmp_path / "config.json"
    config.write_text(config.read_text()[:20])  # truncated
    with pytest.raises(ArtifactMismatchError, match=r"unreadable or edited config\.json"):
        StateLens.load(tmp_path, model)
    params.rename(tmp_path / "params.pt")  # an old pickle-format lens
    with pytest.raises(ArtifactMismatchError, match="never unpickled"):
        StateLens.load(tmp_path, model)


def test_transformers_have_no_state_lens() -> None:
    with pytest.raises(ValueError, match=r"no state lens.*fixed-size state"):
        StateLens.from_model(FAMILIES["gpt2"]())
