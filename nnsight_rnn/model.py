"""The nnsight model class: standard names on every card, hookable mixers, carried state.

``HookedLanguageModel`` subclasses nnsight's ``TransformersModel`` (task ``text-generation``),
so every nnsight idiom works unchanged. What it adds:

- the card's mixer swap and patches are applied to the module before nnsight builds its envoy
  tree (on the meta skeleton and again on dispatch, so both trees match);
- ``rename`` gives the standard names ``embed``, ``layers``, ``layers[i].mixer``,
  ``layers[i].mlp``, ``final_norm``, ``unembed`` on every architecture;
- ``trace(..., state=RecurrentState)`` starts from a carried state and
  :meth:`HookedLanguageModel.state_from_output` reads the one a run leaves behind;
- :meth:`hook` finds a hook point by standard name, with nearest-name suggestions.
"""

from __future__ import annotations

import difflib
import os
from typing import Any

import torch
from nnsight.intervention.envoy import traceable
from nnsight.modeling.transformers import TransformersModel

from .cards import Card, card_for, get_card
from .carry import state_from_output, state_to_forward_kwargs
from .envoys import SuggestingEnvoy
from .errors import UnknownHookError
from .hooks import HookPoint
from .remote.remotable import RemotableHookedModel
from .sources import hub_error, resolve
from .state import RecurrentState
from .surgery import install, name_hook_points, rename_map
from .tokenizer import find_tokenizer


class HookedLanguageModel(RemotableHookedModel, TransformersModel):
    """nnsight model over an HF causal LM, made hookable by its nnsight-rnn card.

    Remote-ready (see :mod:`nnsight_rnn.remote`): ``to_model_key()`` names a folder or zoo model
    without the hub, and ``from_model_key`` rebuilds the same hooked tree.

    Args:
        model: an HF model instance, a local folder, a zoo name (``"zoo/mamba-tiny"``), or a hub
            repo id (needs network).
        card: family name or :class:`Card`; default: matched on ``config.model_type``.
        tokenizer: a tokenizer; default: loaded from the folder / repo if it has one.
        **kwargs: passed to ``nnsight.modeling.transformers.TransformersModel``
            (``dispatch``, ``dtype``, ``device_map``, ``rename`` (merged over the standard names), ...).
    """

    def __init__(
        self, model: Any, *args: Any, card: Card | str | None = None, tokenizer: Any = None, **kwargs: Any
    ) -> None:
        self.model_source = model if isinstance(model, str) else None  # what the remote model key names
        if isinstance(model, str) and not os.path.exists(model):
            from .zoo import is_zoo_name, zoo_path

            if is_zoo_name(model):
                model = zoo_path(model)
        self.card = _card_of(model, card, kwargs)
        rename = {**rename_map(self.card), **(kwargs.pop("rename", None) or {})}
        if tokenizer is None:
            tokenizer = find_tokenizer(model)
        kwargs.setdefault("task", "text-generation")
        kwargs.setdefault("envoys", SuggestingEnvoy)  # misspelled names get the nearest ones
        super().__init__(model, *args, tokenizer=tokenizer, rename=rename, **kwargs)

    # -- module preparation (meta skeleton and real weights alike) --------------------------

    def _wrap(self, module: torch.nn.Module, *args: Any, **kwargs: Any) -> torch.nn.Module:
        install(module, self.card)
        return super()._wrap(module, *args, **kwargs)

    def _load(self, repo_id: str, *args: Any, **kwargs: Any) -> torch.nn.Module:
        return install(super()._load(repo_id, *args, **kwargs), self.card)

    def _load_meta(self, repo_id: str, *args: Any, **kwargs: Any) -> torch.nn.Module:
        return install(super()._load_meta(repo_id, *args, **kwargs), self.card)

    # -- running ------------------------------------------------------------------------------

    def _state_kwargs(self, state: RecurrentState, inputs: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        """Forward kwargs that start a run (or a generation) on ``inputs`` from ``state`` (validated, copied)."""
        return state_to_forward_kwargs(self._module, self.card, state, _batch_of(self, inputs, kwargs))

    def _call(self, *inputs: Any, state: RecurrentState | None = None, **kwargs: Any) -> Any:
        if state is not None:
            kwargs.update(self._state_kwargs(state, inputs, kwargs))
        return super()._call(*inputs, **kwargs)

    @traceable
    def generate(self, *inputs: Any, state: RecurrentState | None = None, **kwargs: Any) -> Any:
        """nnsight's ``generate``; with ``state=``, continue from a carried state.

        ``model.generate(suffix, state=state)`` generates what ``model.generate(prefix + suffix)``
        would, where ``state`` is the state ``prefix`` left (``model.run_state(prefix)``), edited or
        not: greedy tokens are identical when nothing is edited (tested on every recurrent card).
        The returned ids are ``suffix + new tokens``. Hooks fire on the suffix and every new token.
        """
        if state is not None:
            kwargs.update(self._state_kwargs(state, inputs, kwargs))
        # Named, not super(): nnsight recompiles this method's source on a remote server.
        return TransformersModel.generate(self, *inputs, **kwargs)

    def state_from_output(self, output: Any) -> RecurrentState:
        """The carried state a run left behind (run it with ``use_cache=True`` or ``state=``)."""
        return state_from_output(self._module, self.card, output)

    def run_state(self, inputs: Any, state: RecurrentState | None = None) -> RecurrentState:
        """Run ``inputs`` (text or token ids) without tracing and return the final carried state."""
        kwargs: dict[str, Any] = {"use_cache": True}
        with torch.no_grad():
            out = self._call(inputs, state=state, **kwargs)
        return self.state_from_output(out)

    # -- hook lookup --------------------------------------------------------------------------

    def hook_points(self) -> dict[str, HookPoint]:
        """Every hook point by standard name (``layers.3.mixer.hook_ssm_state``)."""
        return name_hook_points(self._module, self.card)

    def hook(self, name: str) -> Any:
        """The envoy of a hook point by standard name or card alias; suggests near names if unknown."""
        points = self.hook_points()
        resolved = _resolve_alias(self.card, name)
        if resolved not in points:
            near = difflib.get_close_matches(resolved, list(points), n=5, cutoff=0.5)
            hint = f" Nearest: {near}." if near else ""
            raise UnknownHookError(
                f"no hook point named {name!r} on this {self.card.family} model.{hint} "
                "List them with model.hook_points() or `nnsight-rnn info " + self.card.family + "`."
            )
        envoy: Any = self
        for part in resolved.split("."):
            envoy = envoy[int(part)] if part.isdigit() else getattr(envoy, part)
        return envoy


def _resolve_alias(card: Card, name: str) -> str:
    head, _, leaf = name.rpartition(".")
    if leaf in card.aliases:
        return f"{head}.{card.aliases[leaf]}" if head else card.aliases[leaf]
    return name


def _card_of(model: Any, card: Card | str | None, kwargs: dict[str, Any]) -> Card:
    if isinstance(card, Card):
        return card
    if isinstance(card, str):
        return get_card(card)
    if isinstance(model, torch.nn.Module):
        return card_for(model)
    if "config" in kwargs:
        return card_for(kwargs["config"])
    from transformers import AutoConfig

    return card_for(AutoConfig.from_pretrained(model, revision=kwargs.get("revision")))


def _batch_of(model: HookedLanguageModel, inputs: tuple[Any, ...], kwargs: dict[str, Any]) -> int | None:
    ids = kwargs.get("input_ids")
    if ids is None and inputs and isinstance(inputs[0], torch.Tensor):
        ids = inputs[0]
    if isinstance(ids, torch.Tensor):
        return ids.shape[0] if ids.dim() == 2 else 1
    if inputs and isinstance(inputs[0], str):
        return 1
    if inputs and isinstance(inputs[0], list):
        return len(inputs[0])
    return None


def load(model: Any, *, card: Card | str | None = None, tokenizer: Any = None, **kwargs: Any) -> HookedLanguageModel:
    """Load any supported model as a :class:`HookedLanguageModel`.

    ``model`` is an HF model instance, a local folder written by ``save_pretrained`` (or an original
    mamba-ssm folder), a BlinkDL RWKV ``.pth`` file, a zoo name, or a hub repo id (downloads need
    network). Folders and instances load offline; a folder with a tokenizer
    gets it without the hub.
    """
    src = resolve(model)  # a clear SourceError for anything that can be no model
    source = model = src.value
    if src.kind == "pth":
        # A BlinkDL RWKV-5/6/7 checkpoint (read tensors-only); World tokenizer for its 65536 vocabulary.
        from .models.blinkdl import load_blinkdl

        model = load_blinkdl(src.value)
        if tokenizer is None and model.config.vocab_size == 65536:
            from .rwkv_tokenizer import rwkv_world_tokenizer

            tokenizer = rwkv_world_tokenizer()
    elif src.checkpoint_format is not None:  # e.g. an original mamba-ssm folder: convert, then wrap the HF model
        if tokenizer is None:
            tokenizer = find_tokenizer(src.value)
        model = src.checkpoint_format.load(src.value)
    elif src.kind in ("folder", "zoo"):
        kwargs.setdefault("dispatch", True)  # a zoo name stays a name (the class resolves it): the remote key names it
    if src.kind != "hub":
        return HookedLanguageModel(model, card=card, tokenizer=tokenizer, **kwargs)
    try:
        return HookedLanguageModel(model, card=card, tokenizer=tokenizer, **kwargs)
    except OSError as error:  # no network, no such repo: one line naming the input, not the hub's traceback
        raise hub_error(source, error) from None
