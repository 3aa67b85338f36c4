"""Incremental detokenization never emits half a UTF-8 character; chat templates render."""

from __future__ import annotations

import llmspeed
from llmspeed.models.tokenizer import IncrementalDecoder


def test_incremental_decoder_is_utf8_safe(tiny_llm) -> None:
    tok = tiny_llm.tokenizer
    text = "Ça va? 日本語のテキスト — naïve café 🎭 done"
    ids = tok.encode(text)
    assert len(ids) > len(text) // 2  # multi-byte chars are split across byte-level tokens in a 512 vocab
    dec = IncrementalDecoder(tok)
    pieces = [dec.push(i) for i in ids]
    assert all("\ufffd" not in p for p in pieces)
    assert "".join(pieces) + dec.flush() == text


def test_chat_template_and_stream_match_generate(tiny_model_dir) -> None:
    llm = llmspeed.load(tiny_model_dir("llama"))
    rendered = llm.tokenizer.apply_chat_template([{"role": "user", "content": "hi"}])
    assert rendered == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    full = llm.generate("hi", max_new_tokens=12, chat=True, ignore_eos=True)[0]
    assert "".join(llm.stream("hi", max_new_tokens=12, chat=True, ignore_eos=True)) == full.text
