"""What every hookable mixer shares: hook-point bookkeeping and the swap-in contract.

A hookable mixer is built from an original HF mixer module *by reference*: it adopts the
original's parameters and submodules under the same attribute names, so the model's
``state_dict`` and ``save_pretrained`` output are unchanged and a stock model can load them.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from ..hooks import HookPoint


class HookableMixer(nn.Module):
    """Base class. Subclasses set ``kind`` and define hook points in ``__init__``.

    Class attributes:
        kind: mixer kind name used by cards (``mixer_kind = "mamba1"``).
        adopted: attribute names taken over from the original module (parameters, buffers and
            submodules); the original's order is kept so ``state_dict`` keys keep their order.
        optional: adopted when present (variants of one family, e.g. FalconMamba's norms).
    """

    kind: ClassVar[str] = ""
    adopted: ClassVar[tuple[str, ...]] = ()
    optional: ClassVar[tuple[str, ...]] = ()

    def __init__(self, original: nn.Module, config: Any, layer_idx: int) -> None:
        super().__init__()
        self.config = config
        self.layer_idx = layer_idx
        wanted = set(self.adopted) | set(self.optional)
        for name in original._parameters:
            if name in wanted:
                setattr(self, name, original._parameters[name])
        for name in original._modules:
            if name in wanted:
                setattr(self, name, original._modules[name])
        for name, buf in original._buffers.items():
            if name in wanted:
                persistent = name not in original._non_persistent_buffers_set
                self.register_buffer(name, buf, persistent=persistent)
        missing = [n for n in self.adopted if not hasattr(self, n)]
        if missing:
            raise TypeError(f"{type(self).__name__} cannot adopt {type(original).__name__}: missing {missing}")

    @classmethod
    def from_original(cls, original: nn.Module, config: Any, layer_idx: int) -> HookableMixer:
        return cls(original, config, layer_idx)

    def hook_points(self) -> dict[str, HookPoint]:
        """This mixer's hook points by attribute name."""
        return {n: m for n, m in self._modules.items() if isinstance(m, HookPoint)}

    @staticmethod
    def state_slots(config: Any) -> dict[str, tuple[int, ...]]:
        """Carried-state tensors of one layer: name -> shape without the batch axis."""
        raise NotImplementedError

    #: Hook points whose values (with the carried state in) determine the per-position states:
    #: about 10x smaller than the states. See :func:`nnsight_rnn.capture.recompute_states`.
    scan_input_hooks: ClassVar[tuple[str, ...]] = ()

    def recompute_states(self, inputs: dict[str, torch.Tensor], positions: list[int] | None = None) -> torch.Tensor:
        """Per-position readout states from captured ``scan_input_hooks`` values (no model run)."""
        raise NotImplementedError(f"{type(self).__name__} cannot recompute states from its scan inputs")


def known(condition: torch.Tensor, unknown: bool) -> bool:
    """``bool(condition)``, or ``unknown`` when the value cannot be read.

    Under nnsight's ``model.scan`` (fake tensors) a data-dependent branch has no value; the
    callers pass the branch that is correct for every value (only slower), so shapes come out right.
    """
    try:
        return bool(condition)
    except Exception:  # torch's GuardOnDataDependentSymNode and kin: fake or meta tensors
        return unknown


def padding_mask(attention_mask: torch.Tensor | None, length: int) -> torch.Tensor | None:
    """The ``[batch, L]`` mask if it masks anything in this call, else None (the fast path)."""
    if attention_mask is None or attention_mask.dim() != 2 or attention_mask.shape[1] != length:
        return None
    if known(attention_mask.all(), unknown=False):
        return None
    return attention_mask
