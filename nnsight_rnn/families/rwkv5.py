"""RWKV-5 ("Eagle", 5.2): registers nnsight-rnn's hookable RWKV-5 with transformers and nnsight-rnn.

- ``AutoConfig`` / ``AutoModel`` / ``AutoModelForCausalLM`` for ``model_type = "rwkv5"`` (the RWKV "-hf" hub
  folders use the same type and ``state_dict`` layout, so they load into our class);
- the mixer kind ``rwkv5`` (the model's own time-mix: nothing is swapped);
- the state format ``rwkv_cache`` (see :mod:`nnsight_rnn.families.rwkv7`) and the World tokenizer.
"""

from __future__ import annotations

from ..mixers import register_mixer_kind
from ..models.rwkv5 import Rwkv5Config, Rwkv5ForCausalLM, Rwkv5Model, Rwkv5TimeMix
from ..models.rwkv_common import register_auto, register_cache_format
from ..rwkv_tokenizer import register_tokenizer

register_auto("rwkv5", Rwkv5Config, Rwkv5Model, Rwkv5ForCausalLM)
register_mixer_kind(Rwkv5TimeMix)
register_cache_format()
register_tokenizer([Rwkv5Config])
