"""Configuration of RWKV-7 ("Goose") models, compatible with fla's and rwkv7-hf's ``config.json``."""

from __future__ import annotations

from typing import Any

from ..rwkv_common import RwkvConfigBase


class Rwkv7Config(RwkvConfigBase):
    """RWKV-7 hyper-parameters (``model_type = "rwkv7"``).

    Besides :class:`~nnsight_rnn.models.rwkv_common.RwkvConfigBase`'s (``vocab_size``, ``hidden_size``,
    ``num_hidden_layers``, ...):

    Args:
        head_dim: WKV head size ``N`` (64 in every released model); ``num_heads`` defaults to
            ``hidden_size // head_dim``. The attention width is ``num_heads * head_dim``.
        intermediate_size: channel-mix width (default ``4 * hidden_size``).
        decay_low_rank_dim / a_low_rank_dim / v_low_rank_dim / gate_low_rank_dim: ranks of the
            low-rank projections producing the decay ``w``, in-context learning rate ``a``,
            value-residual mix ``v`` and output gate ``g``.
        norm_eps: LayerNorm eps.
        group_norm_eps: eps of the per-head GroupNorm on the WKV output. ``None``: fla's
            ``head_dim * norm_eps``; BlinkDL's code uses ``64e-5`` whatever the head size (equal
            for ``head_dim = 64``); checkpoints converted from ``.pth`` set it to ``64e-5``.
        Other keys of fla's / rwkv7-hf's configs (``attn_mode``, ``fuse_norm``, ``value_dim`` equal
        to the attention width, ...) are accepted and kept.
    """

    model_type = "rwkv7"

    def __init__(
        self,
        vocab_size: int = 65536,
        hidden_size: int = 768,
        num_hidden_layers: int = 12,
        head_dim: int | None = 64,
        num_heads: int | None = None,
        intermediate_size: int | None = None,
        hidden_ratio: float | None = 4.0,
        decay_low_rank_dim: int = 64,
        a_low_rank_dim: int = 64,
        v_low_rank_dim: int = 32,
        gate_low_rank_dim: int = 128,
        norm_eps: float = 1e-5,
        norm_bias: bool = True,
        group_norm_eps: float | None = None,
        **kwargs: Any,
    ) -> None:
        kwargs.pop("num_attention_heads", None)
        attention_hidden_size = kwargs.pop("attention_hidden_size", None)
        if num_heads is None and head_dim is None:
            raise ValueError("Rwkv7Config needs head_dim or num_heads")
        width = attention_hidden_size or (num_heads * head_dim if num_heads and head_dim else hidden_size)
        if num_heads is None:
            num_heads = width // head_dim
        if head_dim is None:
            head_dim = width // num_heads
        if num_heads * head_dim != width:
            raise ValueError(
                f"RWKV-7 attention width {width} must equal num_heads * head_dim = {num_heads} * {head_dim}"
            )
        value_dim = kwargs.pop("value_dim", None)
        values = value_dim if isinstance(value_dim, list) else [value_dim] if value_dim else []
        if any(int(v) != width for v in values):
            raise ValueError(
                f"value_dim {value_dim} differs from the attention width {width}: nnsight-rnn's RWKV-7 supports "
                "only value_dim == num_heads * head_dim (every released RWKV-7)"
            )
        self.head_dim = int(head_dim)
        self.num_heads = int(num_heads)
        self.attention_hidden_size = int(width)
        if intermediate_size is None:
            intermediate_size = int(hidden_size * (hidden_ratio or 4.0))
            intermediate_size = 32 * ((intermediate_size + 31) // 32) if hidden_ratio is None else intermediate_size
        self.intermediate_size = int(intermediate_size)
        self.hidden_ratio = hidden_ratio
        self.decay_low_rank_dim = decay_low_rank_dim
        self.a_low_rank_dim = a_low_rank_dim
        self.v_low_rank_dim = v_low_rank_dim
        self.gate_low_rank_dim = gate_low_rank_dim
        self.norm_eps = norm_eps
        self.norm_bias = norm_bias
        super().__init__(
            vocab_size=vocab_size,
            hidden_size=hidden_size,
            num_hidden_layers=num_hidden_layers,
            group_norm_eps=group_norm_eps,
            **kwargs,
        )

    @property
    def default_group_norm_eps(self) -> float:
        return self.head_dim * self.norm_eps
