"""RWKV-6 ("Finch"): registers nnsight-rnn's hookable RWKV-6 with transformers and nnsight-rnn.

- ``AutoConfig`` / ``AutoModel`` / ``AutoModelForCausalLM`` for ``model_type = "rwkv6"`` (the RWKV "-hf" hub
  folders use the same type and ``state_dict`` layout, so they load into our class);
- the mixer kind ``rwkv6`` (the model's own time-mix: nothing is swapped);
- the state format ``rwkv_cache`` (see :mod:`nnsight_rnn.families.rwkv7`) and the World tokenizer.
"""

from __future__ import annotations

from ..mixers import register_mixer_kind
from ..models.rwkv6 import Rwkv6Config, Rwkv6ForCausalLM, Rwkv6Model, Rwkv6TimeMix
from ..models.rwkv_common import register_auto, register_cache_format
from ..rwkv_tokenizer import register_tokenizer

register_auto("rwkv6", Rwkv6Config, Rwkv6Model, Rwkv6ForCausalLM)
register_mixer_kind(Rwkv6TimeMix)
register_cache_format()
register_tokenizer([Rwkv6Config])
