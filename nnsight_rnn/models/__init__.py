"""Recurrent models that transformers does not ship, written hookable from the start (RWKV-5/6/7).

Each family is an HF-compatible ``PreTrainedModel`` (config, ``from_pretrained`` /
``save_pretrained``, ``generate`` with a recurrent cache) in plain torch, registered with
transformers' Auto classes when ``nnsight_rnn`` is imported, so ``nnsight_rnn.load(folder)``
and ``AutoModelForCausalLM.from_pretrained(folder)`` find them. Their token mixers are
:class:`~nnsight_rnn.mixers.base.HookableMixer` subclasses: the card's mixer swap leaves them
in place.
"""

from ..mixers.rwkv_cache import RwkvCache
from .blinkdl import blinkdl_version, convert_blinkdl, load_blinkdl, save_blinkdl
from .rwkv5 import Rwkv5Config, Rwkv5ForCausalLM, Rwkv5Model, Rwkv5TimeMix
from .rwkv6 import Rwkv6Config, Rwkv6ForCausalLM, Rwkv6Model, Rwkv6TimeMix
from .rwkv7 import Rwkv7Config, Rwkv7ForCausalLM, Rwkv7Model, Rwkv7TimeMix
from .rwkv_common import register_family

# With transformers' Auto classes (model types rwkv5 / rwkv6 / rwkv7), as mixer kinds, with the World tokenizer.
register_family(Rwkv5Config, Rwkv5Model, Rwkv5ForCausalLM, Rwkv5TimeMix)
register_family(Rwkv6Config, Rwkv6Model, Rwkv6ForCausalLM, Rwkv6TimeMix)
register_family(Rwkv7Config, Rwkv7Model, Rwkv7ForCausalLM, Rwkv7TimeMix)

__all__ = [
    "Rwkv5Config",
    "Rwkv5ForCausalLM",
    "Rwkv6Config",
    "Rwkv6ForCausalLM",
    "Rwkv7Config",
    "Rwkv7ForCausalLM",
    "RwkvCache",
    "blinkdl_version",
    "convert_blinkdl",
    "load_blinkdl",
    "save_blinkdl",
]
