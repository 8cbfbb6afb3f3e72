"""Turning an HF model into a hooked one: swap mixers, apply patches, name hook points.

Everything here keeps the parameters (same objects, same ``state_dict`` keys), so
``save_pretrained`` output is loadable by the stock class and nothing is copied.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from . import contract
from .cards import Card, card_for, get_card
from .errors import UnsupportedArchitectureError
from .hooks import HookPoint
from .mixers import HookableMixer, mixer_class
from .mixers.base import known
from .patches import apply_patch

CARD_ATTR = "nnsight_rnn_card"


def get_module(root: nn.Module, path: str) -> nn.Module:
    """Module at a dotted path, with an error naming the card entry if it is absent."""
    try:
        return root.get_submodule(path)
    except AttributeError as error:
        raise AttributeError(
            f"{type(root).__name__} has no module at {path!r} (from its nnsight-rnn card): {error}"
        ) from None


def layers_of(model: nn.Module, card: Card) -> nn.ModuleList:
    return get_module(model, card.modules["layers"])  # type: ignore[return-value]


def install(model: nn.Module, card: Card | str | None = None) -> nn.Module:
    """Make ``model`` hookable in place and return it. Idempotent.

    Swaps each layer's mixer for the card's hookable mixer (adopting its parameters), applies the
    card's patches, and records the card on ``model.nnsight_rnn_card``.
    """
    card = resolve_card(model, card)
    if getattr(model, CARD_ATTR, None) == card.family:
        return model
    validate_card(model, card)
    contract.ensure(card, model, install)  # once per family and process: an upstream change fails loudly here
    forget_nnsight_wrapping(model)
    if card.is_recurrent:
        cls = mixer_class(card.mixer_kind)
        config = model.config
        for idx, layer in enumerate(layers_of(model, card)):
            parent_path, _, attr = card.modules["mixer"].rpartition(".")
            parent = get_module(layer, parent_path) if parent_path else layer
            original = getattr(parent, attr)
            if isinstance(original, HookableMixer):
                continue
            layer_idx = getattr(original, "layer_idx", getattr(original, "layer_id", idx))
            setattr(parent, attr, cls.from_original(original, config, layer_idx))
    for patch in card.patches:
        apply_patch(patch, model)
    _check_token_ids_on(model, get_module(model, card.modules["embed"]))
    setattr(model, CARD_ATTR, card.family)
    name_hook_points(model, card)
    return model


_IDS_CHECK_ATTR = "_nnsight_rnn_checks_ids"


def _check_token_ids_on(model: nn.Module, embed: nn.Module) -> None:
    """A forward pre-hook on the model: an empty prompt or a token id outside the vocabulary is a
    clear error (was a conv1d RuntimeError, a reshape error or "index out of range in self")."""
    if getattr(model, _IDS_CHECK_ATTR, False) or not isinstance(embed, nn.Embedding):
        return
    vocab = embed.num_embeddings

    def check(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        ids = kwargs.get("input_ids", args[0] if args else None)
        if not isinstance(ids, torch.Tensor) or ids.is_floating_point():
            return
        if ids.numel() == 0:
            raise ValueError(
                f"the input has no tokens (input_ids of shape {tuple(ids.shape)}): pass a non-empty prompt"
            )
        if known(((ids < 0) | (ids >= vocab)).any(), unknown=False):
            bad = ids[(ids < 0) | (ids >= vocab)].flatten()[0].item()
            raise ValueError(
                f"token id {bad} is outside this model's vocabulary (ids 0..{vocab - 1}): "
                "the tokenizer or the ids do not belong to this model"
            )

    model.register_forward_pre_hook(check, with_kwargs=True)
    setattr(model, _IDS_CHECK_ATTR, True)


def forget_nnsight_wrapping(model: nn.Module) -> None:
    """Drop the controllers an earlier nnsight wrapper left on ``model``'s modules.

    nnsight installs a controller into each module's ``__dict__["forward"]`` that runs the forward
    it saw at wrap time. The surgery swaps classes (RWKV's model and blocks) and mixers, so a model
    that was wrapped before (a plain ``LanguageModel``, or a deep copy of one) would keep running
    the stock forwards around our mixers: silently wrong or a crash. Our own wrapper re-installs
    controllers on the result. A wrapper made earlier over the same modules stops intervening.
    """
    try:
        from nnsight.intervention.source import STATE, Controller
    except ImportError:  # another nnsight layout: nothing of ours to undo
        return
    for module in model.modules():
        if module.__dict__.pop(STATE, None) is not None and isinstance(module.__dict__.get("forward"), Controller):
            del module.__dict__["forward"]


def validate_card(model: nn.Module, card: Card) -> None:
    """Check that every module the card names exists in ``model`` (an error names the entry)."""
    for std in ("embed", "layers", "final_norm", "unembed"):
        get_module(model, card.modules[std])
    layers = layers_of(model, card)
    if len(layers) == 0:
        raise ValueError(f"card {card.family!r}: {card.modules['layers']!r} is empty")
    for std in ("mixer", "mlp"):
        if card.modules.get(std):
            get_module(layers[0], card.modules[std])


def resolve_card(model: nn.Module, card: Card | str | None) -> Card:
    """The card for ``model``: ``card`` if given (a family name or a :class:`Card`), else the one matching it.

    A card given for a model whose ``model_type`` another card claims is refused (an error, not a
    guess): its module paths would not exist, or worse, exist with another meaning. A model type no
    card claims (your own model) takes the card you give.
    """
    if card is None:
        return card_for(model)
    if isinstance(card, str):
        card = get_card(card)
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    if model_type is not None and model_type not in card.model_types:
        try:
            own = card_for(model)
        except UnsupportedArchitectureError:
            return card
        raise UnsupportedArchitectureError(
            f"card {card.family!r} is for model types {list(card.model_types)}, but this {type(model).__name__} has "
            f"model_type {model_type!r}, the {own.family!r} card's: pass card={own.family!r}, or leave card= out"
        )
    return card


def standard_path(card: Card, module_path: str) -> str:
    """Translate an HF module path into the standard vocabulary (``layers.3.mixer.hook_x``)."""
    layers = card.modules["layers"] + "."
    if module_path.startswith(layers):
        rest = module_path[len(layers) :]
        idx, _, inner = rest.partition(".")
        for std in ("mixer", "mlp"):
            real = card.modules.get(std)
            if real and (inner == real or inner.startswith(real + ".")):
                inner = std + inner[len(real) :]
                break
        return f"layers.{idx}" + (f".{inner}" if inner else "")
    for std in ("embed", "final_norm", "unembed"):
        real = card.modules[std]
        if module_path == real or module_path.startswith(real + "."):
            return std + module_path[len(real) :]
    return module_path


def name_hook_points(model: nn.Module, card: Card) -> dict[str, HookPoint]:
    """Set every hook point's ``name`` to its standard path; return them by that name."""
    named: dict[str, HookPoint] = {}
    for path, module in model.named_modules():
        if isinstance(module, HookPoint):
            module.name = standard_path(card, path)
            named[module.name] = module
    return named


def rename_map(card: Card) -> dict[str, Any]:
    """nnsight ``rename=`` dict giving every card the standard envoy names."""
    layers = card.modules["layers"]
    rename: dict[str, Any] = {
        card.modules["embed"]: "embed",
        layers: "layers",
        card.modules["final_norm"]: "final_norm",
        card.modules["unembed"]: "unembed",
    }
    # Relative keys bind on every envoy that has such a child: the layers.
    if card.modules["mixer"] != "mixer":
        rename[card.modules["mixer"]] = "mixer"
    mlp = card.modules.get("mlp")
    if mlp and mlp != "mlp":
        rename[mlp] = "mlp"
    rename.update(card.rename)
    return rename
