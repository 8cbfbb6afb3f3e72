"""RWKV-5 ("Eagle", 5.2): registers nnsight-rnn's hookable RWKV-5 with transformers and nnsight-rnn.

``model_type = "rwkv5"`` (the RWKV "-hf" hub folders use the same type and ``state_dict`` layout, so they
load into our class), the mixer kind ``rwkv5``, the state format ``rwkv_cache`` and the World tokenizer:
see :func:`nnsight_rnn.models.rwkv_common.register_family`.
"""

from __future__ import annotations

from ..models.rwkv5 import Rwkv5Config, Rwkv5ForCausalLM, Rwkv5Model, Rwkv5TimeMix
from ..models.rwkv_common import register_family

register_family(Rwkv5Config, Rwkv5Model, Rwkv5ForCausalLM, Rwkv5TimeMix)
