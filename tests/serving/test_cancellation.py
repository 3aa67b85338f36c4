"""Client disconnects abort the request in the engine (its KV blocks are freed). Deterministic: the engine
thread is not started, so nothing finishes on its own; the test steps the engine by hand."""

from __future__ import annotations

import asyncio

import pytest


@pytest.fixture()
def parts(tiny_llm):
    from llmspeed.serving import schemas as S
    from llmspeed.serving.app import create_app
    from llmspeed.serving.config import ServerConfig

    app = create_app(tiny_llm, ServerConfig(model_name="tiny", cache_l1=0))  # lifespan not run: no thread
    return app.state.service, app.state.engine_loop, S


def test_non_streamed_disconnect_aborts(parts) -> None:
    from llmspeed.serving.generation import ClientGone

    service, loop, S = parts
    p = service.prepare(S.CompletionRequest(prompt="Alas, poor Yorick", max_tokens=50), "completion")
    calls = []

    async def gone() -> bool:
        calls.append(1)
        return True

    async def go() -> None:
        with pytest.raises(ClientGone):
            await service.run(p, gone)

    asyncio.run(go())
    assert calls and loop.num_in_flight == 1
    seq = _find(loop, p.rid)
    loop.engine.step()  # drains the add and the abort
    assert seq.finished and seq.finish_reason == "abort" and not seq.output_ids
    loop._dispatch(seq)
    assert loop.num_in_flight == 0 and not loop.engine.has_work()
    assert loop.stats().kv_blocks_used == 0


def _find(loop, rid):
    return loop._tickets[rid].seq


def test_stream_closed_early_aborts(parts) -> None:
    service, loop, S = parts
    p = service.prepare(S.ChatCompletionRequest(messages=[{"role": "user", "content": "Hi"}], max_tokens=50), "chat")

    async def go() -> None:
        gen = await service.stream(p, include_usage=False)
        first = await gen.__anext__()  # the role chunk, before any token
        assert b'"role": "assistant"' in first
        await gen.aclose()  # what Starlette does when the client disconnects

    asyncio.run(go())
    seq = _find(loop, p.rid)
    loop.engine.step()
    assert seq.finished and seq.finish_reason == "abort"
    loop._dispatch(seq)
    assert loop.num_in_flight == 0 and loop.stats().kv_blocks_used == 0


def test_engine_thread_aborts_requests_past_their_deadline(parts) -> None:
    """Safety net: a stream whose client vanished before the body started is still aborted at its deadline."""
    service, loop, S = parts
    p = service.prepare(S.CompletionRequest(prompt="Nobody listens", max_tokens=50), "completion")
    seq = loop.engine.make_sequence(p.prompts[0], p.params, seq_id=p.rid)

    async def go() -> None:
        loop.submit(seq, timeout=0.0)

    asyncio.run(go())
    loop._abort_expired()
    loop.engine.step()
    assert seq.finished and seq.finish_reason == "abort"
