"""RWKV-7 ("Goose"): config, hookable model, BlinkDL ``.pth`` conversion."""

from .configuration import Rwkv7Config
from .modeling import Rwkv7Block, Rwkv7ChannelMix, Rwkv7ForCausalLM, Rwkv7Model, Rwkv7TimeMix

__all__ = ["Rwkv7Block", "Rwkv7ChannelMix", "Rwkv7Config", "Rwkv7ForCausalLM", "Rwkv7Model", "Rwkv7TimeMix"]
