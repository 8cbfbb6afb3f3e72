"""nnsight-rnn: recurrent language models (Mamba, Mamba-2, RWKV) as first-class nnsight models.

>>> import nnsight_rnn
>>> model = nnsight_rnn.load("path/to/mamba")          # or an HF model instance
>>> with model.trace("The cat"):
...     h = model.layers[2].mixer.hook_ssm_state.output.save()   # [batch, pos, d_inner, N]
"""

from . import models, patches  # noqa: F401  (registers RWKV-5/6/7 with transformers, and the cards' patches)
from ._version import __version__ as __version__
from .cards import Card, all_cards, card_for, get_card, register_card
from .errors import (
    ArtifactMismatchError,
    NnsightRnnError,
    SourceError,
    StateShapeError,
    UnknownHookError,
    UnsupportedArchitectureError,
    UpstreamContractError,
)
from .hooks import HookPoint
from .model import HookedLanguageModel, load
from .state import RecurrentState
from .surgery import install

__all__ = [
    "ArtifactMismatchError",
    "Card",
    "HookPoint",
    "HookedLanguageModel",
    "NnsightRnnError",
    "RecurrentState",
    "SourceError",
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
