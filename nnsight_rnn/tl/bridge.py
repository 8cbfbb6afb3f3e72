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


def _adapters() -> dict[str, type]:
    """Build the adapter classes (TransformerLens 4.x only; imported lazily)."""
    from transformer_lens.model_bridge.generalized_components import SSMBlockBridge
    from transformer_lens.model_bridge.generalized_components.base import GeneralizedComponent
    from transformer_lens.model_bridge.generalized_components.opaque_block import OpaqueBlockBridge
    from transformer_lens.model_bridge.supported_architectures.falcon_mamba import FalconMambaArchitectureAdapter
    from transformer_lens.model_bridge.supported_architectures.mamba import MambaArchitectureAdapter
    from transformer_lens.model_bridge.supported_architectures.mamba2 import Mamba2ArchitectureAdapter
    from transformer_lens.model_bridge.supported_architectures.rwkv import RwkvArchitectureAdapter

    from ..hooks import HookPoint as RNNHookPoint
    from ..surgery import install
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

    class SSMHookableMixerBridge(HookableMixerBridge):
        hook_aliases = {"hook_ssm_out": "hook_out"}  # noqa: RUF012  (TransformerLens's class-level convention)

    def _swap_mixer(mapping: dict[str, Any]) -> None:
        blocks = mapping["blocks"]
        blocks.submodules["mixer"] = SSMHookableMixerBridge(name="mixer")

    class _InstallMixin:
        def prepare_model(self, hf_model: Any) -> None:
            super().prepare_model(hf_model)  # type: ignore[misc]
            install(hf_model)

    class NnsightRnnMambaAdapter(_InstallMixin, MambaArchitectureAdapter):
        """TransformerLens's Mamba adapter with nnsight-rnn's hookable mixer: state hooks without
        ``eager_scan`` / ``use_cache=False``, firing in prefill and every generation step."""

        def __init__(self, cfg: Any) -> None:
            super().__init__(cfg)
            _swap_mixer(self.component_mapping)

    class NnsightRnnFalconMambaAdapter(_InstallMixin, FalconMambaArchitectureAdapter):
        def __init__(self, cfg: Any) -> None:
            super().__init__(cfg)
            _swap_mixer(self.component_mapping)

    class NnsightRnnMamba2Adapter(_InstallMixin, Mamba2ArchitectureAdapter):
        def __init__(self, cfg: Any) -> None:
            super().__init__(cfg)
            _swap_mixer(self.component_mapping)

    class RwkvBlockBridge(OpaqueBlockBridge):
        """A patched RWKV-4 block (returns a tensor): residual hooks plus mixer / MLP aliases."""

        hook_aliases = {  # noqa: RUF012
            "hook_resid_pre": "hook_in",
            "hook_resid_post": "hook_out",
            "hook_mixer_in": "mixer.hook_in",
            "hook_mixer_out": "mixer.hook_out",
            "hook_mlp_in": "mlp.hook_in",
            "hook_mlp_out": "mlp.hook_out",
            "hook_time_mix_in": "mixer.hook_in",
            "hook_time_mix_out": "mixer.hook_out",
            "hook_channel_mix_in": "mlp.hook_in",
            "hook_channel_mix_out": "mlp.hook_out",
        }

    class NnsightRnnRwkvAdapter(_InstallMixin, RwkvArchitectureAdapter):
        """RWKV-4 with nnsight-rnn's hookable time-mix (``blocks.{i}.mixer``) and channel-mix
        (``blocks.{i}.mlp``): WKV state hooks (TransformerLens's own RWKV adapter has none), unscaled
        residual in eval mode, attention_mask respected."""

        def __init__(self, cfg: Any) -> None:
            super().__init__(cfg)
            self.component_mapping["blocks"] = RwkvBlockBridge(
                name="rwkv.blocks",
                submodules={
                    "mixer": HookableMixerBridge(name="attention"),
                    "mlp": HookableMixerBridge(name="feed_forward"),
                },
            )

    del SSMBlockBridge  # imported to fail early if TransformerLens's layout changes
    return {
        "MambaForCausalLM": NnsightRnnMambaAdapter,
        "FalconMambaForCausalLM": NnsightRnnFalconMambaAdapter,
        "Mamba2ForCausalLM": NnsightRnnMamba2Adapter,
        "RwkvForCausalLM": NnsightRnnRwkvAdapter,
    }


_REPLACED: dict[str, Any] = {}


def register_bridge_adapters() -> dict[str, type]:
    """Make ``TransformerBridge.boot_transformers`` use nnsight-rnn for Mamba, FalconMamba, Mamba-2, RWKV-4.

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
