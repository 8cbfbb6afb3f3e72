"""Configuration of RWKV-5 ("Eagle", BlinkDL's 5.2) models, compatible with the RWKV "-hf" repos' ``config.json``."""

from __future__ import annotations

from typing import Any

from ..rwkv6.configuration import Rwkv56Config


class Rwkv5Config(Rwkv56Config):
    """RWKV-5 hyper-parameters (``model_type = "rwkv5"``); see :class:`Rwkv56Config`."""

    model_type = "rwkv5"

    def __init__(self, **kwargs: Any) -> None:  # transformers replaces an inherited __init__ of a config subclass
        super().__init__(**kwargs)
