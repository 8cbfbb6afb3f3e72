"""The RWKV World tokenizer: BlinkDL's trie ids exactly, decoding, padding, saving, AutoTokenizer, nnsight text input."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoTokenizer

import nnsight_rnn
from nnsight_rnn.rwkv_tokenizer import RWKV7Tokenizer, RwkvWorldTokenizer, default_vocab_file, rwkv_world_tokenizer

TEXTS = [
    "Hello world! The quick brown fox jumps over the lazy dog.",
    "中文测试：你好，世界。 🦊 émoji\n\n  spaces\t\ttabs\r\n",
    "x" * 300 + " " * 200,
    "\x00\x01 control bytes \x7f",
    "def f(x):\n    return x ** 2  # code\n",
]


@pytest.fixture(scope="module")
def tok() -> RwkvWorldTokenizer:
    return rwkv_world_tokenizer()


def test_ids_equal_blinkdl_trie_tokenizer(tok: RwkvWorldTokenizer) -> None:
    from rwkv.rwkv_tokenizer import TRIE_TOKENIZER

    ref = TRIE_TOKENIZER(default_vocab_file())
    for text in TEXTS:
        ids = tok(text)["input_ids"]
        assert ids == ref.encode(text), text
        assert tok.decode(ids) == text
    assert tok.vocab_size == 65530 and tok.eos_token_id == tok.pad_token_id == 0


def test_tokens_are_readable_and_padding_is_left(tok: RwkvWorldTokenizer) -> None:
    assert tok.convert_ids_to_tokens(tok("Hello world")["input_ids"]) == ["Hello", "Ġworld"]
    batch = tok(["a", "Hello there, friend"], padding=True, return_tensors="pt")
    assert batch["input_ids"][0, 0] == 0 and batch["attention_mask"][0, 0] == 0 and batch["attention_mask"][0, -1] == 1


def test_save_and_auto_tokenizer(tok: RwkvWorldTokenizer, tmp_path) -> None:
    tok.save_pretrained(tmp_path)
    again = AutoTokenizer.from_pretrained(tmp_path)
    assert isinstance(again, RwkvWorldTokenizer)
    assert again(TEXTS[1])["input_ids"] == tok(TEXTS[1])["input_ids"]
    # rwkv7-hf folders name their tokenizer RWKV7Tokenizer (same vocabulary file): loaded offline, no remote code.
    (tmp_path / "tokenizer_config.json").write_text(
        '{"tokenizer_class": "RWKV7Tokenizer", "auto_map": {"AutoTokenizer": ["tokenization_rwkv7.RWKV7Tokenizer", null]}}'
    )
    assert isinstance(AutoTokenizer.from_pretrained(tmp_path), RWKV7Tokenizer)


def test_missing_vocabulary_is_a_clear_error(tmp_path) -> None:
    with pytest.raises(FileNotFoundError):
        RwkvWorldTokenizer(vocab_file=str(tmp_path / "absent.txt"))


def test_text_prompts_through_nnsight(tok: RwkvWorldTokenizer) -> None:
    from nnsight_rnn.models.rwkv7 import Rwkv7Config, Rwkv7ForCausalLM

    cfg = Rwkv7Config(
        vocab_size=65536, hidden_size=16, num_hidden_layers=2, head_dim=8, decay_low_rank_dim=4, a_low_rank_dim=4,
        v_low_rank_dim=4, gate_low_rank_dim=4, intermediate_size=32,
    )  # fmt: skip
    m = nnsight_rnn.load(Rwkv7ForCausalLM(cfg).eval(), tokenizer=tok)
    prompts = ["The cat sat", "Once upon a time, in a land far away"]
    with torch.no_grad(), m.trace(prompts):
        logits = m.output.logits.save()
    with torch.no_grad(), m.trace(prompts[0]):
        alone = m.output.logits.save()
    n = len(tok(prompts[0])["input_ids"])
    torch.testing.assert_close(logits[0, -n:], alone[0], atol=1e-5, rtol=0)  # left-padded row == alone
