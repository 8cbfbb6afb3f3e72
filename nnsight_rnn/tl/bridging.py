"""Bridges: where a TransformerLens hook point of :class:`~nnsight_rnn.tl.HookedLM` reads and writes its value.

A :class:`BridgedHookPoint` is a TransformerLens ``HookPoint`` whose value lives in the HF model: at
the output of a module (:class:`OutputOf`), at its input (:class:`InputOf`), or at a per-position
state flattened to one vector per position (:class:`FlatOutputOf`). The bridge is a plain torch hook
installed only while the TransformerLens hook point has hooks, so an idle model runs exactly the HF
model and expensive states are computed only while someone listens. Edits returned by a hook replace
the value in the HF model (with the hook point's meaning, see docs/state-semantics.md).
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle
from transformer_lens.hook_points import HookPoint as TLHookPoint

from ..errors import UnknownTLHookError
from ..hooks import HookPoint as RNNHookPoint


@dataclass(frozen=True)
class OutputOf:
    """The output of ``module`` (the first element when the module returns a tuple)."""

    module: nn.Module

    def attach(self, point: TLHookPoint) -> RemovableHandle:
        def bridge(module: nn.Module, args: tuple, output: Any) -> Any:
            if isinstance(output, tuple):
                return (point(output[0]), *output[1:])
            return point(output)

        return self.module.register_forward_hook(bridge)

    def describe(self) -> str:
        return f"output of {type(self.module).__name__}"


@dataclass(frozen=True)
class InputOf:
    """The first positional argument of ``module`` (or its ``hidden_states`` keyword)."""

    module: nn.Module

    def attach(self, point: TLHookPoint) -> RemovableHandle:
        def bridge(module: nn.Module, args: tuple, kwargs: dict[str, Any]) -> Any:
            if args:
                return (point(args[0]), *args[1:]), kwargs
            if "hidden_states" in kwargs:
                return args, {**kwargs, "hidden_states": point(kwargs["hidden_states"])}
            raise RuntimeError(
                f"nnsight_rnn.tl: cannot find the input of {type(module).__name__} for hook {point.name!r} "
                "(no positional argument and no `hidden_states` keyword); please report this model."
            )

        return self.module.register_forward_pre_hook(bridge, with_kwargs=True)

    def describe(self) -> str:
        return f"input of {type(self.module).__name__}"


@dataclass(frozen=True)
class FlatOutputOf:
    """The output of ``module`` with the axes after position flattened: ``[b, pos, ...] -> [b, pos, prod(...)]``.

    Edits are reshaped back, so they apply to the original value. This is the ``[batch, pos, d_in]``
    layout that tools expecting one vector per position (sae-lens) need for state hooks.
    """

    module: nn.Module

    def attach(self, point: TLHookPoint) -> RemovableHandle:
        def bridge(module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
            return point(output.flatten(2)).reshape(output.shape)

        return self.module.register_forward_hook(bridge)

    def describe(self) -> str:
        return f"output of {type(self.module).__name__}, flattened after the position axis"


Bridge = OutputOf | InputOf | FlatOutputOf


class BridgedHookPoint(TLHookPoint):
    """A TransformerLens ``HookPoint`` whose value lives in the HF model (see the module docstring).

    Attributes (besides TransformerLens's ``name``, ``ctx``, ``fwd_hooks``, ``bwd_hooks``, ``pos_dim``):
        kind: ``"activation"``, ``"resid"``, ``"state_readout"``, ``"state_write"`` or ``"state_carried"``.
        expensive: computed only while hooked (per-position states).
        doc: one line: shape and meaning.
        alias_of: the canonical name when this point is an alias, else ``None``.
        source: the nnsight-rnn hook point it bridges to, if any (``positions`` is read from / written to it).
    """

    def __init__(
        self,
        bridge: Bridge,
        *,
        pos_dim: int | None,
        kind: str = "activation",
        expensive: bool = False,
        doc: str = "",
        alias_of: str | None = None,
        source: RNNHookPoint | None = None,
    ) -> None:
        super().__init__()
        self.pos_dim = pos_dim
        self.kind = kind
        self.expensive = expensive
        self.doc = doc
        self.alias_of = alias_of
        # Plain attributes (not submodules): the bridge only references HF modules.
        self.__dict__["_bridge"] = bridge
        self.__dict__["_source"] = source
        self.__dict__["_link"] = None

    @property
    def source(self) -> RNNHookPoint | None:
        return self.__dict__["_source"]

    @property
    def positions(self) -> list[int] | None:
        """Positions an expensive state hook computes (``None``: all); see ``nnsight_rnn.hooks.HookPoint``."""
        return None if self.source is None else self.source.positions

    @positions.setter
    def positions(self, value: list[int] | None) -> None:
        if self.source is None or not self.source.expensive:
            raise ValueError(f"hook {self.name!r} is not a per-position state hook; positions cannot be selected")
        self.source.positions = None if value is None else list(value)

    # Every way a hook gets registered goes through these, so the bridge follows the hooks.
    def register_forward_hook(self, *args: Any, **kwargs: Any) -> RemovableHandle:
        handle = super().register_forward_hook(*args, **kwargs)
        self._sync()
        return handle

    def register_forward_pre_hook(self, *args: Any, **kwargs: Any) -> RemovableHandle:
        handle = super().register_forward_pre_hook(*args, **kwargs)
        self._sync()
        return handle

    def register_full_backward_hook(self, *args: Any, **kwargs: Any) -> RemovableHandle:
        handle = super().register_full_backward_hook(*args, **kwargs)
        self._sync()
        return handle

    def remove_hooks(self, *args: Any, **kwargs: Any) -> None:
        super().remove_hooks(*args, **kwargs)
        self._sync()

    def is_linked(self) -> bool:
        """Whether the bridge torch hook is installed in the HF model right now."""
        return self.__dict__["_link"] is not None

    def _sync(self) -> None:
        listening = bool(
            self._forward_hooks or self._forward_pre_hooks or self._backward_hooks or self._backward_pre_hooks
        )
        link = self.__dict__["_link"]
        if listening and link is None:
            self.__dict__["_link"] = self.__dict__["_bridge"].attach(self)
        elif not listening and link is not None:
            link.remove()
            self.__dict__["_link"] = None

    def __repr__(self) -> str:
        extra = f", alias of {self.alias_of!r}" if self.alias_of else ""
        return f"BridgedHookPoint(name={self.name!r}, kind={self.kind}, pos_dim={self.pos_dim}{extra})"


class Namespace(nn.Module):
    """A parameterless group of hook points (``blocks.3``, ``blocks.3.mixer``, ``ln_final``)."""

    def forward(self, *args: Any, **kwargs: Any) -> Any:  # pragma: no cover - never called
        raise RuntimeError("hook namespaces are not callable")


class HookNames(dict):
    """``mod_dict`` / ``hook_dict`` with an error naming the nearest hook names."""

    def __missing__(self, key: str) -> Any:
        near = difflib.get_close_matches(str(key), [k for k in self if "hook" in k], n=5, cutoff=0.5)
        hint = f" Nearest: {near}." if near else ""
        raise UnknownTLHookError(
            f"no hook point named {key!r} on this model.{hint} List them with sorted(model.hook_dict) "
            "(canonical names) or model.hook_names(include_aliases=True)."
        )
