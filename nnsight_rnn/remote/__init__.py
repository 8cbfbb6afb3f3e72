"""Remote traces (NDIF): model keys that rebuild the hooked model, and an in-process server.

nnsight runs ``model.trace(..., remote=True)`` on an NDIF server without shipping the model:
the request names it by a **model key** ``"nnsight_rnn.model.HookedLanguageModel:{json}"``
and the server rebuilds it with ``Remotable.from_model_key(key, dispatch=True, dtype=...,
device=... | device_map=..., max_memory=...)``. What travels is the traced block (source text)
and a pickled tracer whose envoys reference the server's modules by path
(``Module:model.layers.1.mixer.hook_ssm_state``), so the server-built module tree must equal
the client's, hook points included. This module makes that true for every card:

- :class:`RemotableHookedModel` (a mixin of :class:`~nnsight_rnn.model.HookedLanguageModel`)
  mints keys **without the hub** for local folders (absolute path) and zoo models
  (``zoo/<name>``), adds the card family, and rebuilds from a key through the class itself, so
  the rebuilt model gets the same mixer swap, patches and hook points. Hub repo ids keep
  nnsight's own key (the hub canonicalises the id; that call needs network).
  Sizing (``describe_checkpoint`` / ``estimate_bytes``) is answered locally for folders and
  zoo models; ``max_tp_size`` is ``None`` (never tensor-parallel: the hookable mixers
  assume whole weights).
- :func:`prepare_client` keeps ``nnsight_rnn`` itself out of the payload: nnsight ships every
  module it finds outside site-packages *by value* (an editable install, a source checkout),
  which would copy the library's source into each request (~130 KB) and give the server a
  second copy of every class. The server has ``nnsight_rnn`` installed, so it goes by
  reference.
- Hook-point settings that live on the client's modules (``positions`` / ``force``, set by
  :func:`nnsight_rnn.capture.capture_states`) travel in the request ``env``; the server resets
  every hook point and applies them before each request (``_remoteable_set_env``).
- :class:`LocalServer` is an in-process stand-in for an ndif 0.1.2 model actor
  (``BaseModelDeployment.load_from_disk`` / ``execute`` / ``format_error``): it rebuilds the
  model from the request's key (a *separate* model object, as on a server), deserialises the
  request against that model's persistent objects with the client's own modules hidden, runs
  the block on a worker thread, returns the saves as ``torch.save`` bytes, and turns a failure
  into nnsight's ``RemoteError`` carrying the cleaned traceback. nnsight's own
  ``remote="local"`` runs the serialise/deserialise half but executes on the *client's* model;
  this adds the key round-trip and the server-side execution.

Command line (the commands docs/remote.md uses)::

    python -m nnsight_rnn.remote key zoo/mamba-tiny           # print the model key
    python -m nnsight_rnn.remote check zoo/mamba-tiny         # rebuild from the key, compare trees
    python -m nnsight_rnn.remote deploy-config zoo/mamba-tiny # YAML for `ndif deploy -f`
"""

from __future__ import annotations

import argparse
import io
import json
import linecache
import math
import os
import sys
import threading
import traceback
from collections.abc import Sequence
from typing import Any

import torch

from ..errors import RemoteKeyError

KEY_CLASS = "nnsight_rnn.model.HookedLanguageModel"
"""Import path at the front of every nnsight-rnn model key (what the server imports)."""

DEFAULT_TASK = "text-generation"


# ---------------------------------------------------------------------------------------------
# model keys
# ---------------------------------------------------------------------------------------------


def _is_zoo(name: Any) -> bool:
    from ..zoo import is_zoo_name

    return isinstance(name, str) and is_zoo_name(name) and not os.path.exists(name)


def source_kind(source: Any) -> str:
    """``"zoo"`` (``zoo/<name>``), ``"folder"`` (an existing directory), ``"hub"`` (anything else), ``"memory"``.

    ``"memory"`` is a model without a checkpoint to name: an HF module built from a config
    (``config._name_or_path`` empty).
    """
    if not isinstance(source, str) or not source:
        return "memory"
    if _is_zoo(source):
        return "zoo"
    if os.path.isdir(source):
        return "folder"
    return "hub"


def key_data(source: str, family: str, *, revision: str | None = None, task: str | None = None) -> dict[str, Any]:
    """The JSON half of a model key for a local folder or a zoo model (no hub call).

    ``repo_id`` is the zoo name as written (``"zoo/mamba-tiny"``) or the folder's absolute path
    (the server needs the same folder at the same path); ``card`` is the nnsight-rnn family the
    server builds the hooked tree with. Keys are compared as strings by NDIF: the field order is fixed.
    """
    kind = source_kind(source)
    if kind == "memory":
        raise RemoteKeyError(_MEMORY_HINT)
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
    if kind in ("zoo", "folder"):
        if card is None:
            from transformers import AutoConfig

            from ..cards import card_for

            card = card_for(AutoConfig.from_pretrained(source)).family
        data = key_data(source, card, revision=revision, task=task)
        return f"{KEY_CLASS}:{json.dumps(data)}"
    from ..model import HookedLanguageModel

    return HookedLanguageModel(source, card=card, revision=revision, task=task or DEFAULT_TASK).to_model_key()


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


class RemotableHookedModel:
    """Model-key behaviour of :class:`~nnsight_rnn.model.HookedLanguageModel` (mixed in before nnsight's class).

    Overrides nnsight's ``Remotable`` hooks: ``_remoteable_model_key`` /
    ``_remoteable_from_model_key`` (key round-trip), ``_remoteable_describe_checkpoint`` /
    ``_remoteable_estimate_bytes`` / ``_remoteable_max_tp_size`` (what a server asks before
    placing a model) and ``_remote_backend`` (keeps ``nnsight_rnn`` out of the payload).
    """

    card: Any
    model_source: Any
    repo_id: Any
    revision: Any
    task: Any

    def _remoteable_model_key(self) -> str:
        source = getattr(self, "model_source", None) or self.repo_id
        kind = source_kind(source)
        if kind == "memory":
            raise RemoteKeyError(_MEMORY_HINT)
        if kind == "hub":
            data = json.loads(super()._remoteable_model_key())  # type: ignore[misc]
            data["card"] = self.card.family
            return json.dumps(data)
        from transformers.pipelines import TASK_ALIASES

        task = TASK_ALIASES.get(self.task, self.task)
        return json.dumps(key_data(source, self.card.family, revision=self.revision, task=task))

    @classmethod
    def _remoteable_from_model_key(cls, model_key: str, **kwargs: Any) -> Any:
        """Rebuild from a key with the loader arguments a server passes.

        NDIF passes ``dispatch``, ``dtype`` (a name: ``"bfloat16"``), ``device`` or
        ``device_map`` + ``max_memory``, ``trust_remote_code``; older servers ``torch_dtype``.
        """
        data = {**json.loads(model_key), **kwargs}
        repo_id = data.pop("repo_id")
        revision = data.pop("revision", None)
        card = data.pop("card", None)
        if "torch_dtype" in data:  # transformers 5 calls it dtype
            dtype = data.pop("torch_dtype")
            data.setdefault("dtype", dtype)
        if isinstance(data.get("dtype"), str) and data["dtype"].startswith("torch."):
            data["dtype"] = data["dtype"][len("torch.") :]
        return cls(repo_id, revision=revision, card=card, **data)

    @classmethod
    def _remoteable_describe_checkpoint(cls, model_key: str, dtype: str) -> Any:
        """Folders and zoo models are sized by building the hooked model on meta (no hub, no weights)."""
        if not _local_key(model_key):
            return super()._remoteable_describe_checkpoint(model_key, dtype)  # type: ignore[misc]
        from nnsight.modeling.mixins.remotable import CheckpointInfo, bytes_per_element
        from nnsight.util import to_import_path

        data = json.loads(model_key)
        model = cls.from_model_key(f"{to_import_path(cls)}:{model_key}", dispatch=False)  # type: ignore[attr-defined]
        module = model._module
        n_params = sum(p.nelement() for p in module.parameters())
        elements = n_params + sum(b.nelement() for b in module.buffers())
        return CheckpointInfo(
            size_bytes=math.ceil(elements * bytes_per_element(dtype)),
            n_params=n_params,
            config=module.config,
            revision=data.get("revision"),
        )

    @classmethod
    def _remoteable_estimate_bytes(cls, model_key: str, dtype: str) -> int:
        return cls._remoteable_describe_checkpoint(model_key, dtype).size_bytes

    @classmethod
    def _remoteable_max_tp_size(cls, model_key: str) -> int | None:
        """``None``: never place tensor-parallel (the hookable mixers and scans assume whole weights)."""
        return None

    def _remote_backend(self, remote: bool | str, blocking: bool, job_id: str | None, verbose: bool) -> Any:
        prepare_client()
        return super()._remote_backend(remote, blocking, job_id, verbose)  # type: ignore[misc]

    def _remoteable_get_env(self) -> dict[str, Any]:
        """nnsight's per-request env plus this model's hook-point settings (``positions``, ``force``).

        Hook settings are attributes of the client's modules (``capture_states`` sets
        ``positions``); the server's modules are other objects, so they travel in the request
        env, which NDIF applies to its model before every request (``_remoteable_set_env``).
        """
        env = dict(super()._remoteable_get_env())  # type: ignore[misc]
        settings = hook_settings(self)
        if settings:
            env[ENV_KEY] = {"hooks": settings}
        return env

    def _remoteable_set_env(self, env: dict[str, Any] | None) -> None:
        """Server side: apply nnsight's env, then reset every hook point and apply the request's settings."""
        env = dict(env or {})
        ours = env.pop(ENV_KEY, None) or {}
        super()._remoteable_set_env(env)  # type: ignore[misc]
        apply_hook_settings(self, ours.get("hooks", {}))


ENV_KEY = "nnsight_rnn"
"""Key of nnsight-rnn's part of a remote request's ``env``."""


def hook_settings(model: Any) -> dict[str, dict[str, Any]]:
    """Non-default hook-point settings by standard hook name: ``{"layers.1.mixer.hook_ssm_state": {"positions": [3]}}``."""
    settings: dict[str, dict[str, Any]] = {}
    for name, hook in model.hook_points().items():
        entry: dict[str, Any] = {}
        if hook.positions is not None:
            entry["positions"] = [int(p) for p in hook.positions]
        if hook.force:
            entry["force"] = True
        if entry:
            settings[name] = entry
    return settings


def apply_hook_settings(model: Any, settings: dict[str, dict[str, Any]]) -> None:
    """Reset every hook point to its defaults (all positions, not forced), then apply ``settings``.

    Unknown hook names raise :class:`RemoteKeyError` (the client's tree differs from this one).
    """
    points = model.hook_points()
    unknown = sorted(set(settings) - set(points))
    if unknown:
        raise RemoteKeyError(
            f"the request sets hook points this model does not have: {unknown[:3]}; client and server run "
            "different nnsight-rnn versions or cards"
        )
    for name, hook in points.items():
        entry = settings.get(name, {})
        positions = entry.get("positions")
        hook.positions = None if positions is None else [int(p) for p in positions]
        hook.force = bool(entry.get("force", False))


def prepare_client() -> None:
    """Run nnsight's local-module scan, then make sure ``nnsight_rnn`` is pickled by reference.

    nnsight registers every importable module that is not in site-packages for pickling by
    value (so a user's own helper files reach the server). An editable install or a source
    checkout of nnsight-rnn is such a module, and shipping it by value puts the library's
    source into every request. The server has the same nnsight-rnn installed (it needs it to
    build the model), so references are right. Idempotent and cheap after the first call.
    """
    from cloudpickle.cloudpickle import _PICKLE_BY_VALUE_MODULES
    from nnsight.ndif import pull_env

    pull_env()
    _PICKLE_BY_VALUE_MODULES.discard(__name__.split(".")[0])


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


# ---------------------------------------------------------------------------------------------
# command line
# ---------------------------------------------------------------------------------------------


def weights_bytes(source: str, dtype: str = "float32") -> int:
    """Bytes of the parameters and buffers of a folder's or zoo model's architecture held as ``dtype``.

    Built on the meta device from the config (a zoo model's from its registry entry, so it
    need not be trained yet): no weights are read.
    """
    from nnsight.modeling.mixins.remotable import bytes_per_element
    from transformers import AutoConfig, AutoModelForCausalLM

    if source_kind(source) == "zoo":
        from ..zoo import get_spec

        config = get_spec(source).make_config()
    else:
        config = AutoConfig.from_pretrained(source)
    with torch.device("meta"):
        module = AutoModelForCausalLM.from_config(config)
    elements = sum(p.nelement() for p in module.parameters()) + sum(b.nelement() for b in module.buffers())
    return math.ceil(elements * bytes_per_element(dtype))


def deploy_config(sources: Sequence[str], *, dtype: str = "float32") -> str:
    """YAML for ``ndif deploy -f FILE``: one entry per model, with its key and size spelled out.

    ``size_bytes`` is there because ndif 0.1.2's placement calls
    ``Remotable.describe_checkpoint(key, dtype, trust_remote_code=...)``, an argument nnsight
    0.8.1 does not take: with the size given, ndif places the model anyway.
    """
    lines = ["models:"]
    for source in sources:
        key = model_key(source)
        _, data = split_key(key)
        lines += [
            f"  - checkpoint: {data['repo_id']}",
            f"    envoy_class: {KEY_CLASS}",
            f"    task: {data.get('task') or DEFAULT_TASK}",
            f"    dtype: {dtype}",
            f"    size_bytes: {weights_bytes(source, dtype)}",
            "    max_tp: 0",
            "    model_key: '{}'".format(key.replace("'", "''")),
        ]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m nnsight_rnn.remote", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("key", help="print the model key of a folder, zoo/<name> or hub id")
    p.add_argument("source")
    p.add_argument("--card", default=None, help="card family (default: matched on the config)")
    p = sub.add_parser("check", help="rebuild a key (or a source's key) as a server does and compare the trees")
    p.add_argument("source", help="a model key, folder or zoo/<name>")
    p.add_argument("--dtype", default=None, help="dtype to dispatch with (e.g. bfloat16); default: the checkpoint's")
    p = sub.add_parser("deploy-config", help="YAML for `ndif deploy -f` with the key of each model")
    p.add_argument("sources", nargs="+")
    p.add_argument("--dtype", default="float32")
    args = parser.parse_args(argv)
    if args.cmd == "key":
        print(model_key(args.source, card=args.card))
    elif args.cmd == "check":
        key = args.source if ":" in args.source and "{" in args.source else model_key(args.source)
        kwargs = {"dtype": args.dtype} if args.dtype else {}
        print(json.dumps(check_key(key, **kwargs), indent=2))
    else:
        print(deploy_config(args.sources, dtype=args.dtype), end="")
    return 0
