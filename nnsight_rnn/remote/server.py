"""The server side: keys minted from a source, rebuilding a model from a key, and the in-process server."""

from __future__ import annotations

import io
import json
import linecache
import sys
import threading
import traceback
from typing import Any

import torch

from ..errors import RemoteKeyError
from .keys import DEFAULT_TASK, KEY_CLASS, key_data, source_kind
from .remotable import prepare_client


def model_key(source: str, *, card: str | None = None, revision: str | None = None, task: str | None = None) -> str:
    """The model key for ``source`` (a folder, ``zoo/<name>`` or a hub id) without loading weights.

    A zoo name's key needs neither the trained folder nor the hub (the family comes from the
    zoo registry); a folder's reads its ``config.json``; a hub id builds the meta model and asks
    the hub (network) like nnsight does.
    """
    kind = source_kind(source)
    if kind == "zoo" and card is None:
        from ..zoo import get_spec

        card = get_spec(source).family
    if kind in ("zoo", "folder", "pth"):
        if card is None:
            from transformers import AutoConfig

            from ..cards import card_for

            card = card_for(AutoConfig.from_pretrained(source)).family
        data = key_data(source, card, revision=revision, task=task)
        return f"{KEY_CLASS}:{json.dumps(data)}"
    from ..model import HookedLanguageModel

    return HookedLanguageModel(source, card=card, revision=revision, task=task or DEFAULT_TASK).to_model_key()


# ---------------------------------------------------------------------------------------------
# rebuilding and comparing trees
# ---------------------------------------------------------------------------------------------


def rebuild(key: str, **kwargs: Any) -> Any:
    """The model a server builds from ``key``: ``Remotable.from_model_key(key, **kwargs)``.

    ``kwargs`` are the loader arguments (an ndif 0.1.2 actor passes ``dispatch=True,
    dtype="bfloat16", device=<gpu>``; its sandbox runner passes none and gets the meta tree).
    """
    from nnsight.modeling.mixins.remotable import Remotable

    return Remotable.from_model_key(key, **kwargs)


def module_tree(model: Any) -> list[tuple[str, str]]:
    """``(envoy path, module class name)`` for every module of an nnsight model, in tree order.

    Two models whose trees are equal resolve each other's ``Module:<path>`` persistent ids to
    modules of the same kind, which is what a remote request needs.
    """
    return [(envoy.path, type(envoy._module).__name__) for envoy in model.modules()]


def check_key(key: str, **load_kwargs: Any) -> dict[str, Any]:
    """Rebuild ``key`` twice, as a server does, and check that both trees are the hooked tree.

    Builds the sandbox runner's meta model (no weights) and the actor's dispatched model
    (``dispatch=True`` plus ``load_kwargs``), compares their module trees and persistent-object
    ids, and checks that the card's hook points are there. Returns a summary; raises
    :class:`RemoteKeyError` naming the first difference.
    """
    meta = rebuild(key)
    real = rebuild(key, dispatch=True, **load_kwargs)
    tree_meta, tree_real = module_tree(meta), module_tree(real)
    if tree_meta != tree_real:
        first = next((a, b) for a, b in zip(tree_meta, tree_real, strict=False) if a != b)
        raise RemoteKeyError(f"meta and dispatched trees differ at {first} ({len(tree_meta)} vs {len(tree_real)})")
    ids_meta = set(meta._remoteable_persistent_objects())
    ids_real = set(real._remoteable_persistent_objects())
    if ids_meta != ids_real:
        raise RemoteKeyError(f"persistent ids differ: {sorted(ids_meta ^ ids_real)[:5]}")
    hooks = real.hook_points()
    if real.card.is_recurrent and not hooks:
        raise RemoteKeyError(f"the rebuilt {real.card.family} model has no hook points: its mixers were not swapped")
    if real.to_model_key() != key:
        raise RemoteKeyError(f"the rebuilt model names itself differently: {real.to_model_key()} != {key}")
    return {
        "key": key,
        "family": real.card.family,
        "modules": len(tree_real),
        "hook_points": len(hooks),
        "parameters": sum(p.nelement() for p in real._module.parameters()),
        "dtype": str(next(real._module.parameters()).dtype),
    }


# ---------------------------------------------------------------------------------------------
# an in-process NDIF model actor
# ---------------------------------------------------------------------------------------------


class LocalServer:
    """An in-process stand-in for an NDIF (ndif 0.1.2) model actor, for tests and dry runs.

    ``server.backend(model)`` is an nnsight backend: ``model.trace(..., backend=server.backend(model))``
    (and ``model.generate(...)``) then serialises the request exactly as ``remote=True`` does,
    and the server half rebuilds the model **from its key** (once per key, like a deployment),
    applies the request env, deserialises the tracer against the rebuilt model's persistent
    objects with the client's non-installed modules hidden, runs the block on a worker thread
    (``inc`` / ``execute`` / collect ``save()``-marked values / ``dec``, as ndif's
    ``execute_traced_block``), and ``torch.save``\\ s the saves. The client ``torch.load``\\ s
    them and pushes them into the caller's frame, as ``RemoteBackend`` does. A failure comes
    back as ``nnsight.intervention.backends.remote.RemoteError`` with the cleaned traceback
    (ndif's ``format_error``).

    Attributes:
        load_kwargs: loader arguments for rebuilding (default ``dispatch=True``).
        models: rebuilt models by key.
        requests: one dict per request: ``key``, ``payload_bytes`` (as sent), ``raw_payload_bytes``
            (before compression), ``result_bytes``, ``ok``.
    """

    def __init__(self, **load_kwargs: Any) -> None:
        self.load_kwargs: dict[str, Any] = {"dispatch": True, **load_kwargs}
        self.models: dict[str, Any] = {}
        self.requests: list[dict[str, Any]] = []

    def model(self, key: str) -> Any:
        """The server's model for ``key`` (rebuilt on first use)."""
        if key not in self.models:
            model = rebuild(key, **self.load_kwargs)
            model._module.requires_grad_(False)
            self.models[key] = model
        return self.models[key]

    def backend(self, model: Any, *, compress: bool | None = None) -> LocalServerBackend:
        """A backend that sends ``model``'s traces here (its key is minted now: it must have one).

        ``compress`` defaults to nnsight's ``CONFIG.API.COMPRESS`` (zstd, on by default), as ``remote=True``.
        """
        if compress is None:
            from nnsight.schema.config import CONFIG

            compress = bool(CONFIG.API.COMPRESS)
        return LocalServerBackend(self, model, compress=compress)

    def handle(self, key: str, env: dict[str, Any], blob: bytes, compress: bool) -> bytes:
        """Server half: run one serialised request on a worker thread; return the ``torch.save`` bytes of its saves.

        Raises ``RemoteError`` with the server-side traceback (nnsight's frames removed) on failure.
        """
        from nnsight.intervention.backends.remote import RemoteError

        box: dict[str, Any] = {}

        def work() -> None:
            try:
                box["result"] = self._execute(key, env, blob, compress)
            except _ServerError as error:
                box["error"] = str(error)
            except BaseException as error:  # failed before the block ran (rebuild, env)
                box["error"] = _format_error(error)

        worker = threading.Thread(target=work, name="nnsight-rnn-local-server")
        worker.start()
        worker.join()
        if "error" in box:
            raise RemoteError(box["error"])
        return box["result"]

    def _execute(self, key: str, env: dict[str, Any], blob: bytes, compress: bool) -> bytes:
        from nnsight.schema.request import RequestModel
        from nnsight.tracing.globals import BLOCKS, SOURCES
        from nnsight.tracing.tracer import _saves, dec, inc

        model = self.model(key)
        model._remoteable_set_env(env)
        snapshot = (dict(linecache.cache), dict(SOURCES), dict(BLOCKS))
        try:
            hidden = _hide_client_modules()
            try:
                tracer = RequestModel.deserialize(blob, model._remoteable_persistent_objects(), compress=compress)
            finally:
                _restore_modules(hidden)
            inc()
            try:
                tracer.execute(tracer.info.code)
                saves = _saves()
                saved = {name: value for name, value in tracer.info.frame.f_locals.items() if id(value) in saves}
            finally:
                dec()
        except Exception as error:  # formatted while the block's source is still registered, as ndif does
            raise _ServerError(_format_error(error)) from None
        finally:  # ndif's block_scope: the request's source registrations do not outlive it
            for cache, old in zip((linecache.cache, SOURCES, BLOCKS), snapshot, strict=True):
                cache.clear()
                cache.update(old)
        buffer = io.BytesIO()
        torch.save(saved, buffer)
        return buffer.getvalue()


class _ServerError(Exception):
    """A request that failed on the (local) server; carries the formatted traceback."""


class LocalServerBackend:
    """Client half of :class:`LocalServer`: serialise like ``RemoteBackend``, hand over, load and push the saves."""

    def __init__(self, server: LocalServer, model: Any, *, compress: bool = False) -> None:
        self.server = server
        self.model = model
        self.model_key = model.to_model_key()
        self.compress = compress

    def __call__(self, tracer: Any) -> dict[str, Any]:
        from nnsight.schema.request import RequestModel
        from nnsight.tracing.tracer import save
        from nnsight.tracing.util import push

        prepare_client()
        blob = RequestModel.serialize(tracer, self.compress)
        raw = len(_decompress(blob)) if self.compress else len(blob)
        record: dict[str, Any] = {
            "key": self.model_key,
            "payload_bytes": len(blob),
            "raw_payload_bytes": raw,
            "result_bytes": None,
            "ok": False,
        }
        self.server.requests.append(record)
        env = self.model._remoteable_get_env()  # at run time, like the env of a request sent now
        data = self.server.handle(self.model_key, env, blob, self.compress)
        record.update(result_bytes=len(data), ok=True)
        result = torch.load(io.BytesIO(data), map_location="cpu", weights_only=False)
        for value in result.values():
            save(value)
        if tracer is not None and tracer.info is not None and tracer.info.frame is not None:
            push(tracer.info.frame, result)
        return result


def _decompress(blob: bytes) -> bytes:
    import zstandard

    return zstandard.ZstdDecompressor().decompress(blob)


def _format_error(error: BaseException) -> str:
    """ndif's ``format_error``: the traceback without nnsight's frames, then the message."""
    from nnsight.tracing.util import clean_traceback

    tb = clean_traceback(error.__traceback__)
    return "".join(traceback.format_exception(type(error), error, tb))


_SERVER_ROOTS = {"torch", "numpy", "transformers", "accelerate", "einops", "safetensors", "tokenizers"}


def _hide_client_modules() -> dict[str, Any]:
    """Hide modules a server would not have (the client's own files), as nnsight's ``remote="local"`` does.

    Kept: the standard library, site-packages, nnsight and nnsight_rnn (installed on the server).
    """
    hidden: dict[str, Any] = {"modules": {}, "paths": []}
    for path in list(sys.path):
        if "site-packages" in path or "lib/python" in path or not path:
            continue
        hidden["paths"].append(path)
        sys.path.remove(path)
    for name in list(sys.modules):
        root = name.split(".")[0]
        if root in _SERVER_ROOTS or root in sys.stdlib_module_names or root.startswith("nnsight") or root == "__main__":
            continue
        module = sys.modules[name]
        where = getattr(module, "__file__", None) or ""
        if not where or "site-packages" in where or "lib/python" in where:
            continue
        hidden["modules"][name] = sys.modules.pop(name)
    return hidden


def _restore_modules(hidden: dict[str, Any]) -> None:
    sys.modules.update(hidden["modules"])
    sys.path.extend(p for p in hidden["paths"] if p not in sys.path)
