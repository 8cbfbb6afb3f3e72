"""The RWKV "World" tokenizer (vocabulary ``rwkv_vocab_v20230424``) as a transformers tokenizer.

RWKV-5/6/7 World models use BlinkDL's trie tokenizer: 65529 byte strings, and text is encoded by
greedy longest match over its UTF-8 bytes (every single byte is a token, so any text encodes).
:class:`RwkvWorldTokenizer` reproduces BlinkDL's ``TRIE_TOKENIZER`` ids exactly and plugs into
transformers and nnsight (batching with left padding, ``decode``, ``save_pretrained``).

Id 0 is not in the vocabulary file; it is the end-of-text token of RWKV World models and serves
here as ``<|endoftext|>`` (eos, bos and pad). Tokens are shown as strings through GPT-2's
byte-to-unicode table (one printable character per byte), so ``convert_ids_to_tokens`` is readable
and reversible.

The vocabulary file ships inside BlinkDL's ``rwkv`` package (``pip install rwkv``); pass
``vocab_file=`` to use a copy elsewhere. ``AutoTokenizer.from_pretrained`` finds this class for
folders whose ``tokenizer_config.json`` names ``RwkvWorldTokenizer`` (what ``save_pretrained``
writes) or rwkv7-hf's ``RWKV7Tokenizer`` (same vocabulary file name and ids; loaded offline without
running the folder's code).
"""

from __future__ import annotations

import ast
import importlib.util
import os
import shutil
from functools import lru_cache
from typing import Any, ClassVar

from transformers import PreTrainedTokenizer

from .tokenizer import _byte_to_unicode

VOCAB_NAME = "rwkv_vocab_v20230424.txt"
EOS = "<|endoftext|>"


def default_vocab_file() -> str:
    """The World vocabulary shipped with BlinkDL's ``rwkv`` package; a clear error if it is absent."""
    spec = importlib.util.find_spec("rwkv")
    if spec is not None and spec.submodule_search_locations:
        path = os.path.join(spec.submodule_search_locations[0], VOCAB_NAME)
        if os.path.exists(path):
            return path
    raise FileNotFoundError(
        f"the RWKV World vocabulary ({VOCAB_NAME}) ships with BlinkDL's `rwkv` package: `pip install rwkv` "
        "(or `pip install nnsight-rnn[rwkv]`), or pass vocab_file= a copy of it"
    )


@lru_cache(maxsize=4)
def _load_vocab(path: str) -> tuple[dict[int, bytes], dict[int, Any], dict[int, str]]:
    """``(id -> bytes, trie, id -> token string)`` for a vocabulary file (lines ``<id> <literal> <byte length>``)."""
    with open(path, encoding="utf-8") as f:
        lines = [line.rstrip("\n") for line in f if line.strip()]
    ids = [int(line[: line.index(" ")]) for line in lines]
    # One literal_eval of the whole list: ~5x faster than one per line, and as safe.
    literals = ast.literal_eval("[" + ",".join(line[line.index(" ") : line.rindex(" ")] for line in lines) + "]")
    id_to_bytes: dict[int, bytes] = {}
    for idx, token, line in zip(ids, literals, lines, strict=True):
        token = token.encode("utf-8") if isinstance(token, str) else token
        if not isinstance(token, bytes) or len(token) != int(line[line.rindex(" ") :]):
            raise ValueError(f"{path}: malformed vocabulary line for id {idx}")
        id_to_bytes[idx] = token
    # Trie: nested dicts byte -> node; key -1 holds the id of the token ending at the node.
    root: dict[int, Any] = {}
    for idx, token in id_to_bytes.items():
        node = root
        for byte in token:
            node = node.setdefault(byte, {})
        node[-1] = idx
    table = _byte_to_unicode()
    id_to_token = {i: "".join(map(table.__getitem__, tok)) for i, tok in id_to_bytes.items()}
    id_to_token[0] = EOS
    return id_to_bytes, root, id_to_token


class RwkvWorldTokenizer(PreTrainedTokenizer):
    """BlinkDL's RWKV World trie tokenizer (greedy longest byte match) as a transformers tokenizer.

    Args:
        vocab_file: path of ``rwkv_vocab_v20230424.txt`` (default: the copy in the ``rwkv`` package).
        Other keyword arguments go to ``PreTrainedTokenizer`` (``padding_side`` defaults to left).
    """

    vocab_files_names: ClassVar[dict[str, str]] = {"vocab_file": VOCAB_NAME}
    model_input_names: ClassVar[list[str]] = ["input_ids", "attention_mask"]

    def __init__(self, vocab_file: str | None = None, **kwargs: Any) -> None:
        self.vocab_file = vocab_file or default_vocab_file()
        self._id_to_bytes, self._trie, self._id_to_token = _load_vocab(os.path.abspath(self.vocab_file))
        self._char_byte = {c: b for b, c in _byte_to_unicode().items()}
        self._token_to_id = {t: i for i, t in self._id_to_token.items()}
        for key in ("eos_token", "bos_token", "pad_token", "unk_token"):
            kwargs.setdefault(key, EOS)
        kwargs.setdefault("padding_side", "left")
        kwargs.setdefault("add_bos_token", False)
        super().__init__(**kwargs)

    @property
    def vocab_size(self) -> int:
        return max(self._id_to_token) + 1

    def get_vocab(self) -> dict[str, int]:
        return dict(self._token_to_id)

    def encode_bytes(self, data: bytes) -> list[int]:
        """Greedy longest-match ids of ``data`` (BlinkDL's ``TRIE_TOKENIZER.encodeBytes``)."""
        ids: list[int] = []
        i, n, root = 0, len(data), self._trie
        while i < n:
            node, j, best, best_end = root, i, None, i
            while j < n and (node := node.get(data[j])) is not None:
                j += 1
                if -1 in node:
                    best, best_end = node[-1], j
            if best is None:  # cannot happen with the World vocabulary (every byte is a token)
                raise ValueError(f"byte {data[i]!r} at offset {i} has no token in {self.vocab_file}")
            ids.append(best)
            i = best_end
        return ids

    def _tokenize(self, text: str, **kwargs: Any) -> list[str]:
        return [self._id_to_token[i] for i in self.encode_bytes(text.encode("utf-8"))]

    def _convert_token_to_id(self, token: str) -> int:
        if token in self._token_to_id:
            return self._token_to_id[token]
        raise KeyError(f"{token!r} is not an RWKV World token")

    def _convert_id_to_token(self, index: int) -> str:
        return self._id_to_token.get(int(index), "")

    def convert_tokens_to_string(self, tokens: list[str]) -> str:
        data = bytearray()
        for token in tokens:
            if token == EOS:
                data.extend(EOS.encode())
            else:
                data.extend(self._char_byte[c] for c in token)
        return data.decode("utf-8", errors="replace")

    def save_vocabulary(self, save_directory: str, filename_prefix: str | None = None) -> tuple[str]:
        name = (filename_prefix + "-" if filename_prefix else "") + VOCAB_NAME
        target = os.path.join(save_directory, name)
        if os.path.abspath(self.vocab_file) != os.path.abspath(target):
            shutil.copyfile(self.vocab_file, target)
        return (target,)


class RWKV7Tokenizer(RwkvWorldTokenizer):
    """The name rwkv7-hf folders give their tokenizer (same vocabulary file and ids): loads them offline."""


def rwkv_world_tokenizer(vocab_file: str | None = None) -> RwkvWorldTokenizer:
    """A World tokenizer (left padding; ``<|endoftext|>`` = id 0 as eos, bos and pad)."""
    return RwkvWorldTokenizer(vocab_file)


def register_tokenizer(config_classes: list[type]) -> None:
    """Make ``AutoTokenizer`` know the World tokenizer for these configs and by its class names."""
    from transformers import AutoTokenizer

    for config_cls in config_classes:
        AutoTokenizer.register(config_cls, tokenizer_class=RwkvWorldTokenizer, exist_ok=True)
    AutoTokenizer.register(config_classes[0], tokenizer_class=RWKV7Tokenizer, exist_ok=True)
    AutoTokenizer.register(config_classes[0], tokenizer_class=RwkvWorldTokenizer, exist_ok=True)
