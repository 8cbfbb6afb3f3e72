"""Saving what users compute (states, steering vectors, probes) so it is never loaded wrong.

An artifact is a folder with ``tensors.safetensors`` (no pickle) and ``artifact.json``: its kind,
free metadata, the checksum of the tensors file, and the fingerprint of the model it was made on
(``architecture``: family + the config values that fix shapes; ``weights``: a hash of the
parameters), and a checksum of the JSON itself. Loading checks both checksums (corruption, edits),
the architecture (always) and
the weights (unless ``allow_other_weights=True``, e.g. to carry a vector to a fine-tune), and
names what differs.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from typing import Any

import torch

from .errors import ArtifactMismatchError

FORMAT_VERSION = 2  # 2: artifact.json carries its own checksum (record_sha256); 1 still loads
_SHAPE_KEYS = (
    "model_type", "vocab_size", "hidden_size", "num_hidden_layers", "intermediate_size", "state_size",
    "num_heads", "head_dim", "n_groups", "conv_kernel", "time_step_rank", "attention_hidden_size",
    "num_attention_heads", "num_key_value_heads", "n_embd", "n_layer", "n_head",
)  # fmt: skip


def _module(model: Any) -> torch.nn.Module:
    return getattr(model, "_module", model)


def architecture_fingerprint(model: Any) -> dict[str, Any]:
    """Family and the config values that fix tensor shapes."""
    module = _module(model)
    config = module.config.to_dict()
    arch = {k: config[k] for k in _SHAPE_KEYS if k in config}
    arch["family"] = (
        getattr(model, "card", None).family
        if hasattr(model, "card")
        else getattr(module, "nnsight_rnn_card", config.get("model_type"))
    )
    return arch


def weights_fingerprint(model: Any) -> str:
    """sha256 over parameter names, shapes and values (fp32 bytes); ~0.1 s per 100M parameters."""
    digest = hashlib.sha256()
    for name, param in sorted(_module(model).state_dict().items()):
        digest.update(name.encode())
        digest.update(str(tuple(param.shape)).encode())
        digest.update(param.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return digest.hexdigest()


def _record_sha256(record: dict[str, Any]) -> str:
    """sha256 of the record without its own checksum (canonical JSON)."""
    body = {k: v for k, v in record.items() if k != "record_sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def _file_sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass
class Artifact:
    kind: str
    tensors: dict[str, torch.Tensor]
    meta: dict[str, Any]


def save_artifact(
    path: str, kind: str, tensors: dict[str, torch.Tensor], model: Any, meta: dict[str, Any] | None = None
) -> None:
    """Write ``tensors`` and ``meta`` for ``model`` to the folder ``path``."""
    from safetensors.torch import save_file

    os.makedirs(path, exist_ok=True)
    tensor_path = os.path.join(path, "tensors.safetensors")
    save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, tensor_path)
    record = {
        "format_version": FORMAT_VERSION,
        "kind": kind,
        "meta": meta or {},
        "tensors_sha256": _file_sha256(tensor_path),
        "model": {"architecture": architecture_fingerprint(model), "weights_sha256": weights_fingerprint(model)},
    }
    record["record_sha256"] = _record_sha256(record)
    with open(os.path.join(path, "artifact.json"), "w") as f:
        json.dump(record, f, indent=1, sort_keys=True)


def load_artifact(path: str, model: Any, kind: str, *, allow_other_weights: bool = False) -> Artifact:
    """Read an artifact made by :func:`save_artifact`, refusing one that does not fit ``model``."""
    from safetensors.torch import load_file

    json_path = os.path.join(path, "artifact.json")
    tensor_path = os.path.join(path, "tensors.safetensors")
    for p in (json_path, tensor_path):
        if not os.path.exists(p):
            raise FileNotFoundError(f"{path} is not an nnsight-rnn artifact: {os.path.basename(p)} is missing")
    try:
        with open(json_path) as f:
            record = json.load(f)
        if not isinstance(record, dict) or record.get("format_version", 1) > FORMAT_VERSION:
            raise ValueError(f"format {record.get('format_version') if isinstance(record, dict) else '?'}")
        if "record_sha256" in record and record["record_sha256"] != _record_sha256(record):
            raise ArtifactMismatchError(
                f"{json_path} was edited after it was saved (its checksum does not match): save the artifact again"
            )
        record["model"]["architecture"], record["model"]["weights_sha256"], record["tensors_sha256"]
    except (ValueError, KeyError, TypeError) as error:
        if isinstance(error, ArtifactMismatchError):
            raise
        raise ArtifactMismatchError(
            f"{json_path} is truncated, corrupt or from a newer nnsight-rnn ({type(error).__name__}: {error}); "
            "save the artifact again"
        ) from None
    if record.get("kind") != kind:
        raise ArtifactMismatchError(f"{path} holds a {record.get('kind')!r}, not a {kind!r}")
    if _file_sha256(tensor_path) != record["tensors_sha256"]:
        raise ArtifactMismatchError(
            f"{tensor_path} does not match the checksum in artifact.json: the file changed or is corrupt"
        )
    saved_arch, arch = record["model"]["architecture"], architecture_fingerprint(model)
    if saved_arch != arch:
        diff = {
            k: (saved_arch.get(k), arch.get(k)) for k in set(saved_arch) | set(arch) if saved_arch.get(k) != arch.get(k)
        }
        raise ArtifactMismatchError(
            f"{path} was made on a different architecture; (saved, this model) differ in {diff}. "
            "Load it onto the model it was made on."
        )
    if not allow_other_weights and record["model"]["weights_sha256"] != weights_fingerprint(model):
        raise ArtifactMismatchError(
            f"{path} was made on a model with the same architecture but other weights; pass "
            "allow_other_weights=True if that is intended (e.g. a fine-tune of the same base)."
        )
    return Artifact(kind, load_file(tensor_path), record["meta"])
