"""Model keys: the name a server rebuilds an nnsight-rnn model from (no hub for folders and zoo models)."""

from __future__ import annotations

import json
import os
from typing import Any

from ..errors import RemoteKeyError
from ..sources import kind_of

KEY_CLASS = "nnsight_rnn.model.HookedLanguageModel"
"""Import path at the front of every nnsight-rnn model key (what the server imports)."""

DEFAULT_TASK = "text-generation"


# ---------------------------------------------------------------------------------------------
# model keys
# ---------------------------------------------------------------------------------------------


def source_kind(source: Any) -> str:
    """``"zoo"`` (``zoo/<name>``), ``"folder"`` (an existing directory), ``"pth"``, ``"hub"`` (anything else), ``"memory"``.

    The shape-only classification of :func:`nnsight_rnn.sources.kind_of` (a key may name a folder
    that exists only on the server). ``"memory"`` is a model without a checkpoint to name: an HF
    module built from a config (``config._name_or_path`` empty).
    """
    if not isinstance(source, str) or not source:
        return "memory"
    return kind_of(source) or "hub"  # a file that is no checkpoint: nnsight's hub key, as before


def key_data(source: str, family: str, *, revision: str | None = None, task: str | None = None) -> dict[str, Any]:
    """The JSON half of a model key for a local folder or a zoo model (no hub call).

    ``repo_id`` is the zoo name as written (``"zoo/mamba-tiny"``) or the folder's absolute path
    (the server needs the same folder at the same path); ``card`` is the nnsight-rnn family the
    server builds the hooked tree with. Keys are compared as strings by NDIF: the field order is fixed.
    """
    kind = source_kind(source)
    if kind == "memory":
        raise RemoteKeyError(_MEMORY_HINT)
    if kind == "pth":
        raise RemoteKeyError(
            f"{source!r} is a BlinkDL .pth checkpoint, which a server cannot rebuild from a key: load it, "
            "save it with model._module.save_pretrained(folder) and load that folder"
        )
    if kind == "hub":
        raise RemoteKeyError(f"{source!r} is neither a local folder nor a zoo name; hub ids get nnsight's hub key")
    if kind == "folder" and not os.path.exists(os.path.join(source, "config.json")):
        raise RemoteKeyError(
            f"{source!r} has no config.json: it is not a transformers checkpoint (an original-format folder "
            "converted while loading?), so a server cannot rebuild it from a key. Save the loaded model with "
            "model._module.save_pretrained(folder) and its tokenizer with tokenizer.save_pretrained(folder), "
            "then load that folder."
        )
    repo_id = source if kind == "zoo" else os.path.abspath(source)
    return {"repo_id": repo_id, "revision": revision, "task": task or DEFAULT_TASK, "card": family}


_MEMORY_HINT = (
    "this model was built in memory (no folder, zoo name or hub id), so a server cannot rebuild it "
    "from a model key. Save it and load it from the folder: model.save_pretrained(folder); "
    "nnsight_rnn.tokenizer.byte_tokenizer().save_pretrained(folder) (or your tokenizer); "
    "model = nnsight_rnn.load(folder). (remote='local' needs no key and works on it as it is.)"
)


def split_key(key: str) -> tuple[str, dict[str, Any]]:
    """``(class import path, JSON data)`` of a model key."""
    path, _, suffix = key.partition(":")
    try:
        data = json.loads(suffix)
    except ValueError:
        raise RemoteKeyError(f"not an nnsight model key (expected 'import.path.Class:{{json}}'): {key!r}") from None
    return path, data


def _local_key(model_key: str) -> bool:
    """Whether a key suffix names a folder or a zoo model (answered without the hub).

    An absolute path counts even where it does not exist (a key minted on another machine).
    """
    repo_id = json.loads(model_key).get("repo_id")
    return source_kind(repo_id) in ("folder", "zoo") or (isinstance(repo_id, str) and os.path.isabs(repo_id))
