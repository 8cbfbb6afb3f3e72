"""What the RWKV-5/6/7 models share: config keys, the backbone and language-model classes, and the
registration of a version.

A version (:mod:`~nnsight_rnn.models.rwkv6.modeling`, :mod:`~nnsight_rnn.models.rwkv7.modeling`) declares
its blocks and its module names (the ``state_dict`` layout of its hub folders). Its token mixers are
hookable mixers under :mod:`nnsight_rnn.mixers` (``rwkv5``, ``rwkv6``, ``rwkv7``, sharing
:mod:`~nnsight_rnn.mixers.wkv_time_mix`; the channel-mix and token shift are
:mod:`nnsight_rnn.mixers.token_shift`'s, shared with RWKV-4). The carried state (:class:`RwkvCache`, its
slots and shapes) is :mod:`nnsight_rnn.mixers.rwkv_cache`.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn
from transformers import GenerationMixin, PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import BaseModelOutputWithPast, CausalLMOutputWithPast

from ..mixers.rwkv_cache import LayerCall, RwkvCache, cache_layers, call_mask, one_cache
from ..upstream import OUTPUT_CACHE_FIELD, cache_argument, output_cache


class RwkvConfigBase(PretrainedConfig):
    """The keys every RWKV-5/6/7 config has; a version's config adds its own and sets ``model_type``.

    Args:
        vocab_size: token count (RWKV World: 65536).
        hidden_size: residual width ``d``.
        num_hidden_layers: blocks.
        group_norm_eps: eps of the per-head GroupNorm on the WKV output; ``None``: the version's
            default (``default_group_norm_eps``). :attr:`wkv_group_norm_eps` is the one used.
        initializer_range, use_cache, tie_word_embeddings: transformers' keys.
        pad_token_id, bos_token_id, eos_token_id: 0 (the World tokenizer's end of text).
    """

    keys_to_ignore_at_inference: ClassVar[list[str]] = ["past_key_values"]

    def __init__(
        self,
        vocab_size: int = 65536,
        hidden_size: int = 768,
        num_hidden_layers: int = 12,
        group_norm_eps: float | None = None,
        initializer_range: float = 0.02,
        use_cache: bool = True,
        pad_token_id: int | None = 0,
        bos_token_id: int | None = 0,
        eos_token_id: int | None = 0,
        tie_word_embeddings: bool = False,
        **kwargs: Any,
    ) -> None:
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.num_hidden_layers = num_hidden_layers
        self.group_norm_eps = group_norm_eps
        self.initializer_range = initializer_range
        self.use_cache = use_cache
        super().__init__(
            pad_token_id=pad_token_id,
            bos_token_id=bos_token_id,
            eos_token_id=eos_token_id,
            tie_word_embeddings=tie_word_embeddings,
            **kwargs,
        )

    @property
    def default_group_norm_eps(self) -> float:
        raise NotImplementedError

    @property
    def wkv_group_norm_eps(self) -> float:
        """The GroupNorm eps actually used (see ``group_norm_eps``)."""
        return self.group_norm_eps if self.group_norm_eps is not None else self.default_group_norm_eps


class RwkvPreTrainedBase(PreTrainedModel):
    """The base of nnsight-rnn's RWKV-5/6/7 models (transformers' ``RwkvPreTrainedModel`` is RWKV-4's).

    A version sets ``config_class``, ``base_model_prefix`` (the backbone's attribute in its
    language model), ``_no_split_modules`` and its ``_init_weights``.
    """

    main_input_name = "input_ids"
    supports_gradient_checkpointing = False
    _is_stateful = True


class RwkvBackbone(RwkvPreTrainedBase):
    """Embedding (``embeddings``), blocks, final norm; ``past_key_values`` is an :class:`RwkvCache` when ``use_cache``.

    A version builds the modules in ``__init__`` and names the block list and the final norm
    (``blocks_attr``, ``final_norm_attr``); each block is called ``block(hidden, call, mask)``
    (:meth:`_call_block`) with its :class:`LayerCall`.

    ``hidden_states`` (``output_hidden_states``) follow the transformer convention:
    ``[embeddings, out_0, ..., out_{n-2}, final_norm(out_{n-1})]``.
    """

    blocks_attr: ClassVar[str] = ""
    final_norm_attr: ClassVar[str] = ""

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embeddings

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.embeddings = value

    def _call_block(
        self, i: int, block: nn.Module, hidden: torch.Tensor, calls: list[LayerCall], mask: torch.Tensor | None
    ) -> torch.Tensor:
        """Block ``i``'s forward: ``[b, L, d]`` -> ``[b, L, d]``, reading and writing ``calls[i]``."""
        return block(hidden, calls[i], mask)

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        past_key_values: RwkvCache | None = None,
        use_cache: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs: Any,
    ) -> tuple | BaseModelOutputWithPast:
        cfg = self.config
        past_key_values = one_cache(cache_argument(past_key_values, kwargs))  # `cache` from generate >= 5.24 (C5)
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of input_ids and inputs_embeds")
        if inputs_embeds is None:
            inputs_embeds = self.embeddings(input_ids)
        batch, length, _ = inputs_embeds.shape
        use_cache = use_cache if use_cache is not None else (cfg.use_cache and not self.training)
        output_hidden_states = output_hidden_states if output_hidden_states is not None else cfg.output_hidden_states
        return_dict = return_dict if return_dict is not None else cfg.return_dict
        blocks = getattr(self, self.blocks_attr)
        mask = call_mask(attention_mask, length)
        calls = cache_layers(past_key_values, len(blocks), batch)

        hidden = inputs_embeds
        all_hidden: tuple[torch.Tensor, ...] | None = (hidden,) if output_hidden_states else None
        for i, block in enumerate(blocks):
            hidden = self._call_block(i, block, hidden, calls, mask)
            if all_hidden is not None and i + 1 < len(blocks):
                all_hidden += (hidden,)
        hidden = getattr(self, self.final_norm_attr)(hidden)
        if all_hidden is not None:
            all_hidden += (hidden,)
        cache = None
        if use_cache or past_key_values is not None:
            seen = past_key_values.seen_tokens if isinstance(past_key_values, RwkvCache) else 0
            cache = RwkvCache([c.outputs for c in calls], seen + length)
        if not return_dict:
            return tuple(x for x in (hidden, cache, all_hidden) if x is not None)
        return BaseModelOutputWithPast(
            last_hidden_state=hidden, hidden_states=all_hidden, **{OUTPUT_CACHE_FIELD: cache}
        )


class RwkvCausalLM(RwkvPreTrainedBase, GenerationMixin):
    """Language model: the backbone (``backbone_class``, under ``base_model_prefix``) and the head (``head_attr``).

    ``generate`` carries an :class:`RwkvCache`. With ``labels``, the loss is the shifted
    cross-entropy; padded positions (``attention_mask == 0``) are ignored by it.
    """

    backbone_class: ClassVar[type[RwkvBackbone]] = RwkvBackbone
    head_attr: ClassVar[str] = ""

    def __init__(self, config: RwkvConfigBase) -> None:
        super().__init__(config)
        setattr(self, self.base_model_prefix, self.backbone_class(config))
        setattr(self, self.head_attr, nn.Linear(config.hidden_size, config.vocab_size, bias=False))
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return getattr(self, self.base_model_prefix).embeddings

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        getattr(self, self.base_model_prefix).embeddings = value

    def get_output_embeddings(self) -> nn.Linear:
        return getattr(self, self.head_attr)

    def set_output_embeddings(self, value: nn.Linear) -> None:
        setattr(self, self.head_attr, value)

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        past_key_values: RwkvCache | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        logits_to_keep: int = 0,
        **kwargs: Any,
    ) -> tuple | CausalLMOutputWithPast:
        past_key_values = one_cache(cache_argument(past_key_values, kwargs))  # `cache` from generate >= 5.24 (C5)
        out = getattr(self, self.base_model_prefix)(
            input_ids=input_ids, attention_mask=attention_mask, inputs_embeds=inputs_embeds,
            past_key_values=past_key_values, use_cache=use_cache, output_hidden_states=output_hidden_states,
            return_dict=True,
        )  # fmt: skip
        hidden = out.last_hidden_state
        if logits_to_keep:
            hidden = hidden[:, -logits_to_keep:]
        logits = self.get_output_embeddings()(hidden)
        loss = None
        if labels is not None:
            targets = labels[:, 1:]
            if attention_mask is not None:
                targets = targets.masked_fill(attention_mask[:, -labels.shape[1] :][:, 1:] == 0, -100)
            loss = F.cross_entropy(
                logits[:, :-1].reshape(-1, logits.shape[-1]).float(), targets.reshape(-1), ignore_index=-100
            )
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        if not return_dict:
            return tuple(x for x in (loss, logits, output_cache(out), out.hidden_states) if x is not None)
        return CausalLMOutputWithPast(
            loss=loss, logits=logits, hidden_states=out.hidden_states, **{OUTPUT_CACHE_FIELD: output_cache(out)}
        )


# --- registration: nnsight-rnn state format "rwkv_cache", transformers' Auto classes ------------------------


def register_family(
    config_cls: type[RwkvConfigBase], backbone_cls: type[RwkvBackbone], lm_cls: type[RwkvCausalLM], time_mix_cls: type
) -> None:
    """Register one RWKV-5/6/7 version with transformers and nnsight-rnn (idempotent).

    - ``AutoConfig`` / ``AutoModel`` / ``AutoModelForCausalLM`` for ``config_cls.model_type`` (replacing
      another package's registration of the type: the hub folders of that type have our ``state_dict``
      layout, so they load into our classes);
    - the mixer kind ``time_mix_cls.kind`` (the model's own time-mix: nothing is swapped), whose
      state format (:data:`RWKV_CACHE`, from :class:`WkvTimeMix`) converts the :class:`RwkvCache` <->
      :class:`~nnsight_rnn.state.RecurrentState` with slots ``att_shift`` [b, d], ``wkv`` [b, H, K, V]
      (fp32) and ``ffn_shift`` [b, d] per layer;
    - the RWKV World tokenizer for ``config_cls``.
    """
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

    from ..mixers import register_mixer_kind
    from ..rwkv_tokenizer import register_tokenizer

    AutoConfig.register(config_cls.model_type, config_cls, exist_ok=True)
    AutoModel.register(config_cls, backbone_cls, exist_ok=True)
    AutoModelForCausalLM.register(config_cls, lm_cls, exist_ok=True)
    register_mixer_kind(time_mix_cls)
    register_tokenizer([config_cls])
