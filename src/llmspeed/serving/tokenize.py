"""`POST /tokenize` and `POST /detokenize` in vLLM's shapes (behind the same auth as the API).

/tokenize: {"prompt": str, "add_special_tokens": true} or {"messages": [...], "add_generation_prompt": true}
-> {"count", "max_model_len", "tokens", "token_strs"}; /detokenize: {"tokens": [int]} -> {"prompt": str}.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel, ConfigDict, Field, model_validator

from llmspeed.serving.errors import APIError
from llmspeed.serving.schemas import ChatMessage

MAX_TOKENS_IN = 1 << 17


class TokenizeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    model: str | None = None
    prompt: str | None = Field(default=None, description="text to tokenize (or messages)")
    messages: list[ChatMessage] | None = Field(default=None, min_length=1,
                                               description="chat messages, rendered with the chat template")
    add_special_tokens: bool | None = Field(default=None, description="default: true for prompt, false for messages")
    add_generation_prompt: bool = True
    return_token_strs: bool = False

    @model_validator(mode="after")
    def _one_input(self) -> TokenizeRequest:
        if (self.prompt is None) == (self.messages is None):
            raise ValueError("give exactly one of prompt or messages")
        return self


class DetokenizeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    model: str | None = None
    tokens: list[int] = Field(max_length=MAX_TOKENS_IN, json_schema_extra={"items": {"type": "integer", "minimum": 0}})


def install_tokenize_routes(app: FastAPI, llm: Any, aliases: frozenset[str], model_name: str,
                            max_model_len: int) -> None:
    tok = llm.tokenizer
    vocab = llm.model.config.vocab_size

    def _model(name: str | None) -> None:
        if name is not None and name not in aliases:
            raise APIError(404, f"model '{name}' does not exist; this server serves '{model_name}'", "model",
                           "model_not_found")

    @app.post("/tokenize", summary="Token ids of a prompt or of chat messages (vLLM's shape)")
    async def tokenize(req: TokenizeRequest) -> dict[str, Any]:
        _model(req.model)
        if req.messages is not None:
            msgs = [{"role": "system" if m.role == "developer" else m.role, "content": m.text()} for m in req.messages]
            try:
                text = tok.apply_chat_template(msgs, add_generation_prompt=req.add_generation_prompt)
            except ValueError as e:
                raise APIError(400, str(e), "messages", "invalid_value") from None
            ids = tok.encode(text, add_special_tokens=bool(req.add_special_tokens))
        else:
            ids = tok.encode(req.prompt or "", add_special_tokens=req.add_special_tokens is not False)
        strs = [tok.token_text(i) for i in ids] if req.return_token_strs else None
        return {"count": len(ids), "max_model_len": max_model_len, "tokens": ids, "token_strs": strs}

    @app.post("/detokenize", summary="Text of token ids (vLLM's shape)")
    async def detokenize(req: DetokenizeRequest) -> dict[str, Any]:
        _model(req.model)
        bad = [t for t in req.tokens if not 0 <= t < vocab]
        if bad:
            raise APIError(400, f"token id {bad[0]} is outside the vocabulary (0..{vocab - 1})", "tokens",
                           "invalid_value")
        return {"prompt": tok.decode(req.tokens)}
