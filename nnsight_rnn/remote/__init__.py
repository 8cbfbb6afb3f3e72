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

The module is split by side: :mod:`.keys` (model keys), :mod:`.remotable` (the client mixin,
imported by ``nnsight_rnn.model``), :mod:`.server` (rebuild, check, :class:`LocalServer`),
:mod:`.deploy` (NDIF configs), :mod:`.cli`. Names are re-exported here on first use, so that
importing the mixin does not import the server (which imports ``nnsight_rnn.model``).
"""

from __future__ import annotations

import importlib
from typing import Any

from ..errors import RemoteKeyError

_EXPORTS = {
    "keys": ("KEY_CLASS", "DEFAULT_TASK", "source_kind", "key_data", "split_key"),
    "remotable": ("RemotableHookedModel", "ENV_KEY", "hook_settings", "apply_hook_settings", "prepare_client"),
    "server": ("model_key", "rebuild", "module_tree", "check_key", "LocalServer", "LocalServerBackend", "_decompress"),
    "deploy": ("weights_bytes", "deploy_config"),
    "cli": ("main",),
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}

__all__ = ["RemoteKeyError", *(name for name in _WHERE if not name.startswith("_"))]


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'nnsight_rnn.remote' has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
