"""A TransformerLens ``HookedRootModule`` over any nnsight-rnn model (Mamba, Mamba-2, RWKV-4, GPT-2, ...).

:class:`HookedLM` owns the HF model (hooked in place by :func:`nnsight_rnn.surgery.install`, same
parameters, same ``state_dict`` under the ``hf_model.`` prefix) and a parallel tree of
TransformerLens ``HookPoint`` modules named the TransformerLens way::

    hook_embed                              [b, pos, d_model]   output of the embedding
    blocks.{i}.hook_resid_pre               [b, pos, d_model]   input of block i (the residual stream)
    blocks.{i}.hook_mixer_in                [b, pos, d_model]   input of the token mixer (after the block's norm)
    blocks.{i}.mixer.hook_*                 [b, pos, ...]       the hookable mixer's own hook points
    blocks.{i}.hook_mixer_out               [b, pos, d_model]   output of the token mixer (added to the residual)
    blocks.{i}.hook_mlp_in / hook_mlp_out   [b, pos, d_model]   where the family has an MLP (GPT-2, RWKV channel-mix)
    blocks.{i}.mlp.hook_*                   [b, pos, ...]       hookable MLP hook points (RWKV-4 channel-mix)
    blocks.{i}.hook_resid_post              [b, pos, d_model]   output of block i
    blocks.0.pre_ln.hook_normalized         [b, pos, d_model]   RWKV-4 only: block 0's LayerNorm of the embedding
                                                                (RWKV-7: ``blocks.0.pre_norm.hook_normalized``)
    ln_final.hook_normalized                [b, pos, d_model]   output of the final norm
    hook_unembed                            [b, pos, d_vocab]   logits

Every TransformerLens hook point is *bridged* to a place in the HF model: either one of
nnsight-rnn's own hook points (``nnsight_rnn.hooks.HookPoint``) or the input / output of a module
(blocks, mixer, MLP, norms). The bridge is a plain torch hook that exists only while the
TransformerLens hook point has hooks (forward or backward), so:

- an idle :class:`HookedLM` runs exactly the HF model (no hooks installed);
- expensive per-position states (``hook_ssm_state``, ``hook_ssm_write``, ``hook_wkv_state``, ...) are
  computed only while a TransformerLens hook listens to them, the same rule as under nnsight;
- edits returned by a hook replace the value in the HF model, with the meaning of that hook point
  (see docs/state-semantics.md: ``state_write`` edits propagate, ``state_readout`` edits change one
  position's output only);
- backward hooks (``dir="bwd"``) see the gradient w.r.t. the hooked value.

Aliases (TransformerLens / TransformerBridge spellings and the card's aliases, e.g.
``blocks.{i}.hook_in`` -> ``hook_resid_pre``, ``blocks.{i}.mixer.hook_h`` -> ``hook_ssm_state``) are
hook points of their own, bridged to the same place, with their own name: they are accepted wherever
a name is (``add_hook``, ``run_with_hooks``, ``names_filter`` lists) and cached under the name asked
for, but are not in ``hook_dict``, so ``names_filter=None`` or a predicate visits each value once.

Every per-position state hook also has a ``..._flat`` alias (``blocks.{i}.mixer.hook_ssm_state_flat``):
the same value as ``[b, pos, d_inner * N]`` (edits reshaped back), the layout sae-lens and other
one-vector-per-position tools need.

Position is axis 1 of every hook value that has one (``pos_dim``); carried states (``*_state_in``,
``*_state_out``) have ``pos_dim = None``. Note: TransformerBridge's Mamba-1 ``hook_ssm_state`` is
``[b, d_inner, pos, N]`` (``pos_dim = 2``); here it is ``[b, pos, d_inner, N]``.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle
from transformer_lens.hook_points import HookPoint as TLHookPoint

try:  # TransformerLens >= 3.0
    from transformer_lens import HookedRootModule
except ImportError:  # pragma: no cover - older layout
    from transformer_lens.hook_points import HookedRootModule  # type: ignore[no-redef]

from ..cards import Card
from ..errors import UnknownTLHookError
from ..hooks import HookPoint as RNNHookPoint
from ..hooks import hook_points as rnn_hook_points
from ..surgery import _resolve_card, get_module, install, layers_of, standard_path

HF_PREFIX = "hf_model"
# Block-0 norms of the embedding (RWKV-4 ``pre_ln``, RWKV-7 ``pre_norm``): their output starts the residual stream.
EMBED_NORMS = ("pre_ln", "pre_norm")
# ``blocks.{i}.mixer.hook_ssm_state_flat``: a per-position state hook as ``[b, pos, prod(state dims)]``.
FLAT_SUFFIX = "_flat"


# -- bridges: where a TransformerLens hook point reads and writes its value -----------------------------------


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


class _Namespace(nn.Module):
    """A parameterless group of hook points (``blocks.3``, ``blocks.3.mixer``, ``ln_final``)."""

    def forward(self, *args: Any, **kwargs: Any) -> Any:  # pragma: no cover - never called
        raise RuntimeError("hook namespaces are not callable")


class _Names(dict):
    """``mod_dict`` / ``hook_dict`` with an error naming the nearest hook names."""

    def __missing__(self, key: str) -> Any:
        near = difflib.get_close_matches(str(key), [k for k in self if "hook" in k], n=5, cutoff=0.5)
        hint = f" Nearest: {near}." if near else ""
        raise UnknownTLHookError(
            f"no hook point named {key!r} on this model.{hint} List them with sorted(model.hook_dict) "
            "(canonical names) or model.hook_names(include_aliases=True)."
        )


@dataclass
class HookedLMConfig:
    """The subset of TransformerLens's ``cfg`` that tools read (sae-lens, TL utilities)."""

    model_name: str
    family: str
    n_layers: int
    d_model: int
    d_vocab: int
    d_vocab_out: int
    n_ctx: int | None
    device: torch.device
    dtype: torch.dtype
    is_recurrent: bool
    normalization_type: str | None
    original_architecture: str
    default_prepend_bos: bool = False
    tokenizer_prepends_bos: bool = False
    default_padding_side: str = "left"
    extra: dict[str, Any] = field(default_factory=dict)


class _StopForward(Exception):
    def __init__(self, resid: torch.Tensor) -> None:
        super().__init__("stop_at_layer")
        self.resid = resid


ReturnType = Literal["logits", "loss", "both"] | None


class HookedLM(HookedRootModule):
    """TransformerLens ``HookedRootModule`` over an HF causal LM that nnsight-rnn has a card for.

    Args:
        model: the HF model (``MambaForCausalLM``, ``Mamba2ForCausalLM``, ``RwkvForCausalLM``,
            ``GPT2LMHeadModel``, ...). It is made hookable **in place** (same parameters) and kept as
            ``self.hf_model``; an nnsight :class:`~nnsight_rnn.HookedLanguageModel` over the same
            instance keeps working.
        card: family name or card (default: matched on ``config.model_type``).
        tokenizer: used by string inputs, ``to_tokens`` and ``to_string`` (default: the model's own
            or nnsight-rnn's byte tokenizer).

    Calling the model: ``model(input, return_type="logits")`` with ``input`` a string, a list of
    strings or token ids ``[batch, pos]`` / ``[pos]``; ``return_type`` ``"logits"``
    (``[batch, pos, d_vocab]``), ``"loss"`` (mean next-token cross-entropy, or ``[batch, pos-1]`` with
    ``loss_per_token=True``), ``"both"`` or ``None``. ``stop_at_layer=k`` stops before block ``k``
    and returns the residual stream there (``k = n_layers``: before the final norm).
    ``state=RecurrentState`` starts from a carried state (recurrent families).
    """

    hf_model: nn.Module

    def __init__(self, model: nn.Module, card: Card | str | None = None, tokenizer: Any = None) -> None:
        super().__init__()
        card = _resolve_card(model, card)
        if any(p.device.type == "meta" for p in model.parameters()):
            raise ValueError(
                "this model's weights are not loaded (meta tensors): load it with "
                "nnsight_rnn.load(path, dispatch=True) or pass the HF model instance"
            )
        install(model, card)
        self.card = card
        self.hf_model = model
        if tokenizer is None:
            from ..model import _find_tokenizer

            tokenizer = _find_tokenizer(model)
        self.tokenizer = tokenizer
        # Plain attributes, not submodules: the HF modules are registered once, under ``hf_model``.
        self.__dict__["_layers"] = layers_of(model, card)
        self.__dict__["_final_norm"] = get_module(model, card.modules["final_norm"])
        self.__dict__["_unembed"] = get_module(model, card.modules["unembed"])
        self.__dict__["_embed"] = get_module(model, card.modules["embed"])
        self.cfg = self._make_cfg()
        self.blocks = nn.ModuleList(_Namespace() for _ in range(len(self._layers)))
        self._build_hook_points()
        self.setup()

    # -- construction ------------------------------------------------------------------------------

    def _make_cfg(self) -> HookedLMConfig:
        config = self.hf_model.config
        param = next(self.hf_model.parameters())
        weight = getattr(self._embed, "weight", None)
        d_model = int(weight.shape[1]) if weight is not None else int(config.hidden_size)
        unembed_w = getattr(self._unembed, "weight", None)
        d_vocab_out = int(unembed_w.shape[0]) if unembed_w is not None else int(config.vocab_size)
        n_ctx = next(
            (getattr(config, k) for k in ("n_positions", "max_position_embeddings") if getattr(config, k, None)),
            None,
        )
        norm = self._final_norm
        norm_type = "LN" if isinstance(norm, nn.LayerNorm) else ("RMS" if "RMSNorm" in type(norm).__name__ else None)
        return HookedLMConfig(
            model_name=str(getattr(config, "_name_or_path", "") or type(self.hf_model).__name__),
            family=self.card.family,
            n_layers=len(self._layers),
            d_model=d_model,
            d_vocab=int(config.vocab_size),
            d_vocab_out=d_vocab_out,
            n_ctx=n_ctx,
            device=param.device,
            dtype=param.dtype,
            is_recurrent=self.card.is_recurrent,
            normalization_type=norm_type,
            original_architecture=type(self.hf_model).__name__,
            default_padding_side=getattr(self.tokenizer, "padding_side", "left") or "left",
        )

    def _place(self, name: str, point: BridgedHookPoint) -> None:
        """Register ``point`` at dotted ``name`` in the namespace tree (creating namespaces)."""
        parent: nn.Module = self
        parts = name.split(".")
        for part in parts[:-1]:
            if part.isdigit():
                parent = parent[int(part)]  # type: ignore[index]
                continue
            child = parent._modules.get(part)
            if child is None:
                child = _Namespace()
                parent.add_module(part, child)
            parent = child
        if parts[-1] in parent._modules:
            raise ValueError(f"nnsight_rnn.tl: two hook points named {name!r}")
        parent.add_module(parts[-1], point)

    def _build_hook_points(self) -> None:
        card = self.card
        self._canonical: list[str] = []
        self._aliases: dict[str, str] = {}
        resid = dict(pos_dim=1, kind="resid")
        act = dict(pos_dim=1, kind="activation")

        def add(name: str, bridge: Bridge, aliases: tuple[str, ...] = (), **meta: Any) -> None:
            self._place(name, BridgedHookPoint(bridge, **meta))
            self._canonical.append(name)
            for alias in aliases:
                if alias in self._aliases or alias in self._canonical:
                    continue
                self._place(alias, BridgedHookPoint(bridge, alias_of=name, **meta))
                self._aliases[alias] = name

        # Our own hook points by standard name (``layers.3.mixer.hook_x``), in execution order.
        ours_by_layer: dict[int, list[tuple[str, RNNHookPoint]]] = {}
        for path, hp in rnn_hook_points(self.hf_model).items():
            std = standard_path(card, path)
            if std.startswith("layers."):
                idx = int(std.split(".")[1])
                ours_by_layer.setdefault(idx, []).append((std, hp))

        add("hook_embed", OutputOf(self._embed), **resid, doc="embedding output [b, pos, d_model]")
        self.resid_start = "blocks.0.hook_resid_pre"  # the residual stream's first term (see residual.py)
        mixer_path = card.modules["mixer"]
        mlp_path = card.modules.get("mlp")
        for i, layer in enumerate(self._layers):
            b = f"blocks.{i}"
            embed_norm = next((c for c in EMBED_NORMS if isinstance(getattr(layer, c, None), nn.Module)), None)
            if i == 0 and embed_norm is not None:
                self.resid_start = f"{b}.{embed_norm}.hook_normalized"
                add(
                    self.resid_start, OutputOf(getattr(layer, embed_norm)), **resid,
                    doc="RWKV block 0's LayerNorm of the embedding: the residual stream's first term [b, pos, d_model]",
                )  # fmt: skip
            add(
                f"{b}.hook_resid_pre", InputOf(layer), (f"{b}.hook_in",), **resid,
                doc="input of the block: the residual stream [b, pos, d_model]",
            )  # fmt: skip
            mixer = get_module(layer, mixer_path)
            tl = card.tl_aliases  # the family's TransformerLens names, from its card
            mixer_aliases = [f"{b}.mixer.hook_in", *(f"{b}.{a}" for a in tl.get("mixer_in", ()))]
            mixer_out_aliases = [f"{b}.mixer.hook_out", *(f"{b}.{a}" for a in tl.get("mixer_out", ()))]
            add(
                f"{b}.hook_mixer_in", InputOf(mixer), tuple(mixer_aliases), **act,
                doc="input of the token mixer (normed residual) [b, pos, d_model]",
            )  # fmt: skip
            mixer_hps = [(s, hp) for s, hp in ours_by_layer.get(i, []) if s.startswith(f"layers.{i}.mixer.")]
            for std, hp in mixer_hps:
                self._add_ours(add, std, hp)
            if card.is_recurrent and isinstance(getattr(mixer, "in_proj", None), nn.Module):
                add(
                    f"{b}.mixer.hook_in_proj", OutputOf(mixer.in_proj), **act,
                    doc="in_proj output (TransformerBridge's name) [b, pos, in_proj.out_features]",
                )  # fmt: skip
            add(
                f"{b}.hook_mixer_out", OutputOf(mixer), tuple(mixer_out_aliases), **act,
                doc="output of the token mixer, added to the residual stream [b, pos, d_model]",
            )  # fmt: skip
            if mlp_path:
                mlp = get_module(layer, mlp_path)
                in_aliases = [f"{b}.mlp.hook_in", *(f"{b}.{a}" for a in tl.get("mlp_in", ()))]
                out_aliases = [f"{b}.mlp.hook_out", *(f"{b}.{a}" for a in tl.get("mlp_out", ()))]
                add(
                    f"{b}.hook_mlp_in", InputOf(mlp), tuple(in_aliases), **act, doc="input of the MLP [b, pos, d_model]"
                )
                for std, hp in ours_by_layer.get(i, []):
                    if std.startswith(f"layers.{i}.mlp."):
                        self._add_ours(add, std, hp)
                add(
                    f"{b}.hook_mlp_out", OutputOf(mlp), tuple(out_aliases), **act,
                    doc="output of the MLP, added to the residual stream [b, pos, d_model]",
                )  # fmt: skip
            for std, hp in ours_by_layer.get(i, []):  # any other hook point of the block
                if not (std.startswith(f"layers.{i}.mixer.") or std.startswith(f"layers.{i}.mlp.")):
                    self._add_ours(add, std, hp)
            add(
                f"{b}.hook_resid_post", OutputOf(layer), (f"{b}.hook_out",), **resid,
                doc="output of the block: the residual stream [b, pos, d_model]",
            )  # fmt: skip
        add("ln_final.hook_normalized", OutputOf(self._final_norm), **act, doc="final norm output [b, pos, d_model]")
        add("hook_unembed", OutputOf(self._unembed), **act, doc="logits [b, pos, d_vocab]")

    def _add_ours(self, add: Callable[..., None], std: str, hp: RNNHookPoint) -> None:
        tl_name = "blocks." + std[len("layers.") :]
        head, _, leaf = tl_name.rpartition(".")
        aliases = tuple(f"{head}.{alias}" for alias, target in self.card.aliases.items() if target == leaf)
        meta = dict(pos_dim=hp.pos_dim, kind=hp.kind, expensive=hp.expensive, doc=hp.doc, source=hp)
        add(tl_name, OutputOf(hp), aliases, **meta)
        if hp.expensive and hp.pos_dim == 1:  # per-position states as one vector per position
            flat = f"{tl_name}{FLAT_SUFFIX}"
            self._place(flat, BridgedHookPoint(FlatOutputOf(hp), alias_of=tl_name, **meta))
            self._aliases[flat] = tl_name

    def setup(self) -> None:
        """Name the TransformerLens hook points and build ``mod_dict`` / ``hook_dict``.

        Unlike ``HookedRootModule.setup`` this leaves the HF model's modules alone (their ``name``
        attributes and nnsight-rnn's hook names are not touched). ``hook_dict`` holds canonical
        names; ``mod_dict`` also holds aliases.
        """
        self.mod_dict = _Names()
        self.hook_dict = _Names()
        for name, module in self.named_modules():
            if name == "" or name == HF_PREFIX or name.startswith(HF_PREFIX + "."):
                continue
            if isinstance(module, TLHookPoint):
                module.name = name
                self.mod_dict[name] = module
                if getattr(module, "alias_of", None) is None:
                    self.hook_dict[name] = module
            elif isinstance(module, _Namespace):
                self.mod_dict[name] = module
        order = {n: k for k, n in enumerate(self._canonical)}
        self.hook_dict = _Names(sorted(self.hook_dict.items(), key=lambda kv: order.get(kv[0], len(order))))

    def hook_points(self) -> list[TLHookPoint]:  # type: ignore[override]
        """Every TransformerLens hook point, aliases included (so that ``reset_hooks`` clears them all)."""
        return [m for m in self.mod_dict.values() if isinstance(m, TLHookPoint)]

    def hook_names(self, include_aliases: bool = False) -> list[str]:
        """Canonical hook names in execution order (and aliases after them if asked)."""
        names = list(self.hook_dict)
        return names + sorted(self._aliases) if include_aliases else names

    def canonical_name(self, name: str) -> str:
        """The canonical name of a hook name or alias (raises :class:`UnknownTLHookError` if unknown)."""
        self.mod_dict[name]
        return self._aliases.get(name, name)

    # -- hooks -------------------------------------------------------------------------------------

    def _enable_hook_with_name(self, name: str, hook: Callable, dir: Literal["fwd", "bwd"]) -> None:
        point = self.mod_dict[name]
        if not isinstance(point, TLHookPoint):
            raise UnknownTLHookError(f"{name!r} is a group of hook points, not a hook point")
        point.add_hook(hook, dir=dir, level=self.context_level)

    def add_hook(self, name: str | Callable[[str], bool], hook: Callable, dir: str = "fwd", **kwargs: Any) -> None:  # type: ignore[override]
        """Add a hook by name (canonical or alias) or by a predicate on canonical names."""
        if isinstance(name, str):
            point = self.mod_dict[name]
            if not isinstance(point, TLHookPoint):
                raise UnknownTLHookError(f"{name!r} is a group of hook points, not a hook point")
            self.check_and_add_hook(point, name, hook, dir=dir, **kwargs)  # type: ignore[arg-type]
        else:
            super().add_hook(name, hook, dir=dir, **kwargs)  # type: ignore[arg-type]

    def get_caching_hooks(
        self,
        names_filter: Any = None,
        incl_bwd: bool = False,
        device: Any = None,
        remove_batch_dim: bool = False,
        cache: dict | None = None,
        pos_slice: Any = None,
        **kwargs: Any,
    ) -> tuple[dict, list, list]:
        """Hooks that cache activations, keyed by the name asked for (aliases included).

        ``names_filter``: ``None`` (every canonical hook, expensive states of every layer included),
        a name, a list of names (canonical or aliases; an unknown name raises), or a predicate on
        canonical names. ``pos_slice`` slices each value along its own ``pos_dim`` (values without a
        position axis are kept whole). Gradients are stored as ``name + "_grad"``.
        """
        cache = {} if cache is None else cache
        if names_filter is None:
            names = list(self.hook_dict)
        elif isinstance(names_filter, str):
            names = [names_filter]
        elif callable(names_filter):
            names = [n for n in self.hook_dict if names_filter(n)]
        else:
            names = list(names_filter)
        for name in names:
            self.mod_dict[name]
        slicer = _pos_slicer(pos_slice)
        self.is_caching = True

        def save_hook(tensor: torch.Tensor, hook: TLHookPoint, is_backward: bool = False) -> None:
            key = hook.name + ("_grad" if is_backward else "")
            value = tensor.detach().to(device) if device is not None else tensor.detach()
            if remove_batch_dim and value.dim() > 0 and value.shape[0] == 1:
                value = value[0]
            pos_dim = getattr(hook, "pos_dim", None)
            if slicer is not None and pos_dim is not None:
                value = slicer(value, pos_dim - (1 if remove_batch_dim else 0))
            cache[key] = value

        fwd = [(n, _partial(save_hook, False)) for n in names]
        bwd = [(n, _partial(save_hook, True)) for n in names] if incl_bwd else []
        return cache, fwd, bwd

    @contextmanager
    def positions_selected(self, positions: dict[str, list[int] | None]) -> Iterator[None]:
        """Restrict expensive state hooks to some positions while the block runs.

        ``positions`` maps hook names (e.g. ``"blocks.1.mixer.hook_ssm_state"``) to position lists;
        the hook value then has ``len(positions)`` entries on axis 1 (see docs/state-semantics.md).
        """
        points = [self.mod_dict[n] for n in positions]
        before = [p.positions for p in points]
        try:
            for point, pos in zip(points, positions.values(), strict=True):
                point.positions = pos
            yield
        finally:
            for point, pos in zip(points, before, strict=True):
                point.positions = pos

    # -- running -----------------------------------------------------------------------------------

    def forward(  # type: ignore[override]
        self,
        input: Any,
        return_type: ReturnType = "logits",
        loss_per_token: bool = False,
        prepend_bos: bool | None = None,
        padding_side: str | None = None,
        attention_mask: torch.Tensor | None = None,
        stop_at_layer: int | None = None,
        state: Any = None,
        tokens: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> Any:
        """Run the model; see the class docstring. Extra keywords go to the HF model's ``forward``."""
        if tokens is not None and input is None:
            input = tokens
        ids, mask = self._tokens_and_mask(input, prepend_bos, padding_side)
        if attention_mask is not None:
            mask = attention_mask.to(ids.device)
        call: dict[str, Any] = {"input_ids": ids, "attention_mask": mask}
        if state is not None:
            from ..carry import state_to_forward_kwargs

            call.update(state_to_forward_kwargs(self.hf_model, self.card, state, ids.shape[0]))
        else:
            call["use_cache"] = False
        call.update(kwargs)
        stop_handle = self._stop_hook(stop_at_layer) if stop_at_layer is not None else None
        try:
            out = self.hf_model(**call)
        except _StopForward as stop:
            return stop.resid
        finally:
            if stop_handle is not None:
                stop_handle.remove()
        if return_type is None:
            return None
        logits = out.logits if hasattr(out, "logits") else out[0]
        if return_type == "logits":
            return logits
        loss = lm_cross_entropy(logits, ids, mask, per_token=loss_per_token)
        if return_type == "loss":
            return loss
        if return_type == "both":
            return logits, loss
        raise ValueError(f"return_type must be 'logits', 'loss', 'both' or None; got {return_type!r}")

    def _stop_hook(self, stop_at_layer: int) -> RemovableHandle:
        n = len(self._layers)
        k = stop_at_layer + n + 1 if stop_at_layer < 0 else stop_at_layer
        if not 0 <= k <= n:
            raise IndexError(f"stop_at_layer={stop_at_layer} is out of range for {n} layers (valid: {-n - 1}..{n})")
        target = self._layers[k] if k < n else self._final_norm

        def stop(module: nn.Module, args: tuple, kwargs: dict[str, Any]) -> None:
            raise _StopForward(args[0] if args else kwargs["hidden_states"])

        return target.register_forward_pre_hook(stop, with_kwargs=True, prepend=True)

    def generate(
        self,
        input: Any,
        max_new_tokens: int = 10,
        do_sample: bool = True,
        prepend_bos: bool | None = None,
        **kwargs: Any,
    ) -> Any:
        """Generate with the HF model (hooks added with ``hooks()`` / ``add_hook`` fire at every step).

        Returns token ids ``[batch, pos + new]``, or a string when ``input`` is a string.
        """
        ids, mask = self._tokens_and_mask(input, prepend_bos, None)
        pad = getattr(self.tokenizer, "pad_token_id", None)
        pad = pad if pad is not None else getattr(self.tokenizer, "eos_token_id", None)
        out = self.hf_model.generate(
            input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens, do_sample=do_sample,
            pad_token_id=pad, **kwargs,
        )  # fmt: skip
        if isinstance(input, str):
            return self.tokenizer.decode(out[0])
        return out

    # -- tokens ------------------------------------------------------------------------------------

    def to_tokens(
        self, input: str | list[str], prepend_bos: bool | None = None, padding_side: str | None = None, **_: Any
    ) -> torch.Tensor:
        """Token ids ``[batch, pos]`` on the model's device (``prepend_bos`` default: ``cfg.default_prepend_bos``)."""
        return self._tokens_and_mask(input, prepend_bos, padding_side)[0]

    def to_string(self, tokens: torch.Tensor | list[int]) -> str | list[str]:
        """Decode ``[pos]`` ids to a string or ``[batch, pos]`` ids to a list of strings."""
        if isinstance(tokens, torch.Tensor) and tokens.dim() == 2:
            return [self.tokenizer.decode(row) for row in tokens]
        return self.tokenizer.decode(tokens)

    def to_str_tokens(self, input: str | torch.Tensor, prepend_bos: bool | None = None) -> list[str]:
        """One string per token of a single sequence."""
        ids = self.to_tokens(input, prepend_bos)[0] if isinstance(input, str) else input.reshape(-1)
        return [self.tokenizer.decode([int(t)]) for t in ids]

    def to_single_token(self, string: str) -> int:
        ids = self.to_tokens(string, prepend_bos=False)[0]
        if ids.numel() != 1:
            raise ValueError(f"{string!r} is {ids.numel()} tokens, not one")
        return int(ids[0])

    def _tokens_and_mask(
        self, input: Any, prepend_bos: bool | None, padding_side: str | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        device = self.cfg.device
        if isinstance(input, torch.Tensor):
            ids = input if input.dim() == 2 else input.reshape(1, -1)
            return ids.to(device), None
        if isinstance(input, str | list):
            if self.tokenizer is None:
                raise ValueError("this model has no tokenizer: pass token ids, or give HookedLM a tokenizer=")
            texts = [input] if isinstance(input, str) else list(input)
            bos = self.cfg.default_prepend_bos if prepend_bos is None else prepend_bos
            if bos:
                if self.tokenizer.bos_token is None:
                    raise ValueError("prepend_bos=True but the tokenizer has no BOS token")
                texts = [self.tokenizer.bos_token + t for t in texts]
            side = padding_side or self.tokenizer.padding_side
            before = self.tokenizer.padding_side
            self.tokenizer.padding_side = side
            try:
                enc = self.tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
            finally:
                self.tokenizer.padding_side = before
            mask = enc["attention_mask"].to(device)
            return enc["input_ids"].to(device), (None if bool(mask.all()) else mask)
        raise TypeError(f"input must be a string, a list of strings or token ids; got {type(input).__name__}")

    # -- device bookkeeping ------------------------------------------------------------------------

    def _apply(self, fn: Callable, *args: Any, **kwargs: Any) -> HookedLM:
        super()._apply(fn, *args, **kwargs)
        param = next(self.hf_model.parameters())
        self.cfg.device, self.cfg.dtype = param.device, param.dtype
        return self

    # -- module accessors used by the residual helpers ---------------------------------------------

    @property
    def final_norm(self) -> nn.Module:
        return self._final_norm

    @property
    def unembed(self) -> nn.Module:
        return self._unembed

    @property
    def layers(self) -> nn.ModuleList:
        """The HF model's blocks (``blocks`` is the hook namespace)."""
        return self._layers


def _partial(fn: Callable, is_backward: bool) -> Callable:
    def hook(tensor: torch.Tensor, hook: TLHookPoint) -> None:
        fn(tensor, hook, is_backward)

    hook.__name__ = f"save_hook({'bwd' if is_backward else 'fwd'})"
    return hook


def _pos_slicer(pos_slice: Any) -> Callable[[torch.Tensor, int], torch.Tensor] | None:
    if pos_slice is None:
        return None
    if hasattr(pos_slice, "apply") and hasattr(pos_slice, "mode"):
        if pos_slice.mode == "identity":
            return None
        return lambda t, dim: pos_slice.apply(t, dim=dim)
    from transformer_lens.utilities import Slice

    sl = Slice(pos_slice)
    return lambda t, dim: sl.apply(t, dim=dim)


def lm_cross_entropy(
    logits: torch.Tensor, tokens: torch.Tensor, attention_mask: torch.Tensor | None = None, per_token: bool = False
) -> torch.Tensor:
    """Next-token cross-entropy: ``[batch, pos-1]`` with ``per_token``, else the mean over real tokens.

    With an ``attention_mask`` only predictions from a real token to a real token count (per-token
    values at padded targets are 0).
    """
    logp = logits[:, :-1].float().log_softmax(-1)
    nll = -logp.gather(-1, tokens[:, 1:, None].to(logits.device))[..., 0]
    if attention_mask is None:
        return nll if per_token else nll.mean()
    valid = (attention_mask[:, 1:] * attention_mask[:, :-1]).to(nll.dtype)
    nll = nll * valid
    return nll if per_token else nll.sum() / valid.sum().clamp_min(1)


def load(model: Any, *, card: Card | str | None = None, tokenizer: Any = None, **kwargs: Any) -> HookedLM:
    """A :class:`HookedLM` from an HF model instance, an nnsight-rnn model, a folder or a zoo name.

    An HF instance is hooked in place (no copy). A :class:`~nnsight_rnn.HookedLanguageModel` shares
    its module with the returned object (nnsight traces and TransformerLens hooks on one model).
    Folders / zoo names load through :func:`nnsight_rnn.load` (``kwargs`` go there).
    """
    from ..model import HookedLanguageModel
    from ..model import load as nn_load

    if isinstance(model, (str, os.PathLike)):
        model = nn_load(model, card=card, tokenizer=tokenizer, **kwargs)
    if isinstance(model, HookedLanguageModel):
        return HookedLM(model._module, card=model.card, tokenizer=tokenizer or model.tokenizer)
    if isinstance(model, nn.Module):
        return HookedLM(model, card=card, tokenizer=tokenizer)
    from ..sources import resolve

    resolve(model)  # a SourceError naming what can be loaded
    raise TypeError(f"cannot make a HookedLM from {type(model).__name__}")
