"""Configuration of RWKV-6 ("Finch") models, compatible with the ``config.json`` of the RWKV "-hf" hub repos."""

from __future__ import annotations

from typing import Any

from ..rwkv_common import RwkvConfigBase


class Rwkv56Config(RwkvConfigBase):
    """Hyper-parameters shared by RWKV-5 and RWKV-6 (the "-hf" repos' keys).

    Besides :class:`~nnsight_rnn.models.rwkv_common.RwkvConfigBase`'s (``vocab_size``, ``hidden_size``,
    ``num_hidden_layers``, ``group_norm_eps``, ...):

    Args:
        attention_hidden_size: time-mix width ``A`` (default ``hidden_size``).
        head_size: WKV head size ``N`` (64 in released models); ``A / N`` heads.
        head_size_divisor: kept from the "-hf" configs; the WKV GroupNorm eps is
            ``1e-5 * head_size_divisor**2`` (64e-5, BlinkDL's value) unless ``group_norm_eps`` is set.
        intermediate_size: channel-mix width (default ``int(3.5 * hidden_size) // 32 * 32``).
        layer_norm_epsilon: LayerNorm eps.
        rescale_every: accepted and ignored (the "-hf" models halve the residual in fp16 inference;
            nnsight-rnn never rescales, so residual hooks see the real stream).
    """

    def __init__(
        self,
        vocab_size: int = 65536,
        hidden_size: int = 768,
        num_hidden_layers: int = 12,
        attention_hidden_size: int | None = None,
        head_size: int = 64,
        head_size_divisor: int = 8,
        intermediate_size: int | None = None,
        layer_norm_epsilon: float = 1e-5,
        group_norm_eps: float | None = None,
        rescale_every: int = 0,
        **kwargs: Any,
    ) -> None:
        self.attention_hidden_size = attention_hidden_size if attention_hidden_size is not None else hidden_size
        if self.attention_hidden_size % head_size:
            raise ValueError(
                f"attention_hidden_size {self.attention_hidden_size} must be a multiple of head_size {head_size}"
            )
        self.head_size = head_size
        self.head_size_divisor = head_size_divisor
        self.intermediate_size = (
            intermediate_size if intermediate_size is not None else int(hidden_size * 3.5) // 32 * 32
        )
        self.layer_norm_epsilon = layer_norm_epsilon
        self.rescale_every = rescale_every
        super().__init__(
            vocab_size=vocab_size,
            hidden_size=hidden_size,
            num_hidden_layers=num_hidden_layers,
            group_norm_eps=group_norm_eps,
            **kwargs,
        )

    @property
    def num_heads(self) -> int:
        return self.attention_hidden_size // self.head_size

    @property
    def head_dim(self) -> int:
        return self.head_size

    @property
    def default_group_norm_eps(self) -> float:
        return 1e-5 * self.head_size_divisor**2


class Rwkv6Config(Rwkv56Config):
    """RWKV-6 hyper-parameters (``model_type = "rwkv6"``).

    Besides :class:`Rwkv56Config`'s: ``time_mix_extra_dim`` (rank of the data-dependent token-shift
    projection, default 32, 64 for ``hidden_size == 4096``) and ``time_decay_extra_dim`` (rank of the
    data-dependent decay projection, default 64, 128 for ``hidden_size == 4096``), the "-hf" rule.
    """

    model_type = "rwkv6"

    def __init__(self, time_mix_extra_dim: int | None = None, time_decay_extra_dim: int | None = None, **kwargs: Any):
        hidden = kwargs.get("hidden_size", 768)
        self.time_mix_extra_dim = time_mix_extra_dim or (64 if hidden == 4096 else 32)
        self.time_decay_extra_dim = time_decay_extra_dim or (128 if hidden == 4096 else 64)
        super().__init__(**kwargs)
