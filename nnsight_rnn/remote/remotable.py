"""The model-key mixin of :class:`~nnsight_rnn.model.HookedLanguageModel` and the client-side settings.

It never imports :mod:`nnsight_rnn.model` (it works through ``cls``), so ``model.py`` can import it.
"""

from __future__ import annotations

import json
import math
from typing import Any

from ..errors import RemoteKeyError
from .keys import _MEMORY_HINT, _local_key, key_data, source_kind


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
