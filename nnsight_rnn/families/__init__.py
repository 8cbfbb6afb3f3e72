"""Family-specific model-level code (patches, state formats) that the cards name.

Importing this package registers them; ``nnsight_rnn/__init__.py`` imports it.
"""

from . import rwkv4, rwkv5, rwkv6, rwkv7

__all__ = ["rwkv4", "rwkv5", "rwkv6", "rwkv7"]
