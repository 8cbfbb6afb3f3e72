"""The transformer hidden-state convention for a recurrent model, recorded by forward hooks.

Tools written for transformers (tuned-lens, logit-lens scripts) read
``model(ids, output_hidden_states=True).hidden_states`` as ``[emb, out_0, ..., out_{n-2},
norm(out_{n-1})]``. Recurrent models in transformers return ``[out_0, ..., out_{n-1},
norm(out_{n-1})]`` (no embeddings), and a family's convention has changed between releases (Mamba-2
follows the transformer one from transformers 5.25). :func:`transformer_hidden_states` therefore
records the stream instead of reordering HF's tuple: forward hooks keep references to the residual
stream entering layer 0 (``layers[0].input``: the embedding output; for RWKV-4 the raw embedding,
which block 0 passes through ``pre_ln`` first), to the outputs of layers ``0..n-2`` and to the final
norm's output, and a forward hook on the top-level model sets ``output.hidden_states`` to that list
whenever the caller asked for hidden states. Nothing else changes: logits, cache / state, the
forward function (inside an nnsight trace ``model.output.hidden_states`` is the module's own value,
because the hook runs after the module's forward), and calls without ``output_hidden_states``.
Memory: references only (no copies), dropped at the end of each call.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from ..cards import Card
from ..surgery import get_module


def transformer_hidden_states(model: nn.Module, card: Card) -> list[RemovableHandle]:
    """Install the hooks described in the module docstring on ``model``; returns their handles (to remove them)."""
    layers = get_module(model, card.modules["layers"])
    final_norm = get_module(model, card.modules["final_norm"])
    n_layers = len(layers)
    pending: list[dict[str, Any]] = []

    def top_pre(_module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        pending.append({})

    def layer0_pre(_module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        if pending and "emb" not in pending[-1]:
            pending[-1]["emb"] = _first_tensor(args, kwargs)

    def layer_post(i: int) -> Callable[..., None]:
        def hook(_module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
            if pending:
                pending[-1][i] = output[0] if isinstance(output, tuple) else output

        return hook

    def norm_post(_module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
        if pending:
            pending[-1]["norm"] = output

    def top_post(_module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any) -> Any:
        record = pending.pop() if pending else {}
        if not _is_model_output(output):
            if isinstance(output, tuple) and _asked_hidden(_module, kwargs):
                raise NotImplementedError(
                    "nnsight-rnn records the transformer hidden-state convention on ModelOutput results only; "
                    "call the model with return_dict=True (the default) together with output_hidden_states=True"
                )
            return output
        if output.get("hidden_states") is None:
            return output
        stream = [record.get("emb"), *(record.get(i) for i in range(n_layers - 1)), record.get("norm")]
        if any(t is None for t in stream):
            raise RuntimeError(
                f"expected the input of layer 0, the outputs of layers 0..{n_layers - 2} and the final norm's "
                f"output from this {card.family} model; missing {[i for i, t in enumerate(stream) if t is None]}"
            )
        output["hidden_states"] = tuple(stream)
        return output

    return [
        model.register_forward_pre_hook(top_pre, with_kwargs=True),
        layers[0].register_forward_pre_hook(layer0_pre, with_kwargs=True),
        *(layers[i].register_forward_hook(layer_post(i)) for i in range(n_layers - 1)),
        final_norm.register_forward_hook(norm_post),
        model.register_forward_hook(top_post, with_kwargs=True, always_call=True),
    ]


def _is_model_output(output: Any) -> bool:
    from transformers.utils import ModelOutput

    return isinstance(output, ModelOutput)


def _asked_hidden(model: nn.Module, kwargs: dict[str, Any]) -> bool:
    asked = kwargs.get("output_hidden_states")
    return bool(asked if asked is not None else getattr(model.config, "output_hidden_states", False))


def _first_tensor(args: tuple[Any, ...], kwargs: dict[str, Any]) -> torch.Tensor | None:
    if args and isinstance(args[0], torch.Tensor):
        return args[0]
    if isinstance(kwargs.get("hidden_states"), torch.Tensor):
        return kwargs["hidden_states"]
    for value in kwargs.values():
        if isinstance(value, torch.Tensor):
            return value
    return None
