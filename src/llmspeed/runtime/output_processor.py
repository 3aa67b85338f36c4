"""The output processor: what a sampled token does to its request, kept off the step's critical path.

In the step (cheap, decides scheduling): append the token id, stamp its time, finish on EOS, on
`max_new_tokens` or on the context window, and fail a row whose forward or sampling raised.
Out of the step: detokenization. A request's text is decoded incrementally when somebody reads it
(`Sequence.text`, `pop_text`: the stream consumer, the server's dispatch, `generate` at the end), so
benchmarks and profiles that never read text never pay for it. Only requests with stop strings are
detokenized in the step, because their finishing depends on the text. `t_post` is the time spent
detokenizing and checking stop strings, wherever it happens.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from llmspeed.models.tokenizer import IncrementalDecoder, Tokenizer

if TYPE_CHECKING:
    from llmspeed.runtime.sequence import Sequence, Timings


class Detokenizer:
    """One request's visible text: its token ids decoded incrementally (never half a UTF-8 character),
    cut before the first stop string (and frozen there)."""

    def __init__(self, tokenizer: Tokenizer, stop: tuple[str, ...], timings: Timings) -> None:
        self._decoder = IncrementalDecoder(tokenizer)
        self._stop = stop
        self._timings = timings
        self._pushed = 0
        self._flushed = False
        self._frozen = False  # a stop string was found: the text never changes again
        self.text = ""

    def sync(self, ids: list[int], n: int, final: bool) -> bool:
        """Decode ids[:n] not decoded yet; `final` also flushes a dangling partial character. True when the
        text reached a stop string (it is then cut just before it)."""
        if self._frozen or (self._pushed >= n and (self._flushed or not final)):
            return self._frozen
        t0 = time.perf_counter()
        for tok in ids[self._pushed:n]:
            self._decoder.push(tok)
        self._pushed = n
        if final:
            self._decoder.flush()
            self._flushed = True
        text = self._decoder.text
        hits = [i for i in (text.find(s) for s in self._stop) if i >= 0]
        if hits:
            text, self._frozen = text[: min(hits)], True
        self.text = text
        self._timings.t_post += time.perf_counter() - t0
        return self._frozen


class OutputProcessor:
    def __init__(self, eos_ids: frozenset[int], max_model_len: int) -> None:
        self.eos_ids = eos_ids
        self.max_model_len = max_model_len

    def process(self, seqs: list[Sequence], tokens: list[int], is_prefill: bool, seconds: float, now: float) -> None:
        """Each sequence of a step gets its token; `seconds` (the step's forward + sampling) is charged to
        every request that took part, as its prefill or decode time."""
        for seq, tok in zip(seqs, tokens, strict=True):
            if is_prefill:
                seq.timings.t_prefill += seconds
            else:
                seq.timings.t_decode += seconds
            self.append_token(seq, tok, now)

    def append_token(self, seq: Sequence, tok: int, now: float) -> None:
        seq.output_ids.append(tok)
        tm = seq.timings
        if tm.first_token is None:
            tm.first_token = now
        tm.token_times.append(now)
        if tok in self.eos_ids and not seq.params.ignore_eos:
            seq.ended_on_eos = True  # the EOS token is not part of the text
            seq.finish("stop")
        elif seq.params.stop and seq.detokenizer.sync(seq.output_ids, len(seq.output_ids), final=False):
            seq.finish("stop")
        elif len(seq.output_ids) >= seq.params.max_new_tokens or seq.num_tokens >= self.max_model_len:
            seq.finish("length")

    @staticmethod
    def fail(seq: Sequence, error: Exception) -> None:
        """This request alone failed (its forward or its sampling raised)."""
        seq.fail(f"{type(error).__name__}: {error}")
