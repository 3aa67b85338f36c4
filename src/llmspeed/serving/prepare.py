"""A validated OpenAI request -> what the engine runs: one prompt (token ids) per choice, the sampling
parameters, what to report (echo, logprobs) and the response-cache key. Every refusal is a 400 naming its field.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from llmspeed.runtime.sequence import SamplingParams
from llmspeed.serving import schemas as S
from llmspeed.serving.errors import APIError
from llmspeed.serving.response_cache import cache_key

DEFAULT_COMPLETION_TOKENS = 16  # OpenAI's default for /v1/completions
CACHE_FORMAT = 2  # bump when the cache entry's shape changes (old L2 entries are then never read)


@dataclass
class Prepared:
    kind: str  # "chat" | "completion"
    rid: str
    created: int
    prompts: list[list[int]]  # token ids, one prompt per choice
    params: SamplingParams
    key: str | None  # response-cache key, None when the request is not deterministic
    echo: bool = False  # completions: the prompt (and its logprobs) starts each choice
    logprobs: int | None = None  # top alternatives per token; None: no logprobs in the response
    no_output: bool = False  # max_tokens 0 (with echo): the prefill's token is generated but not reported
    leader: bool = False  # this request runs for identical ones in flight (single-flight)

    def seq_id(self, i: int) -> str:
        return self.rid if len(self.prompts) == 1 else f"{self.rid}-{i}"


def sampling_key(params: SamplingParams) -> dict[str, Any]:
    """The response-cache view of the sampling parameters, after normalisation (top_p=1e-300 is greedy)."""
    return {"max_tokens": params.max_new_tokens, "temperature": params.temperature, "top_p": params.top_p,
            "top_k": params.top_k, "seed": params.seed, "stop": list(params.stop), "ignore_eos": params.ignore_eos}


def _check_fields(req: S.CompletionRequest | S.ChatCompletionRequest, aliases: frozenset[str], name: str) -> None:
    bad = req.nonfinite_field()
    if bad is not None:
        raise APIError(400, f"{bad} must be a finite number (NaN and infinity are not allowed)", bad, "invalid_value")
    bad = req.unsupported_field()
    if bad is not None:
        raise APIError(400, f"unsupported field '{bad}': llmspeed does not implement it (see README, Serving)",
                       bad, "unsupported_parameter")
    if req.model is not None and req.model not in aliases:
        raise APIError(404, f"model '{req.model}' does not exist; this server serves '{name}'", "model",
                       "model_not_found")


def _encode(tok: Any, req: S.CompletionRequest | S.ChatCompletionRequest, vocab: int) -> tuple[list[list[int]], Any]:
    """(token ids per prompt, the prompt as the cache key sees it)."""
    try:
        if isinstance(req, S.ChatCompletionRequest):
            messages: Any = req.normalized_messages()
            return [tok.encode(tok.apply_chat_template(messages))], messages
        prompts = [p if isinstance(p, list) else tok.encode(p) for p in req.prompt]
    except ValueError as e:
        raise APIError(400, str(e), "messages" if isinstance(req, S.ChatCompletionRequest) else "prompt") from None
    for p in prompts:
        if not p:
            raise APIError(400, "prompt is empty (it encodes to no tokens)", "prompt", "invalid_value")
        if max(p) >= vocab:
            raise APIError(400, f"token id {max(p)} is outside the vocabulary (0..{vocab - 1})", "prompt",
                           "invalid_value")
    return prompts, req.prompt


def prepare(req: S.CompletionRequest | S.ChatCompletionRequest, kind: str, *, tokenizer: Any, vocab: int,
            window: int, aliases: frozenset[str], model_name: str, identity: dict[str, Any],
            cache_enabled: bool) -> Prepared:
    _check_fields(req, aliases, model_name)
    chat = isinstance(req, S.ChatCompletionRequest)
    where = "messages" if chat else "prompt"
    prompts, prompt_repr = _encode(tokenizer, req, vocab)
    longest = max(len(p) for p in prompts)
    if longest >= window:
        raise APIError(400, f"prompt has {longest} tokens; the context window is {window}", where,
                       "context_length_exceeded")
    if chat:
        assert isinstance(req, S.ChatCompletionRequest)
        limit, echo = req.token_limit, False
        if req.top_logprobs is not None and not req.logprobs:
            raise APIError(400, "top_logprobs needs logprobs: true", "top_logprobs", "invalid_value")
        logprobs = (req.top_logprobs or 0) if req.logprobs else None
    else:
        assert isinstance(req, S.CompletionRequest)
        limit, echo, logprobs = req.max_tokens, req.echo, req.logprobs
        if limit == 0 and not echo:
            raise APIError(400, "max_tokens 0 is only allowed with echo: true (prompt logprobs alone)",
                           "max_tokens", "invalid_value")
    if limit is None:
        limit = DEFAULT_COMPLETION_TOKENS if kind == "completion" else window - longest
    if longest + max(limit, 1) > window:
        raise APIError(400, f"prompt ({longest} tokens) + max_tokens ({limit}) exceeds the context window "
                            f"({window} tokens)", "max_tokens", "context_length_exceeded")
    try:
        params = SamplingParams(max_new_tokens=max(limit, 1), temperature=req.temperature, top_k=req.top_k,
                                top_p=req.top_p, seed=req.seed, stop=tuple(req.stop or ()), ignore_eos=req.ignore_eos,
                                logprobs=logprobs, prompt_logprobs=logprobs if echo and logprobs is not None else None)
    except ValueError as e:  # the schema already checks these; this is the library's own guard
        raise APIError(400, str(e), None, "invalid_value") from None
    key = None
    if cache_enabled and params.deterministic:
        sk = sampling_key(params) | {"echo": echo, "logprobs": logprobs, "max_tokens": limit, "v": CACHE_FORMAT}
        key = cache_key(identity, kind, prompt_repr, sk)
    return Prepared(kind, S.new_id(kind), int(time.time()), prompts, params, key, echo, logprobs, limit == 0)
