"""The OpenAI-compatible server, driven by the official ``openai`` client against a live server on 127.0.0.1, on
each engine (``engine_kind``): every reply is the engine's own greedy reply computed apart (``greedy_reply``)."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

pytest.importorskip("fastapi")
openai = pytest.importorskip("openai")

from _serve_utils import engine_kind, greedy_reply, make_engine, tiny_generator  # noqa: E402, F401

MSG = "What is 2 + 3?"
N = 12  # completion tokens per request


@pytest.fixture(scope="module")
def server(tmp_path_factory, engine_kind):
    from text2lora.serve.engine import EngineConfig
    from text2lora.serve.server import ServerThread, create_app

    base, gen = tiny_generator(tmp_path_factory.mktemp("serve"))
    engine = make_engine(engine_kind, base, gen, EngineConfig(batch_wait_ms=30, max_batch=64, max_tokens_limit=64))
    with ServerThread(create_app(engine)) as srv:
        srv.engine = engine
        srv.client = openai.OpenAI(base_url=srv.url + "/v1", api_key="unused", max_retries=0, timeout=120)
        yield srv


def _alone(srv, messages, adapter) -> str:
    """The greedy reply of ``adapter`` alone, computed outside the server (``greedy_reply``)."""
    return greedy_reply(srv.engine, srv.engine.chat_ids(messages), adapter, N)


def _ask(srv, model, msg=MSG, **kw):
    return srv.client.chat.completions.create(model=model, messages=[{"role": "user", "content": msg}],
                                              max_tokens=N, **kw)


def test_models_lists_the_base(server):
    ids = [m.id for m in server.client.models.list()]
    assert ids[0] == server.engine.base_name


def test_plain_chat_on_the_base_model_matches_direct_generation(server):
    r = _ask(server, server.engine.base_name)
    assert r.object == "chat.completion" and r.choices[0].message.role == "assistant"
    assert r.choices[0].message.content == _alone(server, MSG, None)
    assert r.usage.completion_tokens <= N and r.choices[0].finish_reason in ("stop", "length")
    assert r.t2l["adapter"] is None


def test_description_as_model_generates_once_then_hits_the_cache(server):
    desc = "Answer arithmetic questions with a single number."
    before = server.engine.store.snapshot()
    first = _ask(server, f"t2l:{desc}")
    second = _ask(server, f"t2l:{desc}")
    after = server.engine.store.snapshot()
    assert first.t2l["cache_hit"] is False and second.t2l["cache_hit"] is True
    assert after["misses"] == before["misses"] + 1 and after["hits"] >= before["hits"] + 1
    assert first.model == second.model == first.t2l["adapter"]
    adapter = server.engine.store.get(desc)[0]
    assert first.choices[0].message.content == second.choices[0].message.content == _alone(server, MSG, adapter)
    assert first.choices[0].message.content != _alone(server, MSG, None)  # the adapter changed the reply


def test_adapter_endpoint_id_and_extra_body_field_pick_the_same_adapter(server):
    import httpx

    desc = "Translate English sentences into French."
    made = httpx.post(server.url + "/v1/adapters", json={"description": desc}).json()
    assert made["id"].startswith("t2l-") and made["description"] == desc and made["cached"] is False
    got = httpx.get(f"{server.url}/v1/adapters/{made['id']}").json()
    assert got["id"] == made["id"] and got["rank"] == 8
    assert made["id"] in [m.id for m in server.client.models.list()]
    by_id = _ask(server, made["id"])
    by_field = _ask(server, "anything", extra_body={"t2l_description": desc})
    assert by_id.t2l["cache_hit"] is True and by_field.t2l["adapter"] == made["id"]
    assert by_id.choices[0].message.content == by_field.choices[0].message.content
    named = httpx.post(server.url + "/v1/adapters", json={"description": desc, "name": "french"}).json()
    assert named["id"] == "french" and named["cached"] is True
    assert _ask(server, "french").choices[0].message.content == by_id.choices[0].message.content


def test_streaming_chat_sends_the_same_text_in_pieces(server):
    model = "t2l:Write short poems about the sea."
    whole = _ask(server, model).choices[0].message.content
    pieces, finish, usage = [], None, None
    for chunk in _ask(server, model, stream=True, stream_options={"include_usage": True}):
        if chunk.usage is not None:
            usage = chunk.usage
        for c in chunk.choices:
            if c.delta.content:
                pieces.append(c.delta.content)
            finish = c.finish_reason or finish
    assert "".join(pieces) == whole and len(pieces) > 1
    assert finish in ("stop", "length") and 0 < usage.completion_tokens <= N


def test_completions_plain_and_streaming(server):
    kw = dict(model="t2l:Continue the story.", prompt="Once upon a time", max_tokens=N)
    r = server.client.completions.create(**kw)
    assert r.object == "text_completion" and r.choices[0].text
    streamed = "".join(c.choices[0].text for c in server.client.completions.create(stream=True, **kw) if c.choices)
    assert streamed == r.choices[0].text
    echoed = server.client.completions.create(echo=True, **kw)
    assert echoed.choices[0].text == "Once upon a time" + r.choices[0].text


def test_stop_string_ends_the_reply(server):
    full = _ask(server, server.engine.base_name).choices[0].message.content
    stop = full[3:5]
    assert stop and stop.strip("\ufffd")
    r = _ask(server, server.engine.base_name, stop=[stop])
    assert r.choices[0].finish_reason == "stop" and r.choices[0].message.content == full[: full.index(stop)]


def test_mixed_adapters_arriving_together_share_one_forward_pass(server):
    """PyTorch: requests with different adapters arriving together run in one batch. llama.cpp: they run one
    after another, each with its own adapter. Either way each reply is its adapter's alone."""
    models = ["t2l:Sort words alphabetically.", server.engine.base_name, "t2l:Classify the sentiment.",
              "t2l:Answer yes or no."]
    for m in models:  # generate the adapters first, so the requests reach the batcher together
        _ask(server, m)
    torch_engine = server.engine.kind == "torch"
    if torch_engine:
        server.engine.batcher.wait_s = 1.0  # a wide window: on a loaded CI machine the threads may start late
    try:
        before = server.engine.stats()["batcher"]["batches"]
        gate = threading.Barrier(len(models))

        def one(m):
            gate.wait(timeout=30)
            return _ask(server, m)

        with ThreadPoolExecutor(len(models)) as ex:
            out = list(ex.map(one, models))
    finally:
        if torch_engine:
            server.engine.batcher.wait_s = 0.03
    after = server.engine.stats()["batcher"]["batches"]
    if torch_engine:
        assert {r.t2l["batch_id"] for r in out} == {out[0].t2l["batch_id"]}
        assert all(r.t2l["batch_size"] == len(models) for r in out)
        assert after == before + 1
    else:
        assert len({r.t2l["batch_id"] for r in out}) == len(models) and after == before + len(models)
        assert all(r.t2l["batch_size"] == 1 for r in out)
    for m, r in zip(models, out):
        ad = None if m == server.engine.base_name else server.engine.store.get(m[4:])[0]
        assert r.choices[0].message.content == _alone(server, MSG, ad)


def test_fifty_concurrent_requests_with_distinct_adapters_each_match_their_adapter_alone(server):
    descs = [f"Task {i}: answer questions about subject number {i}." for i in range(50)]
    before = server.engine.stats()["batcher"]
    t0 = time.monotonic()
    with ThreadPoolExecutor(50) as ex:
        out = list(ex.map(lambda d: _ask(server, f"t2l:{d}"), descs))
    assert time.monotonic() - t0 < 90
    after = server.engine.stats()["batcher"]
    assert after["rows"] - before["rows"] == 50
    if server.engine.kind == "torch":  # they were batched
        assert after["batches"] - before["batches"] < 50 and after["max_batch_size"] > 1
    else:  # one after another, each with its adapter: no adapter leaks into the next request
        assert after["batches"] - before["batches"] == 50 and after["max_batch_size"] == 1
    replies = [r.choices[0].message.content for r in out]
    assert len(set(replies)) > 1  # the adapters differ, and so do their replies
    for d, r, reply in zip(descs, out, replies):
        adapter = server.engine.store.get(d)[0]
        assert r.t2l["adapter"] == server.engine.store.lookup(r.t2l["adapter"]).id
        assert reply == _alone(server, MSG, adapter), d
