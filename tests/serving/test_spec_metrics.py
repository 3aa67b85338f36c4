"""A server with `--draft ngram`: greedy completions as without it, and vLLM-named speculative counters."""

from __future__ import annotations

import httpx


def test_metrics_count_draft_and_accepted_tokens(tiny_model_dir) -> None:
    import llmspeed
    from llmspeed.serving.app import create_app
    from llmspeed.serving.config import ServerConfig
    from llmspeed.serving.server import ThreadedServer

    llm = llmspeed.load(tiny_model_dir("llama"), draft="ngram:4")
    srv = ThreadedServer(create_app(llm, ServerConfig(model_name="tiny", cache_l1=0, cache_l2="none"))).start()
    try:
        prompt = "O Romeo, Romeo, wherefore art thou Romeo? O Romeo, Romeo, wherefore art"
        body = {"model": "tiny", "prompt": prompt, "max_tokens": 16, "temperature": 0}
        r = httpx.post(f"{srv.url}/v1/completions", json=body, timeout=60)
        assert r.status_code == 200
        text = httpx.get(f"{srv.url}/metrics", timeout=10).text
    finally:
        srv.stop()
    vals = {ln.split()[0]: float(ln.split()[1]) for ln in text.splitlines()
            if ln.startswith("llmspeed:spec_decode_num_")}
    drafted = vals["llmspeed:spec_decode_num_draft_tokens_total"]
    accepted = vals["llmspeed:spec_decode_num_accepted_tokens_total"]
    assert drafted > 0 and 0 <= accepted <= drafted
    llm.set_draft(None)
    plain = llm.generate(prompt, max_new_tokens=16)[0].text
    assert r.json()["choices"][0]["text"] == plain
