"""OpenAI wire format: request models (validated, unknown fields rejected by name) and response builders.

Every float is finite (NaN/inf, which Python's JSON parser accepts as `NaN`/`Infinity`, are a 400);
temperature is in [0, 2] and top_p in (0, 1] as in OpenAI's API. Tiny positive values (a temperature below
1e-5, a top_p below 1e-6, subnormals included) are valid and mean greedy decoding: `SamplingParams`
normalises them, so the sampler never sees a value that underflows in float32.
"""

from __future__ import annotations

import math
import time
import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from llmspeed.runtime.sequence import SEED_MAX, SEED_MIN

# Fields of the OpenAI API we do not implement; accepted only when they carry their default value.
UNSUPPORTED_DEFAULTS: dict[str, tuple[Any, ...]] = {
    "presence_penalty": (None, 0, 0.0),
    "frequency_penalty": (None, 0, 0.0),
    "repetition_penalty": (None, 1, 1.0),
    "best_of": (None, 1),
    "logit_bias": (None, {}),
    "echo": (None, False),  # chat only: /v1/completions implements it
    "suffix": (None, ""),
    "tools": (None, []),
    "tool_choice": (None, "none"),
    "functions": (None, []),
    "function_call": (None, "none"),
    "parallel_tool_calls": (None,),
    "response_format": (None, {"type": "text"}),
    "min_tokens": (None, 0),
}


def _openapi_unsupported(schema: dict[str, Any]) -> None:
    """Document the contract in /openapi.json: each unsupported OpenAI field may appear with its default value
    only, and any other unknown field only as null (everything else is a 400)."""
    props = schema.setdefault("properties", {})
    for name, defaults in UNSUPPORTED_DEFAULTS.items():
        if name in props:  # implemented by this request type
            continue
        allowed: list[Any] = []
        for d in defaults:  # JSON has one number type: 0 and 0.0 are the same value
            if not any((type(a) is type(d) or (_num(a) and _num(d))) and a == d for a in allowed):
                allowed.append(d)
        props[name] = {"enum": allowed, "description": "not implemented by llmspeed: only the default is accepted"}
    schema["additionalProperties"] = {"type": "null"}


def _num(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _has_nonfinite(v: object) -> bool:
    if isinstance(v, float):
        return not math.isfinite(v)
    if isinstance(v, dict):
        return any(_has_nonfinite(x) for x in v.values())
    if isinstance(v, list):
        return any(_has_nonfinite(x) for x in v)
    return False


def _has_lone_surrogate(v: object) -> bool:
    """JSON may escape half of a UTF-16 pair (\\ud800); such a string is not text (cannot be UTF-8 encoded)."""
    if isinstance(v, str):
        try:
            v.encode("utf-8")
        except UnicodeEncodeError:
            return True
        return False
    if isinstance(v, dict):
        return any(_has_lone_surrogate(k) or _has_lone_surrogate(x) for k, x in v.items())
    if isinstance(v, list):
        return any(_has_lone_surrogate(x) for x in v)
    return False


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    include_usage: bool = False


class _Common(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True, json_schema_extra=_openapi_unsupported)

    model: str | None = None
    max_tokens: int | None = Field(default=None, ge=1)
    temperature: float = Field(default=1.0, ge=0.0, le=2.0, allow_inf_nan=False,
                               description="0..2; below 1e-5 means greedy")
    top_p: float = Field(default=1.0, gt=0.0, le=1.0, allow_inf_nan=False,
                         description="(0, 1]; below 1e-6 means greedy (the nucleus is the top token)")
    top_k: int = Field(default=0, ge=0, description="llmspeed extension: 0 = off")
    seed: int | None = Field(default=None, ge=SEED_MIN, le=SEED_MAX)
    stop: str | list[str] | None = Field(default=None, json_schema_extra={"anyOf": [
        {"type": "string", "minLength": 1},
        {"type": "array", "items": {"type": "string", "minLength": 1}, "maxItems": 4}, {"type": "null"}]})
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: int = Field(default=1, ge=1, le=1, description="only 1 is supported")
    user: str | None = None
    ignore_eos: bool = Field(default=False, description="llmspeed/vLLM extension: generate exactly max_tokens")

    @model_validator(mode="before")
    @classmethod
    def _valid_unicode(cls, data: Any) -> Any:
        if _has_lone_surrogate(data):
            raise ValueError("the request contains a lone UTF-16 surrogate (\\uD800-\\uDFFF), which is not valid text")
        return data

    @field_validator("stop")
    @classmethod
    def _stop(cls, v: str | list[str] | None) -> list[str]:
        stops = [v] if isinstance(v, str) else list(v or [])
        if len(stops) > 4:
            raise ValueError("at most 4 stop sequences")
        if any(not s for s in stops):
            raise ValueError("stop sequences must be non-empty")
        return stops

    def nonfinite_field(self) -> str | None:
        """Name of the first extra field holding NaN or +-inf anywhere inside it (a 400 of its own)."""
        for name, value in (self.model_extra or {}).items():
            if _has_nonfinite(value):
                return name
        return None

    def unsupported_field(self) -> str | None:
        """Name of the first extra field with a non-default value (those are refused, never ignored)."""
        for name, value in (self.model_extra or {}).items():
            defaults = UNSUPPORTED_DEFAULTS.get(name, (None,))
            if not any(value is None if d is None else (type(value) is type(d) and value == d) for d in defaults):
                return name
        return None

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)


MAX_PROMPTS = 64  # prompts in one /v1/completions request (each is one choice)
MAX_LOGPROBS = 20
_IDS = {"type": "array", "items": {"type": "integer", "minimum": 0}, "minItems": 1}
_PROMPT_FORMS = ("a string, a list of strings, a list of token ids or a list of token-id lists "
                 "(one type throughout)")


def _is_id(x: object) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def normalize_prompt(v: object) -> list[str | list[int]]:
    """OpenAI's four prompt forms -> one prompt per choice (a string or a list of token ids); ValueError names
    what is wrong (empty, mixed types, a negative id, too many prompts)."""
    if isinstance(v, str):
        prompts: list[Any] = [v]
    elif isinstance(v, list) and v and all(_is_id(x) for x in v):
        prompts = [v]
    elif isinstance(v, list) and v and (all(isinstance(x, str) for x in v) or all(isinstance(x, list) for x in v)):
        prompts = list(v)
    elif isinstance(v, list) and not v:
        raise ValueError("the prompt list is empty")
    else:
        raise ValueError(f"prompt must be {_PROMPT_FORMS}")
    if len(prompts) > MAX_PROMPTS:
        raise ValueError(f"at most {MAX_PROMPTS} prompts per request, got {len(prompts)}")
    for p in prompts:
        if not p:
            raise ValueError("prompt is empty")
        if isinstance(p, list):
            if not all(_is_id(x) for x in p):
                raise ValueError(f"prompt must be {_PROMPT_FORMS}")
            if min(p) < 0:
                raise ValueError(f"token id {min(p)} is negative")
    return prompts


class CompletionRequest(_Common):
    prompt: Any = Field(description=f"{_PROMPT_FORMS}; each prompt is one choice", json_schema_extra={"anyOf": [
        {"type": "string", "minLength": 1},
        {"type": "array", "items": {"type": "string", "minLength": 1}, "minItems": 1, "maxItems": MAX_PROMPTS},
        _IDS, {"type": "array", "items": _IDS, "minItems": 1, "maxItems": MAX_PROMPTS}]})
    max_tokens: int | None = Field(default=None, ge=0, description="0 only with echo (prompt logprobs alone)")
    echo: bool = Field(default=False, description="prepend the prompt (and its logprobs) to each choice")
    logprobs: int | None = Field(default=None, ge=0, le=MAX_LOGPROBS,
                                 description="log-probabilities of each token and this many top alternatives")

    @field_validator("prompt")
    @classmethod
    def _prompt(cls, v: Any) -> list[str | list[int]]:
        return normalize_prompt(v)


class TextPart(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["text"]
    text: str


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart]
    name: str | None = None

    def text(self) -> str:
        return self.content if isinstance(self.content, str) else "".join(p.text for p in self.content)


class ChatCompletionRequest(_Common):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    logprobs: bool | None = Field(default=None, description="log-probability of each output token")
    top_logprobs: int | None = Field(default=None, ge=0, le=MAX_LOGPROBS,
                                     description="this many most likely tokens per position (needs logprobs)")

    def normalized_messages(self) -> list[dict[str, str]]:
        return [{"role": "system" if m.role == "developer" else m.role, "content": m.text()} for m in self.messages]

    @property
    def token_limit(self) -> int | None:
        return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens


# -- responses ------------------------------------------------------------------------------------------
def new_id(kind: str) -> str:
    return f"{'chatcmpl' if kind == 'chat' else 'cmpl'}-{uuid.uuid4().hex[:24]}"


def usage(prompt_tokens: int, completion_tokens: int, cached_tokens: int = 0) -> dict[str, Any]:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
            "prompt_tokens_details": {"cached_tokens": cached_tokens}}


def full_body(kind: str, rid: str, created: int, model: str, choices: list[dict[str, Any]],
              use: dict[str, Any]) -> dict[str, Any]:
    """`choices`: one {"text", "finish_reason", "logprobs"} per prompt, in order."""
    out: list[dict[str, Any]] = []
    for i, c in enumerate(choices):
        if kind == "chat":
            out.append({"index": i, "message": {"role": "assistant", "content": c["text"]},
                        "logprobs": c.get("logprobs"), "finish_reason": c["finish_reason"]})
        else:
            out.append({"index": i, "text": c["text"], "logprobs": c.get("logprobs"),
                        "finish_reason": c["finish_reason"]})
    obj = "chat.completion" if kind == "chat" else "text_completion"
    return {"id": rid, "object": obj, "created": created, "model": model, "choices": out, "usage": use}


def chunk(kind: str, rid: str, created: int, model: str, text: str | None, finish_reason: str | None,
          first: bool = False, use: dict[str, Any] | None = None, no_choices: bool = False, index: int = 0,
          logprobs: dict[str, Any] | None = None) -> dict[str, Any]:
    choices: list[dict[str, Any]] = []
    if not no_choices:
        if kind == "chat":
            delta: dict[str, Any] = {"role": "assistant", "content": text or ""} if first else (
                {"content": text} if text else {})
            choices = [{"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": finish_reason}]
        else:
            choices = [{"index": index, "text": text or "", "logprobs": logprobs, "finish_reason": finish_reason}]
    obj = "chat.completion.chunk" if kind == "chat" else "text_completion"
    out: dict[str, Any] = {"id": rid, "object": obj, "created": created, "model": model, "choices": choices}
    if use is not None or no_choices:
        out["usage"] = use
    return out


def models_body(model_id: str, created: int | None = None, details: dict[str, Any] | None = None) -> dict[str, Any]:
    """OpenAI's model list; `details` (source, recipe, what the source means) go in an `llmspeed` field."""
    entry: dict[str, Any] = {"id": model_id, "object": "model", "created": created or int(time.time()),
                             "owned_by": "llmspeed"}
    if details:
        entry["llmspeed"] = details
    return {"object": "list", "data": [entry]}
