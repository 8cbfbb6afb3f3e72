"""RWKV-4 (transformers ``RwkvForCausalLM``): the model-level patches its card names.

The card ``cards/rwkv4.toml`` names the patches below. After the time-mix swap (mixer kind
``rwkv4``) they fix what stock HF gets wrong for interpretability users:

``rwkv4_blocks``
    Changes the class of ``model.rwkv`` to :class:`HookedRwkvModel` and of every block to
    :class:`HookedRwkvBlock` (subclasses, same parameters, same ``state_dict``; the top-level
    class, hence ``save_pretrained``'s ``architectures``, is untouched) and swaps each
    ``feed_forward`` for the hookable channel-mix. Then:

    - a block returns a plain ``[batch, pos, d_model]`` tensor (``layers[i].output``); the
      carried state is threaded by the model as one :class:`LayerState` per layer, never
      written into tensors in place (the state a caller passes in is not mutated, autograd
      runs through the carried state, gradient checkpointing recomputes blocks exactly);
    - ``attention_mask`` is respected (stock HF ignores it; ``RwkvForCausalLM.forward`` does not
      even pass it on, so a forward pre-hook on the top-level model hands it to ``model.rwkv``):
      padded positions leave every state untouched, each row of a padded batch equals the
      row alone;
    - one-token steps with batch > 1 are right (stock broadcasts them to ``(B, B, V)`` logits),
      so batched ``generate`` works.

``rwkv4_no_rescale``
    Stock HF divides two weights per block in place and halves the residual every
    ``rescale_every`` blocks when it runs in eval mode, so residual hooks would see values scaled
    by ``2^-k``. This patch undoes a rescaling already applied (multiplying by the same powers of
    2, exact) and the patched model never rescales: every residual hook sees the unscaled stream,
    in train and eval mode alike, and ``save_pretrained`` writes unscaled weights. Logits equal
    stock HF in train mode to fp32 rounding; in eval mode stock differs from its own train mode
    (and from us) by its LayerNorm ``eps`` acting ``4^k`` times larger on the scaled stream
    (observed 5e-4 on logits of size ~2 on a tiny random model with unit-variance embeddings, where
    4^k reaches 64; exactly 0 with every LayerNorm eps = 0).

The attention's output projection is named ``output`` (kept for the ``state_dict``), which is
also nnsight's name for a module's output; the card renames it ``out_proj`` in nnsight
(``layers[i].mixer.out_proj``), see ``[rename]`` in the card.

State format ``rwkv4_state`` (declared by the mixer, :data:`nnsight_rnn.mixers.rwkv4.RWKV4_STATE`): HF's list of five ``(batch, d, n_layers)`` tensors
``[ffn_shift, att_shift, num, den, max]`` (the last three ``(batch, d_att, n_layers)`` fp32)
<-> :class:`~nnsight_rnn.state.RecurrentState` with slots ``att_shift``, ``ffn_shift`` ``[b, d]``
and ``num``, ``den``, ``max`` ``[b, d_att]`` per layer.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
from torch import nn
from transformers.models.rwkv.modeling_rwkv import RwkvBlock, RwkvModel, RwkvOutput

from ..mixers.rwkv4 import HF_SLOTS, HookableRwkv4ChannelMix
from ..mixers.token_shift import LayerState
from ..scans.wkv4 import EMPTY_MAX
from .registry import register_patch

# nnsight warns once per block that the time-mix has a child named `output` (served as `E_output`);
# the card renames it `out_proj`, so the warning only repeats what the card documents.
warnings.filterwarnings(
    "ignore", message=r"Module '.*\.attention' has a submodule named 'output'", category=UserWarning
)

_MASK_ATTR = "_nnsight_rnn_attention_mask"


class HookedRwkvBlock(RwkvBlock):
    """An RWKV-4 block that returns its output hidden state as one ``[b, L, d]`` tensor.

    ``forward(hidden [b, L, d], state: LayerState | None, attention_mask [b, L] | None) -> [b, L, d]``:
    ``state`` carries this layer's slots in (read) and out (written) of the time-mix and channel-mix.
    Block 0 applies ``pre_ln`` to its input first (as stock does).
    """

    def forward(  # type: ignore[override]
        self,
        hidden: torch.Tensor,
        state: LayerState | None = None,
        attention_mask: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> torch.Tensor:
        if self.layer_id == 0:
            hidden = self.pre_ln(hidden)
        attention = self.attention(self.ln1(hidden), state, attention_mask)
        if state is not None:
            state.attention = attention
        hidden = hidden + attention
        return hidden + self.feed_forward(self.ln2(hidden), state, attention_mask)


class HookedRwkvModel(RwkvModel):
    """``RwkvModel`` that never rescales, respects ``attention_mask`` and threads the state functionally.

    Same signature and outputs as stock (``RwkvOutput`` with ``state`` a fresh list of five tensors
    when ``use_cache`` or a ``state`` was given; the given list is not mutated). ``hidden_states``
    are ``[out_0 .. out_{n-1}, ln_out(out_{n-1})]``, unscaled.
    """

    def _rescale_layers(self) -> None:  # never rescale (see rwkv4_no_rescale)
        return

    def forward(  # type: ignore[override]
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        state: list[torch.Tensor] | None = None,
        use_cache: bool | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs: Any,
    ) -> tuple | RwkvOutput:
        config = self.config
        if attention_mask is None:
            attention_mask = self.__dict__.get(_MASK_ATTR)
        output_attentions = output_attentions if output_attentions is not None else config.output_attentions
        output_hidden_states = output_hidden_states if output_hidden_states is not None else config.output_hidden_states
        use_cache = use_cache if use_cache is not None else (config.use_cache if not self.training else False)
        return_dict = return_dict if return_dict is not None else config.return_dict
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of input_ids and inputs_embeds")
        if inputs_embeds is None:
            inputs_embeds = self.embeddings(input_ids)
        n_layers = len(self.blocks)
        layer_states = _split_hf_state(state, n_layers)
        return_state = use_cache or state is not None

        hidden = inputs_embeds
        all_hidden: tuple[torch.Tensor, ...] | None = () if output_hidden_states else None
        all_attentions: tuple[torch.Tensor, ...] | None = () if output_attentions else None
        for block, layer_state in zip(self.blocks, layer_states, strict=True):
            hidden = block(hidden, layer_state, attention_mask)
            if all_hidden is not None:
                all_hidden += (hidden,)
            if all_attentions is not None:
                all_attentions += (layer_state.attention,)
            layer_state.attention = None
        hidden = self.ln_out(hidden)
        if all_hidden is not None:
            all_hidden += (hidden,)
        new_state = _join_hf_state(layer_states) if return_state else None

        if not return_dict:
            return tuple(x for x in (hidden, new_state, all_hidden, all_attentions) if x is not None)
        return RwkvOutput(
            last_hidden_state=hidden, state=new_state, hidden_states=all_hidden, attentions=all_attentions
        )


def _split_hf_state(state: list[torch.Tensor] | None, n_layers: int) -> list[LayerState]:
    """HF's five ``(b, d, n_layers)`` tensors -> one :class:`LayerState` per layer (views; never written into)."""
    if state is None:
        return [LayerState() for _ in range(n_layers)]
    if len(state) != 5 or any(s.dim() != 3 or s.shape[-1] != n_layers for s in state):
        shapes = [tuple(s.shape) for s in state]
        raise ValueError(
            f"RWKV state must be a list of 5 tensors [batch, d, n_layers={n_layers}] "
            f"(ffn_shift, att_shift, num, den, max); got shapes {shapes}"
        )
    return [
        LayerState({name: tensor[:, :, i] for name, tensor in zip(HF_SLOTS, state, strict=True)})
        for i in range(n_layers)
    ]


def _join_hf_state(layer_states: list[LayerState]) -> list[torch.Tensor]:
    """The state carried out of each layer -> HF's five ``(b, d, n_layers)`` tensors (fresh tensors).

    A block that did not run (nnsight's ``layers[i].skip(...)``) carries its state through
    unchanged: what came in, or the empty state at a fresh start.
    """
    template = next((layer.outputs for layer in layer_states if len(layer.outputs) == len(HF_SLOTS)), None)
    if template is None:
        raise ValueError("no RWKV-4 block ran, so there is no state to return")
    for layer in layer_states:
        if len(layer.outputs) < len(HF_SLOTS):
            layer.outputs = {name: layer.inputs.get(name, _empty(name, template[name])) for name in HF_SLOTS}
    return [torch.stack([layer.outputs[name] for layer in layer_states], dim=-1) for name in HF_SLOTS]


def _empty(slot: str, like: torch.Tensor) -> torch.Tensor:
    """A slot of the empty state (fresh start), shaped like ``like`` ``[b, d]``."""
    if slot == "max":
        return torch.full_like(like, EMPTY_MAX)
    return torch.zeros_like(like)


def _capture_attention_mask(module: nn.Module, args: tuple, kwargs: dict[str, Any]) -> None:
    """Forward pre-hook on the top-level model: hand ``attention_mask`` to ``model.rwkv``.

    ``RwkvForCausalLM.forward`` takes ``attention_mask`` and drops it; this stores it where
    :class:`HookedRwkvModel` looks when it is called without one.
    """
    mask = kwargs.get("attention_mask", args[1] if len(args) > 1 else None)
    module.rwkv.__dict__[_MASK_ATTR] = mask


def _release_attention_mask(module: nn.Module, args: tuple, kwargs: dict[str, Any], output: Any) -> None:
    module.rwkv.__dict__.pop(_MASK_ATTR, None)


@register_patch("rwkv4_blocks")
def patch_blocks(model: nn.Module) -> None:
    """Blocks return tensors, the state is threaded functionally, padding and batched decode are exact."""
    base = model.rwkv if hasattr(model, "rwkv") else model
    if not isinstance(base, RwkvModel):
        raise TypeError(f"rwkv4_blocks patches transformers' RwkvModel; got {type(base).__name__}")
    if not isinstance(base, HookedRwkvModel):
        base.__class__ = HookedRwkvModel
    for idx, block in enumerate(base.blocks):
        if not isinstance(block, HookedRwkvBlock):
            block.__class__ = HookedRwkvBlock
        if not isinstance(block.feed_forward, HookableRwkv4ChannelMix):
            block.feed_forward = HookableRwkv4ChannelMix(block.feed_forward, model.config, idx)
    if base is not model and not getattr(model, "_nnsight_rnn_mask_hooks", False):
        model.register_forward_pre_hook(_capture_attention_mask, with_kwargs=True)
        model.register_forward_hook(_release_attention_mask, with_kwargs=True, always_call=True)
        model._nnsight_rnn_mask_hooks = True


@register_patch("rwkv4_no_rescale")
def patch_no_rescale(model: nn.Module) -> None:
    """Undo stock's in-place eval-mode rescaling if it happened; :class:`HookedRwkvModel` never rescales."""
    base = model.rwkv if hasattr(model, "rwkv") else model
    if not isinstance(base, HookedRwkvModel):
        raise TypeError("the rwkv4_no_rescale patch needs rwkv4_blocks first (list it earlier in the card)")
    every = base.config.rescale_every
    if base.layers_are_rescaled and every > 0:
        with torch.no_grad():
            for block_id, block in enumerate(base.blocks):
                factor = 2 ** int(block_id // every)
                block.attention.output.weight.mul_(factor)
                block.feed_forward.value.weight.mul_(factor)
    base.layers_are_rescaled = False
