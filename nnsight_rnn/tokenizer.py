"""A byte-level tokenizer built locally (no hub): 256 byte tokens plus ``<|endoftext|>``.

Used by the model zoo and as the fallback for models given without a tokenizer (tiny random
configs in tests), so that nnsight's text-generation pipeline can be built offline. Token ids
0..255 are the UTF-8 bytes (GPT-2's byte-to-unicode mapping); 256 is end-of-text / padding.
"""

from __future__ import annotations

import os
from functools import lru_cache
from typing import Any

from transformers import PreTrainedTokenizerFast

EOS = "<|endoftext|>"
BYTE_VOCAB_SIZE = 257


@lru_cache(maxsize=1)
def _byte_to_unicode() -> dict[int, str]:
    # GPT-2's reversible byte -> printable unicode table.
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs), strict=True))


def byte_tokenizer() -> PreTrainedTokenizerFast:
    """A fresh byte-level tokenizer (vocab 257, left padding, pad = eos)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    table = _byte_to_unicode()
    vocab = {table[b]: b for b in range(256)}
    vocab[EOS] = 256
    core = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    core.decoder = decoders.ByteLevel()
    core.add_special_tokens([EOS])
    tok = PreTrainedTokenizerFast(tokenizer_object=core, eos_token=EOS, pad_token=EOS, bos_token=EOS)
    tok.padding_side = "left"
    return tok


def find_tokenizer(model: Any) -> Any:
    """The tokenizer saved with the model (folder / repo id / ``config._name_or_path``).

    A model that has none (a random config built in memory, a folder without tokenizer files)
    gets the local byte tokenizer, so that nnsight's pipeline builds offline; token-id inputs
    then work whatever the vocabulary, and text inputs need ``vocab_size >= 257``.
    """
    from transformers import AutoTokenizer

    path = model if isinstance(model, str) else getattr(getattr(model, "config", None), "_name_or_path", None)
    if path and os.path.isdir(path):
        # Only files the folder really has: a config's `tokenizer_class` alone builds an empty tokenizer.
        if any(os.path.exists(os.path.join(path, f)) for f in _TOKENIZER_FILES):
            return AutoTokenizer.from_pretrained(path)
    elif isinstance(model, str):
        return AutoTokenizer.from_pretrained(path)  # a hub id (needs network unless cached)
    return byte_tokenizer()


_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "tokenizer.model", "vocab.txt")
