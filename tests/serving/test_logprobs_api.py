"""echo + logprobs on /v1/completions (OpenAI's legacy format, every prompt form), chat logprobs, /tokenize and
/detokenize: values checked against a full forward of the same model."""

from __future__ import annotations

import json

import httpx
import pytest
import torch

from tests.serving.conftest import API_KEY

H = {"Authorization": f"Bearer {API_KEY}"}
TEXT = "Good night, good night! Parting is such sweet sorrow"


@pytest.fixture(scope="module")
def ref_llm(tiny_model_dir):
    import llmspeed

    return llmspeed.load(tiny_model_dir("llama"))


def _ref_logprobs(llm, ids: list[int]) -> torch.Tensor:
    return torch.log_softmax(llm.logits(torch.tensor([ids]))[0].float(), dim=-1)  # [T, V]


def _post(server, path: str, body: dict) -> dict:
    r = httpx.post(f"{server.url}{path}", json=body, headers=H, timeout=60)
    assert r.status_code == 200, r.text
    return r.json()


def test_echo_logprobs_of_a_text_prompt_match_a_full_forward(server, ref_llm) -> None:
    ids = ref_llm.tokenizer.encode(TEXT)
    out = _post(server, "/v1/completions", {"prompt": TEXT, "echo": True, "logprobs": 3, "max_tokens": 2,
                                            "temperature": 0, "ignore_eos": True})
    c = out["choices"][0]
    lp = c["logprobs"]
    n = len(ids) + 2
    assert len(lp["tokens"]) == len(lp["token_logprobs"]) == len(lp["top_logprobs"]) == len(lp["text_offset"]) == n
    assert lp["token_logprobs"][0] is None and lp["top_logprobs"][0] is None
    assert "".join(lp["tokens"]) == c["text"] and c["text"].startswith(TEXT)
    assert lp["text_offset"] == [sum(len(t) for t in lp["tokens"][:i]) for i in range(n)]
    ref = _ref_logprobs(ref_llm, ids)
    for i in range(1, len(ids)):
        assert abs(lp["token_logprobs"][i] - float(ref[i - 1, ids[i]])) < 1e-4
        top = lp["top_logprobs"][i]
        assert 3 <= len(top) <= 4  # the 3 most likely, plus the token itself when it is not among them
        assert abs(max(top.values()) - float(ref[i - 1].max())) < 1e-4
    # greedy generated tokens: each is the most likely, so its logprob is the top value exactly
    for i in range(len(ids), n):
        assert lp["token_logprobs"][i] == max(lp["top_logprobs"][i].values())
    assert out["usage"]["prompt_tokens"] == len(ids) and out["usage"]["completion_tokens"] == 2


def test_token_id_prompts_one_choice_each_in_order_and_max_tokens_zero(server, ref_llm) -> None:
    prompts = [ref_llm.tokenizer.encode(t) for t in ("To be, or not to be", "All the world's a stage, and all")]
    out = _post(server, "/v1/completions", {"prompt": prompts, "echo": True, "logprobs": 1, "max_tokens": 0,
                                            "temperature": 0, "seed": 1234})
    assert [c["index"] for c in out["choices"]] == [0, 1]
    for ids, c in zip(prompts, out["choices"], strict=True):
        lp = c["logprobs"]
        assert len(lp["token_logprobs"]) == len(ids) and c["finish_reason"] == "length"  # nothing generated
        ref = _ref_logprobs(ref_llm, ids)
        want = ref[:-1].gather(-1, torch.tensor(ids[1:])[:, None])[:, 0]
        assert torch.allclose(torch.tensor(lp["token_logprobs"][1:]), want, atol=1e-4)
        assert c["text"] == ref_llm.tokenizer.decode(ids, skip_special_tokens=False)
    assert out["usage"]["completion_tokens"] == 0
    one = _post(server, "/v1/completions", {"prompt": prompts[1], "echo": True, "logprobs": 1, "max_tokens": 0,
                                            "temperature": 0})
    assert one["choices"][0]["logprobs"]["token_logprobs"] == out["choices"][1]["logprobs"]["token_logprobs"]
    strs = _post(server, "/v1/completions", {"prompt": ["To be, or not to be", "All the world's a stage, and all"],
                                             "max_tokens": 3, "temperature": 0})
    assert len(strs["choices"]) == 2


def test_prompt_logprobs_after_the_prefix_is_cached_are_still_computed(server, ref_llm) -> None:
    text = "Once more unto the breach, dear friends, once more; or close the wall up with our English dead. " * 2
    ids = ref_llm.tokenizer.encode(text)
    _post(server, "/v1/completions", {"prompt": text, "max_tokens": 1, "temperature": 0.5, "seed": 3})  # warms
    out = _post(server, "/v1/completions", {"prompt": text, "echo": True, "logprobs": 0, "max_tokens": 0,
                                            "temperature": 0})
    ref = _ref_logprobs(ref_llm, ids)
    got = out["choices"][0]["logprobs"]["token_logprobs"]
    assert all(v is not None for v in got[1:]) and len(got) == len(ids)
    want = ref[:-1].gather(-1, torch.tensor(ids[1:])[:, None])[:, 0]
    assert torch.allclose(torch.tensor(got[1:]), want, atol=1e-4)
    assert out["usage"]["prompt_tokens_details"]["cached_tokens"] == 0


def test_generated_logprobs_without_echo_and_streamed_echo(server) -> None:
    body = {"prompt": TEXT, "logprobs": 2, "max_tokens": 4, "temperature": 0, "ignore_eos": True}
    out = _post(server, "/v1/completions", body)
    lp = out["choices"][0]["logprobs"]
    assert len(lp["tokens"]) == 4 and "".join(lp["tokens"]) == out["choices"][0]["text"] and lp["text_offset"][0] == 0
    with httpx.stream("POST", f"{server.url}/v1/completions", json=body | {"echo": True, "stream": True, "seed": 9},
                      headers=H, timeout=60) as r:
        events = [json.loads(x[6:]) for x in r.iter_lines() if x.startswith("data: {")]
    chunks = [e["choices"][0] for e in events if e["choices"]]
    text = "".join(c["text"] for c in chunks)
    assert text == TEXT + out["choices"][0]["text"]
    toks = [t for c in chunks if c["logprobs"] for t in c["logprobs"]["token_logprobs"]]
    assert toks[0] is None and toks[-4:] == pytest.approx(lp["token_logprobs"], abs=1e-5)  # lm_head over [T] vs [1]


def test_chat_logprobs_in_the_chat_format(server) -> None:
    msgs = [{"role": "user", "content": "Speak the speech, I pray you"}]
    out = _post(server, "/v1/chat/completions", {"messages": msgs, "logprobs": True, "top_logprobs": 2,
                                                 "max_tokens": 3, "temperature": 0, "ignore_eos": True})
    content = out["choices"][0]["logprobs"]["content"]
    assert len(content) == 3
    for e in content:
        assert set(e) == {"token", "logprob", "bytes", "top_logprobs"} and len(e["top_logprobs"]) == 2
        assert e["logprob"] == e["top_logprobs"][0]["logprob"]  # greedy
        assert e["bytes"] == list(e["token"].encode())


def test_tokenize_and_detokenize(server, ref_llm) -> None:
    t = _post(server, "/tokenize", {"prompt": TEXT, "return_token_strs": True})
    assert t["tokens"] == ref_llm.tokenizer.encode(TEXT) and t["count"] == len(t["tokens"])
    assert len(t["token_strs"]) == t["count"] and t["max_model_len"] > 0
    assert _post(server, "/detokenize", {"tokens": t["tokens"]})["prompt"] == TEXT
    chat = _post(server, "/tokenize", {"messages": [{"role": "user", "content": "hi"}]})
    assert chat["count"] > 1
    for path, body, param in [("/detokenize", {"tokens": [10**6]}, "tokens"),
                              ("/tokenize", {"prompt": "a", "messages": [{"role": "user", "content": "b"}]}, None)]:
        r = httpx.post(f"{server.url}{path}", json=body, headers=H, timeout=30)
        assert r.status_code == 400 and r.json()["error"]["param"] == param, r.text
    assert httpx.post(f"{server.url}/tokenize", json={"prompt": "x"}, timeout=30).status_code == 401


def test_several_prompts_stream_interleaved_by_index(server) -> None:
    body = {"prompt": ["Now is the winter", "Friends, Romans"], "max_tokens": 6, "temperature": 0,
            "ignore_eos": True, "logprobs": 1, "echo": True}
    whole = _post(server, "/v1/completions", body)
    with httpx.stream("POST", f"{server.url}/v1/completions", json=body | {"stream": True, "seed": 5}, headers=H,
                      timeout=60) as r:
        events = [json.loads(x[6:]) for x in r.iter_lines() if x.startswith("data: {")]
    texts, reasons, lps = ["", ""], [None, None], [[], []]
    for e in events:
        for c in e["choices"]:
            texts[c["index"]] += c["text"]
            reasons[c["index"]] = c["finish_reason"] or reasons[c["index"]]
            lps[c["index"]] += (c["logprobs"] or {}).get("token_logprobs", [])
    assert texts == [c["text"] for c in whole["choices"]] and reasons == ["length", "length"]
    for got, c in zip(lps, whole["choices"], strict=True):
        assert got[0] is None and got[1:] == pytest.approx(c["logprobs"]["token_logprobs"][1:], abs=1e-5)
