"""RWKV-7 ("Goose"): registers nnsight-rnn's hookable RWKV-7 with transformers and nnsight-rnn.

``model_type = "rwkv7"`` (fla's and rwkv7-hf's folders use the same type and ``state_dict`` layout, so they
load into our class), the mixer kind ``rwkv7`` (the model's own :class:`Rwkv7TimeMix`: nothing is swapped),
the state format ``rwkv_cache`` (``past_key_values``, an :class:`RwkvCache` <->
:class:`~nnsight_rnn.state.RecurrentState` with slots ``att_shift`` [b, d], ``wkv`` [b, H, K, V] (fp32) and
``ffn_shift`` [b, d] per layer) and the World tokenizer: see :func:`nnsight_rnn.models.rwkv_common.register_family`.
"""

from __future__ import annotations

from ..models.rwkv7 import Rwkv7Config, Rwkv7ForCausalLM, Rwkv7Model, Rwkv7TimeMix
from ..models.rwkv_common import register_family

register_family(Rwkv7Config, Rwkv7Model, Rwkv7ForCausalLM, Rwkv7TimeMix)
