"""Token log-probabilities in OpenAI's two wire formats.

Legacy `/v1/completions`: `{"tokens", "token_logprobs", "top_logprobs", "text_offset"}`, one entry per token;
the first prompt token has no context (`null` logprob and `null` top dict). Token strings come from
incremental decoding, so `"".join(tokens)` is the choice's text and `text_offset` indexes into it. A top dict
holds the k most likely tokens plus the token actually there (vLLM's convention), so a reader can tell
whether that token was the greedy choice (`logprob == max(top.values())`, what lm-eval checks). Every
generated token has an entry, a final EOS included (its string is ""): lm-eval drops the last entry as the one
generated token (`token_logprobs[ctxlen:-1]`), so omitting an EOS would cut a prompt token instead.

Chat: `{"content": [{"token", "logprob", "bytes", "top_logprobs": [{"token", "logprob", "bytes"}]}]}`.
Values are finite: a -inf / NaN log-probability is reported as -9999.0 (as vLLM does), so the JSON is valid.
"""

from __future__ import annotations

import math
from typing import Any

from llmspeed.models.tokenizer import IncrementalDecoder, Tokenizer
from llmspeed.runtime.logprobs import TokenLogprob

FLOOR = -9999.0


def _f(x: float) -> float:
    return x if math.isfinite(x) else FLOOR


class LegacyLogprobs:
    """Builds the legacy format for a stream of tokens whose text starts at `offset` in the choice's text."""

    def __init__(self, tokenizer: Tokenizer, offset: int = 0, skip_special_tokens: bool = True) -> None:
        self.tok = tokenizer
        self.offset = offset
        self._dec = IncrementalDecoder(tokenizer, skip_special_tokens)

    def _top(self, lp: TokenLogprob) -> dict[str, float]:
        top: dict[str, float] = {}
        for tid, v in (*lp.top, (lp.token_id, lp.logprob)):
            top.setdefault(self.tok.decode([tid], skip_special_tokens=False), _f(v))
        return top

    def add(self, ids: list[int], lps: list[TokenLogprob | None], final: bool = False) -> dict[str, list[Any]]:
        """The legacy dict for `ids` (with their logprobs `lps`, None where there is none); `final` flushes a
        dangling partial character into the last token's string."""
        pieces = [self._dec.push(t) for t in ids]
        if final and pieces:
            pieces[-1] += self._dec.flush()
        out: dict[str, list[Any]] = {"tokens": [], "token_logprobs": [], "top_logprobs": [], "text_offset": []}
        for piece, lp in zip(pieces, lps, strict=True):
            out["tokens"].append(piece)
            out["text_offset"].append(self.offset)
            self.offset += len(piece)
            out["token_logprobs"].append(None if lp is None else _f(lp.logprob))
            out["top_logprobs"].append(None if lp is None else self._top(lp))
        return out

    @property
    def text(self) -> str:
        return self._dec.text


def merge_legacy(a: dict[str, list[Any]] | None, b: dict[str, list[Any]]) -> dict[str, list[Any]]:
    return b if a is None else {k: a[k] + b[k] for k in b}


def chat_logprobs(tokenizer: Tokenizer, lps: list[TokenLogprob], top: int) -> dict[str, Any]:
    """Chat format for the generated tokens `lps`, with `top` alternatives each."""
    def entry(tid: int, v: float) -> dict[str, Any]:
        s = tokenizer.decode([tid], skip_special_tokens=False)
        return {"token": s, "logprob": _f(v), "bytes": list(s.encode("utf-8"))}

    return {"content": [entry(lp.token_id, lp.logprob) | {"top_logprobs": [entry(t, v) for t, v in lp.top[:top]]}
                        for lp in lps]}
