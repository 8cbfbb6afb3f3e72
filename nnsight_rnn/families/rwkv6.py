"""RWKV-6 ("Finch"): registers nnsight-rnn's hookable RWKV-6 with transformers and nnsight-rnn.

``model_type = "rwkv6"`` (the RWKV "-hf" hub folders use the same type and ``state_dict`` layout, so they
load into our class), the mixer kind ``rwkv6``, the state format ``rwkv_cache`` and the World tokenizer:
see :func:`nnsight_rnn.models.rwkv_common.register_family`.
"""

from __future__ import annotations

from ..models.rwkv6 import Rwkv6Config, Rwkv6ForCausalLM, Rwkv6Model, Rwkv6TimeMix
from ..models.rwkv_common import register_family

register_family(Rwkv6Config, Rwkv6Model, Rwkv6ForCausalLM, Rwkv6TimeMix)
