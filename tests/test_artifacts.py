"""Saved artifacts (here: carried states) round-trip and refuse the wrong model or a corrupt file."""

from __future__ import annotations

import pytest
import torch

import nnsight_rnn
from nnsight_rnn.artifacts import ArtifactMismatchError
from nnsight_rnn.state import load_state, save_state

from .families import mamba, mamba2


def test_state_round_trip_and_refusals(tmp_path):
    model = nnsight_rnn.load(mamba())
    ids = torch.randint(0, 257, (1, 6))
    state = model.run_state(ids)
    save_state(state, str(tmp_path / "st"), model)
    loaded = load_state(str(tmp_path / "st"), model)
    for a, b in zip(state.layers, loaded.layers, strict=True):
        assert a.keys() == b.keys()
        for k in a:
            torch.testing.assert_close(a[k], b[k], atol=0, rtol=0)
    with torch.no_grad(), model.trace(ids[:, :2], state=loaded):
        model.output.save()

    with pytest.raises(ArtifactMismatchError, match="different architecture"):
        load_state(str(tmp_path / "st"), nnsight_rnn.load(mamba2()))
    other = nnsight_rnn.load(mamba())  # same architecture, other random weights
    with pytest.raises(ArtifactMismatchError, match="allow_other_weights=True"):
        load_state(str(tmp_path / "st"), other)
    assert load_state(str(tmp_path / "st"), other, allow_other_weights=True).family == "mamba"

    path = tmp_path / "st" / "tensors.safetensors"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ArtifactMismatchError, match="checksum"):
        load_state(str(tmp_path / "st"), model)


def test_artifact_json_is_integrity_checked(tmp_path):
    import json

    model = nnsight_rnn.load(mamba())
    state = model.run_state(torch.randint(0, 257, (1, 6)))
    folder = tmp_path / "st"
    save_state(state, str(folder), model)
    record_path = folder / "artifact.json"
    record = json.loads(record_path.read_text())

    record["meta"]["layers"] = 99  # an edited meta: was an IndexError deep in load_state
    record_path.write_text(json.dumps(record))
    with pytest.raises(ArtifactMismatchError, match="was edited after it was saved"):
        load_state(str(folder), model)

    record_path.write_text(json.dumps(record)[:40])  # truncated: was a raw JSONDecodeError
    with pytest.raises(ArtifactMismatchError, match="truncated, corrupt or from a newer nnsight-rnn"):
        load_state(str(folder), model)

    # Format 1 (no record checksum, as saved before) still loads: nothing a user saved is lost.
    record["meta"]["layers"] = len(state.layers)
    del record["record_sha256"]
    record["format_version"] = 1
    record_path.write_text(json.dumps(record))
    assert len(load_state(str(folder), model).layers) == len(state.layers)
