"""Tokenizer wrapper over `tokenizers`, chat templates, and UTF-8-safe incremental detokenization."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer as HFTokenizer


class Tokenizer:
    def __init__(self, tok: HFTokenizer, *, bos_token_id: int | None = None, eos_token_ids: tuple[int, ...] = (),
                 add_bos: bool = False, chat_template: str | None = None) -> None:
        self.tok = tok
        self.bos_token_id = bos_token_id
        self.eos_token_ids = tuple(eos_token_ids)
        self.add_bos = add_bos and bos_token_id is not None
        self.chat_template = chat_template
        self._special = set(tok.get_added_tokens_decoder().keys())

    @property
    def vocab_size(self) -> int:
        return self.tok.get_vocab_size(with_added_tokens=True)

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        ids = self.tok.encode(text, add_special_tokens=False).ids
        if add_special_tokens and self.add_bos:
            ids = [self.bos_token_id, *ids]  # type: ignore[list-item]
        return ids

    def encode_batch(self, texts: list[str], add_special_tokens: bool = True) -> list[list[int]]:
        encs = self.tok.encode_batch(texts, add_special_tokens=False)
        pre = [self.bos_token_id] if add_special_tokens and self.add_bos else []
        return [pre + e.ids for e in encs]  # type: ignore[operator]

    def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str:
        return self.tok.decode(list(ids), skip_special_tokens=skip_special_tokens)

    def token_text(self, token_id: int) -> str:
        return self.tok.id_to_token(token_id) or ""

    def apply_chat_template(self, messages: list[dict[str, str]], add_generation_prompt: bool = True) -> str:
        if not self.chat_template:
            raise ValueError("this model's tokenizer has no chat template; drop --chat or pass a plain prompt")
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)

        def raise_exception(msg: str) -> None:
            raise ValueError(f"chat template error: {msg}")

        env.globals["raise_exception"] = raise_exception
        tid = self.tok.id_to_token
        return env.from_string(self.chat_template).render(
            messages=messages, add_generation_prompt=add_generation_prompt,
            bos_token=tid(self.bos_token_id) if self.bos_token_id is not None else "",
            eos_token=tid(self.eos_token_ids[0]) if self.eos_token_ids else "")

    # -- persistence -------------------------------------------------------------------------------
    def save(self, out_dir: str | Path) -> None:
        out = Path(out_dir)
        self.tok.save(str(out / "tokenizer.json"))
        tid = self.tok.id_to_token
        cfg: dict[str, Any] = {
            "tokenizer_class": "PreTrainedTokenizerFast", "add_bos_token": self.add_bos,
            "bos_token": tid(self.bos_token_id) if self.bos_token_id is not None else None,
            "eos_token": tid(self.eos_token_ids[0]) if self.eos_token_ids else None,
            "llmspeed_eos_token_ids": list(self.eos_token_ids), "model_max_length": 1 << 30,
        }
        if self.chat_template:
            cfg["chat_template"] = self.chat_template
        (out / "tokenizer_config.json").write_text(json.dumps(cfg, indent=2))

    @classmethod
    def from_dir(cls, path: str | Path, eos_token_ids: tuple[int, ...] = (), bos_token_id: int | None = None) -> Tokenizer:
        p = Path(path)
        tj = p / "tokenizer.json"
        if not tj.is_file():
            raise FileNotFoundError(f"no tokenizer.json in {p}")
        try:
            tok = HFTokenizer.from_file(str(tj))
        except Exception as e:  # tokenizers raises a bare Exception on bad files
            raise ValueError(f"unreadable tokenizer {tj}: {e}") from None
        cfg: dict[str, Any] = {}
        if (p / "tokenizer_config.json").is_file():
            cfg = json.loads((p / "tokenizer_config.json").read_text())

        def tok_id(v: Any) -> int | None:
            name = v.get("content") if isinstance(v, dict) else v
            return tok.token_to_id(name) if isinstance(name, str) else None

        eos = tuple(cfg.get("llmspeed_eos_token_ids") or eos_token_ids)
        if not eos and tok_id(cfg.get("eos_token")) is not None:
            eos = (tok_id(cfg.get("eos_token")),)  # type: ignore[assignment]
        bos = tok_id(cfg.get("bos_token"))
        return cls(tok, bos_token_id=bos if bos is not None else bos_token_id, eos_token_ids=eos,  # type: ignore[arg-type]
                   add_bos=bool(cfg.get("add_bos_token", False)), chat_template=cfg.get("chat_template"))


class IncrementalDecoder:
    """Turns a stream of token ids into text pieces without ever emitting half a UTF-8 character."""

    def __init__(self, tokenizer: Tokenizer, skip_special_tokens: bool = True) -> None:
        self.tokenizer = tokenizer
        self.skip = skip_special_tokens
        self.ids: list[int] = []
        self.prefix_offset = 0  # ids[prefix_offset:read_offset] were already turned into text
        self.read_offset = 0
        self.text = ""

    def push(self, token_id: int) -> str:
        self.ids.append(token_id)
        prefix = self.tokenizer.decode(self.ids[self.prefix_offset:self.read_offset], self.skip)
        full = self.tokenizer.decode(self.ids[self.prefix_offset:], self.skip)
        if full.endswith("\ufffd") or len(full) <= len(prefix):
            return ""  # incomplete multi-byte sequence (or nothing visible yet): wait for more tokens
        piece = full[len(prefix):]
        self.prefix_offset, self.read_offset = self.read_offset, len(self.ids)
        self.text += piece
        return piece

    def flush(self) -> str:
        """Whatever is left at the end (a dangling partial character becomes U+FFFD, as a decoder would)."""
        rest = self.tokenizer.decode(self.ids, self.skip)[len(self.text):]
        self.text += rest
        self.prefix_offset = self.read_offset = len(self.ids)
        return rest
