"""What every hookable mixer shares: hook-point bookkeeping and the swap-in contract.

A hookable mixer is built from an original HF mixer module *by reference*: it adopts the
original's parameters and submodules under the same attribute names, so the model's
``state_dict`` and ``save_pretrained`` output are unchanged and a stock model can load them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import nn

from ..hooks import HookPoint

if TYPE_CHECKING:
    from ..state import RecurrentState

Slots = dict[str, torch.Tensor]  # one layer's carried state: slot name -> [batch, ...]


def identity_linear(slots: Slots) -> Slots:
    """Linear coordinates of a state whose recurrence is already linear in its slots (fp32 copies)."""
    return {k: v.float() for k, v in slots.items()}


def identity_add(slots: Slots, delta: Slots, alpha: float) -> Slots:
    """``slots + alpha * delta`` slot by slot; slots without a delta are copied unchanged."""
    return {k: v + (alpha * delta[k]).to(v.dtype) if k in delta else v.clone() for k, v in slots.items()}


@dataclass(frozen=True)
class StateLensSource:
    """Where a state lens reads a mixer's per-position state and how it becomes features.

    Attributes:
        hooks: hook point names under ``layers[i].mixer`` to capture.
        features: ``captured {hook name: value} -> [b, L, d_state]`` features.
        description: one line for docs and reports.
    """

    hooks: tuple[str, ...]
    features: Callable[[dict[str, torch.Tensor]], torch.Tensor]
    description: str


@dataclass(frozen=True)
class StateFormat:
    """What a mixer kind's carried state means to the rest of nnsight-rnn: the mixer owns it.

    Attributes:
        name: the HF storage it converts (``"linear_attention_cache"``, ``"rwkv4_state"``, ...).
        to_forward_kwargs: ``(hf_model, state) -> forward kwargs`` that start a run from ``state``
            (copies: one state can seed many runs).
        from_output: ``(hf_model, family, output) -> RecurrentState`` carried out of a run (copies).
        linear_name: name of the linear coordinates (recorded with saved state steering vectors).
        to_linear: one layer's slots -> coordinates in which the recurrence is linear (means and
            differences of states are taken there); may rename or drop slots.
        add_linear: ``(slots, delta, alpha)`` -> slots with ``alpha * delta`` (linear coordinates)
            added; returns the slots unchanged (bitwise) when ``alpha * delta`` is zero.
        lens: where a state lens reads the state, or None if the kind has none yet.

    Example (a mixer kind whose state is two linear slots, stored like Mamba's)::

        class MyMixer(HookableMixer):
            kind = "my_kind"
            state_format = dataclasses.replace(LINEAR_CACHE, lens=None)
    """

    name: str
    to_forward_kwargs: Callable[[nn.Module, RecurrentState], dict[str, Any]]
    from_output: Callable[[nn.Module, str, Any], RecurrentState]
    linear_name: str = "identity"
    to_linear: Callable[[Slots], Slots] = identity_linear
    add_linear: Callable[[Slots, Slots, float], Slots] = identity_add
    lens: StateLensSource | None = None


class HookableMixer(nn.Module):
    """Base class. Subclasses set ``kind`` and define hook points in ``__init__``.

    Class attributes:
        kind: mixer kind name used by cards (``mixer_kind = "mamba1"``).
        adopted: attribute names taken over from the original module (parameters, buffers and
            submodules); the original's order is kept so ``state_dict`` keys keep their order.
        optional: adopted when present (variants of one family, e.g. FalconMamba's norms).
        state_format: the :class:`StateFormat` of its carried state.
    """

    kind: ClassVar[str] = ""
    #: What the carried state means (storage, linear coordinates, state lens); None: no carried state.
    state_format: ClassVar[StateFormat | None] = None
    adopted: ClassVar[tuple[str, ...]] = ()
    optional: ClassVar[tuple[str, ...]] = ()
    #: Hook points through which a layer reads an earlier layer's activations other than the residual
    #: stream (RWKV-7's value residual ``hook_v_first``): patching a residual alone does not screen them off.
    cross_layer_hooks: ClassVar[tuple[str, ...]] = ()

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
