"""nnsight-rnn: recurrent language models (Mamba, Mamba-2, RWKV) as first-class nnsight models.

>>> import nnsight_rnn
>>> model = nnsight_rnn.load("path/to/mamba")          # or an HF model instance
>>> with model.trace("The cat"):
...     h = model.layers[2].mixer.hook_ssm_state.output.save()   # [batch, pos, d_inner, N]
"""

from . import families  # noqa: F401  (registers family patches and state formats)
from .cards import Card, UnsupportedArchitectureError, all_cards, card_for, get_card, register_card
from .hooks import HookPoint
from .model import HookedLanguageModel, UnknownHookError, load
from .state import RecurrentState, StateShapeError
from .surgery import install
from .upstream import UpstreamContractError

__version__ = "0.1.0"

__all__ = [
    "Card",
    "HookPoint",
    "HookedLanguageModel",
    "RecurrentState",
    "StateShapeError",
    "UnknownHookError",
    "UnsupportedArchitectureError",
    "UpstreamContractError",
    "all_cards",
    "card_for",
    "get_card",
    "install",
    "load",
    "register_card",
]
