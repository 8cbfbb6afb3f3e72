"""RWKV-5 ("Eagle", 5.2): config and hookable model."""

from .configuration import Rwkv5Config
from .modeling import Rwkv5ForCausalLM, Rwkv5Model, Rwkv5TimeMix

__all__ = ["Rwkv5Config", "Rwkv5ForCausalLM", "Rwkv5Model", "Rwkv5TimeMix"]
