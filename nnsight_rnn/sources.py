"""Where a model comes from: the one resolver behind ``nnsight_rnn.load`` and the command lines.

:func:`resolve` sorts what a user passes into one :class:`Source` kind, or raises
:class:`SourceError`, a one-line message that names the input and the fix (never the hub's
55-line "couldn't connect" traceback for a typo):

========  ===================================================  ==========================================
kind      what                                                 examples
========  ===================================================  ==========================================
module    an ``nn.Module`` (an HF model instance)              ``MambaForCausalLM(config)``
zoo       a tiny model the package ships or builds             ``"zoo/mamba-tiny"``
pth       a BlinkDL RWKV-5/6/7 checkpoint (tensors only)        ``"RWKV-x070-World-0.1B.pth"``
folder    a ``save_pretrained`` folder, or an original          ``"out/my-mamba"``
          checkpoint folder :mod:`nnsight_rnn.checkpoints`
          detects (mamba-ssm)
hub       a hub repo id (needs network, or the local hub       ``"state-spaces/mamba-130m-hf"``
          cache with ``HF_HUB_OFFLINE=1``)
========  ===================================================  ==========================================
"""

from __future__ import annotations

import difflib
import os
import re
from dataclasses import dataclass
from typing import Any, Literal

from torch import nn

from .errors import SourceError

SourceKind = Literal["module", "zoo", "pth", "folder", "hub"]
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")  # "name" or "owner/name"


@dataclass(frozen=True)
class Source:
    kind: SourceKind
    value: Any  # the module, the zoo name, the path (``~`` expanded) or the repo id
    checkpoint_format: Any = None  # a ``folder`` in an original format: its CheckpointFormat (else None)


def _zoo_names() -> list[str]:
    from . import zoo

    return list(zoo.available())


def _hint() -> str:
    return f"zoo models (shipped, offline): {', '.join(_zoo_names())}"


def kind_of(source: Any) -> SourceKind | None:
    """The kind ``source`` has by its shape alone: no validation, no error, no hub call.

    ``None`` for what can be no source (not a module, path or string). :func:`resolve` validates on
    top of this; model keys (:mod:`nnsight_rnn.remote.keys`) use it bare, because a key may name a
    folder on another machine.
    """
    if isinstance(source, nn.Module):
        return "module"
    if isinstance(source, os.PathLike):
        source = os.fspath(source)
    if not isinstance(source, str) or not source.strip():
        return None
    from . import zoo

    if zoo.is_zoo_name(source):
        return "zoo"
    path = os.path.expanduser(source)
    if os.path.isfile(path):
        return "pth" if path.endswith(".pth") else None
    if os.path.isdir(path):
        return "folder"
    return "hub"


def resolve(source: Any) -> Source:
    """Classify ``source`` (see the module docstring); raise :class:`SourceError` if it can be nothing."""
    if isinstance(source, os.PathLike):
        source = os.fspath(source)
    kind = kind_of(source)
    if kind == "module":
        return Source("module", source)
    if not isinstance(source, str):
        raise SourceError(
            f"cannot load a model from {type(source).__name__} {source!r}: pass an HF model instance, a folder, "
            f"a BlinkDL .pth file, a zoo name or a hub repo id ({_hint()})"
        )
    if not source.strip():
        raise SourceError(f"the model name is empty; {_hint()}")
    if kind == "zoo":
        from . import zoo

        zoo.get_spec(source)  # UnknownZooModelError (a SourceError) with the near names
        return Source("zoo", source)
    path = os.path.expanduser(source)
    if kind == "pth":
        return Source("pth", path)
    if kind is None:  # a file that is not a checkpoint
        raise SourceError(
            f"{source!r} is a file, not a model: pass the folder that holds it (config.json + weights), "
            f"or a BlinkDL RWKV .pth checkpoint"
        )
    if kind == "folder":
        return _folder(source, path)
    if f"zoo/{source}" in _zoo_names():
        raise SourceError(f"no folder named {source!r}; did you mean the zoo model 'zoo/{source}'?")
    looks_like_path = source.startswith((".", "/", "~")) or source.endswith(".pth") or source.count("/") > 1
    if looks_like_path or not _HUB_ID.match(source):
        close = difflib.get_close_matches(source, _zoo_names(), n=1)
        suggestion = f"; did you mean {close[0]!r}?" if close else f"; {_hint()}"
        raise SourceError(f"no file or folder named {source!r}{suggestion}")
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False"):
        close = difflib.get_close_matches(f"zoo/{source}", _zoo_names(), n=1, cutoff=0.8)
        hint = f"did you mean {close[0]!r}? " if close else ""
        if not _in_hub_cache(source):
            raise _offline_error(source, hint)
    return Source("hub", source)


def _folder(source: str, path: str) -> Source:
    from .checkpoints import detect_format

    fmt = detect_format(path)
    if fmt is not None or os.path.exists(os.path.join(path, "config.json")):
        return Source("folder", path, fmt)
    raise SourceError(
        f"folder {source!r} holds no model: no config.json (write one with model.save_pretrained(folder)) and no "
        f"original checkpoint nnsight-rnn recognises (see docs/checkpoints.md)"
    )


def _in_hub_cache(repo_id: str) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache

        return isinstance(try_to_load_from_cache(repo_id, "config.json"), str)
    except Exception:
        return False


def _offline_error(source: str, hint: str) -> SourceError:
    return SourceError(
        f"{source!r} is not a local folder and not in the local hub cache, and downloads are off "
        f"(HF_HUB_OFFLINE=1). {hint}Pass a folder, a .pth file or a zoo model ({_hint()})"
    )


def hub_error(source: str, error: BaseException) -> SourceError:
    """The error for a hub id that could not be fetched (no network, no such repo), in one line."""
    first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return SourceError(
        f"could not load {source!r} from the hub ({first[:160]}). It is not a local folder; for an offline "
        f"model pass a folder, a .pth file or a zoo model ({_hint()})"
    )
