"""TransformerLens ``TransformerBridge`` helpers: boot an in-memory HF model offline.

``boot_bridge(hf_model)`` wraps an HF model instance in TransformerLens 4.x's
``TransformerBridge`` without touching the hub: it fills in what ``boot_transformers`` would
otherwise download (``config.architectures``, a tokenizer it can re-load with
``add_bos_token=True``). Used to run the same TransformerLens-style code on a transformer through
the bridge and on a recurrent model through :class:`~nnsight_rnn.tl.HookedLM`.
"""

from __future__ import annotations

import os
import tempfile
from typing import Any

import torch
from torch import nn


def bridge_tokenizer(tokenizer: Any = None) -> Any:
    """A tokenizer ``TransformerBridge`` accepts offline (it re-loads it from ``name_or_path``).

    ``tokenizer`` defaults to nnsight-rnn's byte tokenizer; it is saved to a temporary folder and
    loaded back from there, so ``init_kwargs["name_or_path"]`` points at local files.
    """
    from transformers import AutoTokenizer

    if tokenizer is None:
        from ..tokenizer import byte_tokenizer

        tokenizer = byte_tokenizer()
    if os.path.isdir(str(tokenizer.init_kwargs.get("name_or_path", ""))):
        return tokenizer
    folder = tempfile.mkdtemp(prefix="nnsight_rnn_tok_")
    tokenizer.save_pretrained(folder)
    return AutoTokenizer.from_pretrained(folder)


def boot_bridge(hf_model: nn.Module, tokenizer: Any = None, device: str = "cpu", **kwargs: Any) -> Any:
    """``TransformerBridge.boot_transformers`` on an in-memory HF model, offline.

    The model is used as is (TransformerLens wraps it; it does not copy the weights). Its config
    gets ``architectures = [class name]`` if it has none (configs built in memory have none; the
    bridge picks its adapter from that list).
    """
    from transformer_lens.model_bridge import TransformerBridge

    if not getattr(hf_model.config, "architectures", None):
        hf_model.config.architectures = [type(hf_model).__name__]
    name = getattr(hf_model.config, "_name_or_path", "") or f"local/{type(hf_model).__name__}"
    return TransformerBridge.boot_transformers(
        name, hf_model=hf_model, tokenizer=bridge_tokenizer(tokenizer), device=device, **kwargs
    )


# -- nnsight-rnn adapters for TransformerBridge ---------------------------------------------------------------
# One adapter per card with a ``[tl.bridge]`` table: a subclass of TransformerLens's native adapter for the
# card's HF class, built from the card (module paths, [tl] aliases, block layout); nothing per family here.


def _adapters() -> dict[str, type]:
    """Architecture name -> nnsight-rnn adapter class, one per card with ``[tl.bridge]`` (TransformerLens 4.x)."""
    from transformer_lens.factories.architecture_adapter_factory import ArchitectureAdapterFactory
    from transformer_lens.model_bridge.generalized_components.base import GeneralizedComponent
    from transformer_lens.model_bridge.generalized_components.opaque_block import OpaqueBlockBridge

    from ..cards import TL_BLOCK_HOOKS, all_cards
    from ..errors import UpstreamContractError
    from ..hooks import HookPoint as RNNHookPoint
    from ..surgery import install
    from ..upstream import versions_line
    from .bridging import BridgedHookPoint, OutputOf

    class HookableMixerBridge(GeneralizedComponent):
        """Wraps an nnsight-rnn hookable mixer (or RWKV channel-mix): ``hook_in`` / ``hook_out`` around its
        forward, plus one TransformerLens hook point per nnsight-rnn hook point, same name, bridged to it
        (computed only while hooked, every call: prefill, continuation, each decode step)."""

        def set_original_component(self, original_component: nn.Module) -> None:
            super().set_original_component(original_component)
            for name, point in original_component.named_children():
                if isinstance(point, RNNHookPoint) and name not in self._modules:
                    # Direct registration: add_module refuses names the wrapped module has (they are
                    # reachable through GeneralizedComponent's attribute delegation).
                    self._modules[name] = BridgedHookPoint(
                        OutputOf(point), pos_dim=point.pos_dim, kind=point.kind, expensive=point.expensive,
                        doc=point.doc, source=point,
                    )  # fmt: skip

        def forward(self, *args: Any, **kwargs: Any) -> Any:
            if args and isinstance(args[0], torch.Tensor):
                args = (self.hook_in(args[0]), *args[1:])
            elif isinstance(kwargs.get("hidden_states"), torch.Tensor):
                kwargs["hidden_states"] = self.hook_in(kwargs["hidden_states"])
            output = self.original_component(*args, **kwargs)
            if isinstance(output, tuple) and output and isinstance(output[0], torch.Tensor):
                return (self.hook_out(output[0]), *output[1:])
            return self.hook_out(output)

    def adapter(card: Any, native: type) -> type:
        bridge, modules = card.tl_bridge, card.modules
        # The card's [tl] aliases (relative to blocks.{i}) -> TransformerLens's hook_aliases convention.
        block_aliases = {alias: TL_BLOCK_HOOKS[key] for key, names in card.tl_aliases.items() for alias in names}
        if bridge.block == "ssm":  # aliases that live inside the mixer component ("mixer.hook_ssm_out")
            mixer_aliases = {
                a.split(".", 1)[1]: t.split(".", 1)[1] for a, t in block_aliases.items() if a.startswith("mixer.")
            }
            mixer_cls = type("SSMHookableMixerBridge", (HookableMixerBridge,), {"hook_aliases": mixer_aliases})

            def customise(mapping: dict[str, Any]) -> None:
                mapping["blocks"].submodules["mixer"] = mixer_cls(name=modules["mixer"])
        else:  # "opaque": the block returns a tensor; its mixer and MLP are components inside it
            aliases = {"hook_resid_pre": "hook_in", "hook_resid_post": "hook_out"}
            aliases |= {f"hook_{key}": target for key, target in TL_BLOCK_HOOKS.items()} | block_aliases
            block_cls = type("HookableBlockBridge", (OpaqueBlockBridge,), {"hook_aliases": aliases})

            def customise(mapping: dict[str, Any]) -> None:
                mapping["blocks"] = block_cls(
                    name=modules["layers"],
                    submodules={"mixer": HookableMixerBridge(name=modules["mixer"]),
                                "mlp": HookableMixerBridge(name=modules["mlp"])},
                )  # fmt: skip

        def __init__(self: Any, cfg: Any) -> None:
            native.__init__(self, cfg)
            customise(self.component_mapping)

        def prepare_model(self: Any, hf_model: Any) -> None:
            native.prepare_model(self, hf_model)
            install(hf_model, card)

        doc = (f"TransformerLens's {native.__name__} with nnsight-rnn's {card.family!r} card: its hookable mixer "
               "(state hooks without eager_scan / use_cache=False, firing in prefill and every generation step).")  # fmt: skip
        return type(
            f"NnsightRnn{native.__name__}",
            (native,),
            {"__init__": __init__, "prepare_model": prepare_model, "__doc__": doc},
        )

    adapters = {}
    for card in all_cards().values():
        if card.tl_bridge is None:
            continue
        arch = card.tl_bridge.architecture
        native = _REPLACED.get(arch) or ArchitectureAdapterFactory._adapters.get(arch)
        if native is None or getattr(native, "_nnsight_rnn", False):
            raise UpstreamContractError(
                f"TransformerLens has no native TransformerBridge adapter for {arch!r} (the {card.family!r} card's "
                f"[tl.bridge] architecture); nnsight-rnn's adapter subclasses it. Installed: {versions_line()}."
            )
        adapters[arch] = adapter(card, native)
    return adapters


_REPLACED: dict[str, Any] = {}


def register_bridge_adapters() -> dict[str, type]:
    """Make ``TransformerBridge.boot_transformers`` use nnsight-rnn for every card with ``[tl.bridge]``.

    Replaces TransformerLens's native adapters (``ArchitectureAdapterFactory.register_adapter``);
    :func:`unregister_bridge_adapters` puts them back. Returns architecture name -> adapter class.
    A bridge booted afterwards hooks the HF model in place (nnsight-rnn mixers, same parameters)
    and exposes ``blocks.{i}.mixer.hook_*`` for every nnsight-rnn hook point of the mixer.
    """
    from transformer_lens.factories.architecture_adapter_factory import ArchitectureAdapterFactory

    adapters = _adapters()
    for arch, cls in adapters.items():
        current = ArchitectureAdapterFactory._adapters.get(arch)
        if arch not in _REPLACED and current is not None and not getattr(current, "_nnsight_rnn", False):
            _REPLACED[arch] = current
        cls._nnsight_rnn = True  # type: ignore[attr-defined]
        ArchitectureAdapterFactory.register_adapter(arch, cls)
    return adapters


def unregister_bridge_adapters() -> None:
    """Restore TransformerLens's native adapters replaced by :func:`register_bridge_adapters`."""
    from transformer_lens.factories.architecture_adapter_factory import ArchitectureAdapterFactory

    for arch, cls in _REPLACED.items():
        ArchitectureAdapterFactory.register_adapter(arch, cls)
    _REPLACED.clear()
