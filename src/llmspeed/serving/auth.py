"""Bearer-token auth (`--api-key` / `LLMSPEED_API_KEY`) on every route but /health and the dashboard's page and
static files (no data in them: the page asks for the key and sends it on its own fetches); constant-time compare."""

from __future__ import annotations

import hmac
import os
from collections.abc import Awaitable, Callable

from fastapi import FastAPI, Request, Response

from llmspeed.serving.errors import error_response

OPEN_PATHS = frozenset({"/health", "/dashboard"})
OPEN_PREFIXES = ("/dashboard/static/",)


def is_open(path: str) -> bool:
    return path in OPEN_PATHS or path.startswith(OPEN_PREFIXES)


def resolve_api_key(cli_value: str | None) -> str | None:
    """The key to require: the flag wins over LLMSPEED_API_KEY; empty means no auth."""
    key = cli_value if cli_value else os.environ.get("LLMSPEED_API_KEY", "")
    return key or None


def check_bearer(header: str | None, api_key: str) -> bool:
    if not header:
        return False
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(token.strip().encode(), api_key.encode())


def install_auth(app: FastAPI, api_key: str | None) -> None:
    if not api_key:
        return

    @app.middleware("http")
    async def _auth(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        if is_open(request.url.path) or check_bearer(request.headers.get("authorization"), api_key):
            return await call_next(request)
        missing = not request.headers.get("authorization")
        msg = ("missing API key: send 'Authorization: Bearer <key>'" if missing else "invalid API key")
        return error_response(401, msg, None, "invalid_api_key", {"WWW-Authenticate": "Bearer"})
