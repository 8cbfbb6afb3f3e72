"""A TransformerLens ``HookedRootModule`` over any nnsight-rnn model (Mamba, Mamba-2, RWKV-4, GPT-2, ...).

:class:`HookedLM` owns the HF model (hooked in place by :func:`nnsight_rnn.surgery.install`, same
parameters, same ``state_dict`` under the ``hf_model.`` prefix) and a parallel tree of
TransformerLens hook points: their names are listed in :mod:`nnsight_rnn.tl.names`, and how each
reads and writes its value in the HF model in :mod:`nnsight_rnn.tl.bridging`. An idle
:class:`HookedLM` runs exactly the HF model; per-position states are computed only while hooked.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
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
from ..surgery import get_module, install, layers_of, resolve_card
from ..tokenizer import find_tokenizer
from .bridging import HookNames, Namespace
from .config import make_config
from .names import build_hook_points

HF_PREFIX = "hf_model"


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
        card = resolve_card(model, card)
        if any(p.device.type == "meta" for p in model.parameters()):
            raise ValueError(
                "this model's weights are not loaded (meta tensors): load it with "
                "nnsight_rnn.load(path, dispatch=True) or pass the HF model instance"
            )
        install(model, card)
        self.card = card
        self.hf_model = model
        if tokenizer is None:
            tokenizer = find_tokenizer(model)
        self.tokenizer = tokenizer
        # Plain attributes, not submodules: the HF modules are registered once, under ``hf_model``.
        self.__dict__["_layers"] = layers_of(model, card)
        self.__dict__["_final_norm"] = get_module(model, card.modules["final_norm"])
        self.__dict__["_unembed"] = get_module(model, card.modules["unembed"])
        self.__dict__["_embed"] = get_module(model, card.modules["embed"])
        self.cfg = make_config(
            model, card, len(self._layers), embed=self._embed, final_norm=self._final_norm,
            unembed=self._unembed, tokenizer=tokenizer,
        )  # fmt: skip
        self.blocks = nn.ModuleList(Namespace() for _ in range(len(self._layers)))
        table = build_hook_points(
            self, model, card, self._layers, embed=self._embed, final_norm=self._final_norm, unembed=self._unembed
        )
        self._canonical, self._aliases, self.resid_start = table.canonical, table.aliases, table.resid_start
        self.setup()

    def setup(self) -> None:
        """Name the TransformerLens hook points and build ``mod_dict`` / ``hook_dict``.

        Unlike ``HookedRootModule.setup`` this leaves the HF model's modules alone (their ``name``
        attributes and nnsight-rnn's hook names are not touched). ``hook_dict`` holds canonical
        names; ``mod_dict`` also holds aliases.
        """
        self.mod_dict = HookNames()
        self.hook_dict = HookNames()
        for name, module in self.named_modules():
            if name == "" or name == HF_PREFIX or name.startswith(HF_PREFIX + "."):
                continue
            if isinstance(module, TLHookPoint):
                module.name = name
                self.mod_dict[name] = module
                if getattr(module, "alias_of", None) is None:
                    self.hook_dict[name] = module
            elif isinstance(module, Namespace):
                self.mod_dict[name] = module
        order = {n: k for k, n in enumerate(self._canonical)}
        self.hook_dict = HookNames(sorted(self.hook_dict.items(), key=lambda kv: order.get(kv[0], len(order))))

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
