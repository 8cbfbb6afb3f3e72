"""A byte-level tokenizer built locally (no hub): 256 byte tokens plus ``<|endoftext|>``.

Used by the model zoo and as the fallback for models given without a tokenizer (tiny random
configs in tests), so that nnsight's text-generation pipeline can be built offline. Token ids
0..255 are the UTF-8 bytes (GPT-2's byte-to-unicode mapping); 256 is end-of-text / padding.
"""

from __future__ import annotations

from functools import lru_cache

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
