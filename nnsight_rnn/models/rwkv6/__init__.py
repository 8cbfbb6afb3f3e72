"""RWKV-6 ("Finch"): config, hookable model (and the machinery RWKV-5 shares)."""

from .configuration import Rwkv6Config
from .modeling import Rwkv6ForCausalLM, Rwkv6Model, Rwkv6TimeMix

__all__ = ["Rwkv6Config", "Rwkv6ForCausalLM", "Rwkv6Model", "Rwkv6TimeMix"]
