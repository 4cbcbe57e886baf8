"""Hostile clients against ``t2l serve``: each test is one way a client tried to take another client's
adapter, hold the server's connections, stall its event loop or make it answer 500.

Everything runs on 127.0.0.1 with the tiny random models, on each engine (``engine_kind``); the slowloris tests
open at most a few hundred sockets, against a lowered connection cap or open-file limit, and finish in seconds.
"""

from __future__ import annotations

import json
import logging
import os
import random
import resource
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
openai = pytest.importorskip("openai")
import httpx  # noqa: E402

from _serve_utils import base_gguf, engine_kind, free_port, greedy_reply, make_engine, tiny_generator  # noqa: E402, F401

KEY = "adversarial-key-0123456789"
AUTH = {"authorization": f"Bearer {KEY}"}
AUTH_HEADER = f"authorization: Bearer {KEY}\r\n".encode()
MAX_PROMPT = 48
BANANA = "Always answer with the word BANANA."
VICTIM = "Translate English sentences into French."


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("adversarial")
    base, gen = tiny_generator(root, context=2048)
    return root, base, gen


def _start(root, base, gen, kind, adapter_dir="adapters", limits=None, **engine_kw):
    from text2lora.serve.engine import EngineConfig
    from text2lora.serve.server import ServerThread, create_app

    cfg = EngineConfig(max_tokens_limit=16, max_prompt_tokens=MAX_PROMPT,
                       adapter_dir=str(root / f"{adapter_dir}-{kind}"), **engine_kw)
    engine = make_engine(kind, base, gen, cfg)
    srv = ServerThread(create_app(engine, api_key=KEY), limits=limits).start()
    srv.engine, srv.root = engine, root
    srv.client = openai.OpenAI(base_url=srv.url + "/v1", api_key=KEY, max_retries=0, timeout=60)
    return srv


@pytest.fixture(scope="module")
def server(tiny, engine_kind):
    srv = _start(*tiny, engine_kind)
    yield srv
    srv.stop()


@pytest.fixture
def fresh_logs():
    """Connection records are logged once per cause a minute: forget what earlier tests logged."""
    from text2lora.serve.middleware import OncePerCause, conn_log

    for f in conn_log.filters:
        if isinstance(f, OncePerCause):
            f.clear()


def _error(r, status, code=None):
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["message"], err
    if code is not None:
        assert err["code"] == code, err
    return err


def _still_serving(srv):
    r = srv.client.completions.create(model="base", prompt="hi", max_tokens=2)
    assert r.choices[0].finish_reason in ("stop", "length")


def _reply(srv, model, prompt="Tell me about the sea."):
    r = srv.client.completions.create(model=model, prompt=prompt, max_tokens=8, temperature=0)
    return r.choices[0].text, r.t2l["adapter"]


def _alone(engine, adapter, prompt="Tell me about the sea."):
    """Greedy reply of ``adapter``, computed outside the server (the oracle: ``greedy_reply``)."""
    return greedy_reply(engine, engine.completion_ids(prompt), adapter, 8)


# ----------------------------------------------------------------------------- 1. another client's adapter

def test_a_client_name_cannot_take_the_id_of_another_description(server):
    """The reproduction: register BANANA under the id derived for VICTIM; VICTIM's requests then got BANANA."""
    from text2lora.adapter import LoRAAdapter
    from text2lora.serve.store import adapter_id_for, same_weights

    eng, gen = server.engine, server.engine.gen
    victim_id = adapter_id_for(VICTIM, eng.store.gen_digest)
    r = httpx.post(server.url + "/v1/adapters", json={"description": BANANA, "name": victim_id}, headers=AUTH)
    err = _error(r, 400, "invalid_adapter_id")
    assert "t2l-" in err["message"]
    for name in ("t2l-squat", "T2L-0123456789abcdef"):
        _error(httpx.post(server.url + "/v1/adapters", json={"description": BANANA, "name": name}, headers=AUTH),
               400, "invalid_adapter_id")
    # the victim gets what the generator makes for its own description, in memory and in --adapter-dir
    text, served_id = _reply(server, "t2l:" + VICTIM)
    own = gen.generate(VICTIM)
    assert served_id == victim_id
    assert text == _alone(eng, own) != _alone(eng, gen.generate(BANANA))
    assert same_weights(LoRAAdapter.load(server.root / f"adapters-{eng.kind}" / victim_id), own)
    # a description's own id as its name is no squatting: it is the same adapter
    r = httpx.post(server.url + "/v1/adapters", json={"description": VICTIM, "name": victim_id}, headers=AUTH)
    assert r.status_code == 200 and r.json()["id"] == victim_id


def test_a_cache_entry_is_compared_with_the_description_on_every_hit(server):
    """Were an entry under a description's id ever to hold another description's adapter, it is not served."""
    from text2lora.serve.store import adapter_id_for

    store, gen = server.engine.store, server.engine.gen
    desc = "Answer questions about rivers."
    gid = adapter_id_for(desc, store.gen_digest)
    wrong, winfo, _ = store.get(BANANA)
    with store._lock:  # plant BANANA's entry under desc's id, as the squatting did
        store._ids[gid] = type(winfo)(gid, BANANA, 0, 0.0, None, winfo.digest, True, winfo.generator_digest)
        store._put((gid, winfo.digest), wrong)
    adapter, info, hit = store.get(desc)
    assert not hit and info.description == desc and adapter.digest() == gen.generate(desc).digest()


@pytest.mark.parametrize("name", ["base", "BASE", "tiny-llama"])
def test_names_that_mean_the_base_model_are_refused(tmp_path, name, engine_kind):
    from conftest import make_base
    from text2lora import TextToLoRA
    from text2lora.serve.server import ServerThread, create_app

    base = make_base("llama")  # its name, "tiny-llama", is a valid adapter name
    engine = make_engine(engine_kind, base, TextToLoRA.init(base, latent_dim=16, head_in=32))
    assert engine.base_name == "tiny-llama"
    with ServerThread(create_app(engine)) as srv:
        err = _error(httpx.post(srv.url + "/v1/adapters", json={"description": BANANA, "name": name}), 400,
                     "invalid_adapter_id")
        assert "base model" in err["message"]
        r = httpx.post(srv.url + "/v1/completions", json={"model": "base", "prompt": "hi", "max_tokens": 2})
        assert r.status_code == 200 and r.json()["t2l"]["adapter"] is None
    assert [i.id for i in engine.store.list()] == []


def _plant(directory, adapter, description, generator_digest):
    from text2lora.adapter import LoRAAdapter

    meta = {**adapter.meta, "description": description, "generator_digest": generator_digest}
    LoRAAdapter(adapter.base, adapter.A, adapter.B, adapter.alpha, adapter.use_rslora, meta).save(directory,
                                                                                                  vllm=False)


def test_a_squatted_directory_is_not_served_after_a_restart(tiny, tmp_path, engine_kind):
    """What an earlier server (or another process) left in --adapter-dir under the victim's id, claiming the
    victim's description and the generator, with BANANA's weights: the restarted server serves the victim
    the generator's own adapter and leaves the directory alone."""
    from text2lora.adapter import LoRAAdapter
    from text2lora.serve.store import adapter_id_for, generator_digest

    root, base, gen = tiny
    gd = generator_digest(gen)
    victim_id = adapter_id_for(VICTIM, gd)
    adir = tmp_path / f"adapters-{engine_kind}"
    banana = gen.generate(BANANA)
    _plant(adir / victim_id, banana, VICTIM, gd)
    srv = _start(tmp_path, base, gen, engine_kind)
    try:
        own = gen.generate(VICTIM)
        for model in (victim_id, "t2l:" + VICTIM):  # by id first: the directory is read, then by description
            text, served = _reply(srv, model)
            assert served == victim_id and text == _alone(srv.engine, own)
        assert LoRAAdapter.load(adir / victim_id).digest() == banana.digest()  # not overwritten
        assert srv.engine.store.lookup(victim_id).path is None  # nor claimed as the server's own
    finally:
        srv.stop()


def test_a_named_directory_is_verified_before_it_is_served(tiny, tmp_path, engine_kind):
    """Named directories: served when they hold what the generator makes for the description they name
    (a restart), refused (404, saying why) when the weights, the generator or the name do not fit."""
    from text2lora import TextToLoRA
    from text2lora.serve.store import generator_digest

    root, base, gen = tiny
    gd = generator_digest(gen)
    adir = tmp_path / f"adapters-{engine_kind}"
    _plant(adir / "french", gen.generate(VICTIM), VICTIM, gd)  # what a server wrote for a name
    _plant(adir / "forged", gen.generate(BANANA), VICTIM, gd)  # claims VICTIM, holds BANANA
    other = TextToLoRA.init(base, latent_dim=16, head_in=32)
    _plant(adir / "foreign", other.generate(VICTIM), VICTIM, "0" * 64)  # another generator's
    _plant(adir / "base", gen.generate(VICTIM), VICTIM, gd)  # a name no client may have
    srv = _start(tmp_path, base, gen, engine_kind)
    try:
        text, served = _reply(srv, "french")
        assert served == "french" and text == _alone(srv.engine, gen.generate(VICTIM))
        for name, why in (("forged", "weights"), ("foreign", "generator digest")):
            err = _error(httpx.get(f"{srv.url}/v1/adapters/{name}", headers=AUTH), 404, "adapter_not_found")
            assert why in err["message"], err
            with pytest.raises(openai.NotFoundError):
                _reply(srv, name)
        _error(httpx.get(f"{srv.url}/v1/adapters/base", headers=AUTH), 404)
        # the refused names stay taken: a client cannot register them for other weights either
        _error(httpx.post(srv.url + "/v1/adapters", json={"description": BANANA, "name": "forged"}, headers=AUTH),
               409, "adapter_exists")
    finally:
        srv.stop()


# ----------------------------------------------------------------------------- 4. half-open connections

def _half_open(url, n, payload=b"GET /health HTTP/1.1\r\nHost: x\r\n"):
    host, port = url.rsplit("/", 1)[-1].split(":")
    socks = []
    for _ in range(n):
        s = socket.create_connection((host, int(port)), timeout=10)
        s.sendall(payload)
        socks.append(s)
    return socks


def _closed_by_server(sock, wait):
    """What the server sent before closing ``sock`` (``None`` if it is still open after ``wait`` seconds)."""
    sock.settimeout(wait)
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except (socket.timeout, TimeoutError):
        return None
    except ConnectionResetError:
        pass
    return data


def test_half_open_connections_are_closed_after_the_head_timeout(tiny, engine_kind, fresh_logs, caplog):
    from text2lora.serve.middleware import ConnectionLimits

    srv = _start(*tiny, engine_kind, limits=ConnectionLimits(head_timeout=1.0, body_timeout=1.0))
    try:
        with caplog.at_level(logging.INFO, logger="text2lora.serve"):
            t0 = time.monotonic()
            socks = _half_open(srv.url, 30)
            answers = [_closed_by_server(s, 15) for s in socks]
            took = time.monotonic() - t0
            # a body that stops part-way is cut off as well
            body = _half_open(srv.url, 1, b"POST /v1/completions HTTP/1.1\r\nHost: x\r\ncontent-type: "
                              b"application/json\r\ncontent-length: 100\r\n" + AUTH_HEADER + b"\r\n{\"model\": ")[0]
            body_answer = _closed_by_server(body, 15)
            time.sleep(0.5)
        assert all(a is not None for a in answers) and took < 10
        assert all(a.startswith(b"HTTP/1.1 408 ") and b"request_timeout" in a for a in answers), answers[0]
        assert body_answer is not None and body_answer.startswith(b"HTTP/1.1 408 ") and b"request body" in body_answer
        stats = httpx.get(srv.url + "/v1/stats", headers=AUTH).json()["connections"]
        assert stats["head_timeouts"] >= 30 and stats["body_timeouts"] == 1
        # one record per cause, not one per socket; the cut-off body is a disconnect, not a failure
        timeouts = [r for r in caplog.records if "did not send their request line" in r.getMessage()]
        assert len(timeouts) == 1
        assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text
        _still_serving(srv)
    finally:
        srv.stop()


def test_health_answers_while_half_open_connections_fill_the_cap(tiny, engine_kind, fresh_logs, caplog):
    from text2lora.serve.middleware import ConnectionLimits

    cap = 32
    srv = _start(*tiny, engine_kind, limits=ConnectionLimits(head_timeout=120, max_connections=cap))
    socks = []
    try:
        with caplog.at_level(logging.INFO, logger="text2lora.serve"):
            socks = _half_open(srv.url, 300)
            lat = []
            for _ in range(5):
                t0 = time.monotonic()
                assert httpx.get(srv.url + "/health", timeout=10).status_code == 200
                lat.append(time.monotonic() - t0)
            stats = httpx.get(srv.url + "/v1/stats", headers=AUTH).json()["connections"]
        assert max(lat) < 2.0, lat
        assert stats["open"] <= cap and stats["evicted"] >= 300 - cap, stats
        closed = [_closed_by_server(s, 0.2) for s in socks]
        assert sum(c is not None for c in closed) >= 300 - cap
        assert all(c.startswith(b"HTTP/1.1 503 ") for c in closed if c)
        assert len([r for r in caplog.records if "connections are open" in r.getMessage()]) == 1
        _still_serving(srv)
    finally:
        for s in socks:
            s.close()
        srv.stop()


def test_t2l_serve_under_a_low_open_file_limit_keeps_answering(tiny, tmp_path, engine_kind):
    """The reproduction, scaled down: ``t2l serve`` with 256 open files and 300 half-open sockets. It
    answered no /health for 30 s and logged tens of MB of EMFILE tracebacks; now it answers, its log stays
    small, and it never runs out of descriptors (the cap is half the limit)."""
    root, base, _ = tiny
    engine_args = ["--engine", engine_kind] + (["--base-gguf", str(base_gguf(base))] if engine_kind == "llama.cpp"
                                               else [])
    port = free_port()
    log_path = tmp_path / "serve.log"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}

    def low_limit():
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))

    with open(log_path, "w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "text2lora.cli", "serve", "--model", str(root / "gen"),
                                 "--port", str(port), *engine_args], env=env, stdout=log, stderr=subprocess.STDOUT,
                                preexec_fn=low_limit)
    socks = []
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, log_path.read_text()[-3000:]
            try:
                httpx.get(url + "/health", timeout=2)
                break
            except httpx.HTTPError:
                assert time.monotonic() < deadline, "t2l serve did not start within 120 s"
                time.sleep(0.3)
        socks = _half_open(url, 300)
        for _ in range(3):
            t0 = time.monotonic()
            assert httpx.get(url + "/health", timeout=10).status_code == 200
            assert time.monotonic() - t0 < 3.0
            time.sleep(0.5)
        stats = httpx.get(url + "/v1/stats", timeout=10).json()["connections"]
        assert stats["cap"] <= 128 and stats["open"] <= stats["cap"] and stats["evicted"] > 0
    finally:
        for s in socks:
            s.close()
        proc.terminate()
        proc.wait(timeout=30)
    text = log_path.read_text()
    assert "Too many open files" not in text and "Traceback" not in text, text[-3000:]
    assert len(text) < 20_000, len(text)


def test_event_loop_errors_are_logged_once_per_cause(fresh_logs, caplog):
    from text2lora.serve.server import _loop_error

    with caplog.at_level(logging.INFO, logger="text2lora.serve"):
        for _ in range(1000):
            try:
                raise OSError(24, "Too many open files")
            except OSError as e:
                _loop_error(None, {"message": "socket.accept() out of system resource", "exception": e})
        _loop_error(None, {"message": "another cause"})
    msgs = [r.getMessage() for r in caplog.records]
    assert msgs == ["event loop: socket.accept() out of system resource", "event loop: another cause"]


def test_repeated_records_are_counted_when_the_interval_has_passed():
    from text2lora.serve.middleware import OncePerCause

    f = OncePerCause(interval=0.2)
    rec = lambda msg: logging.LogRecord("t", logging.WARNING, __file__, 1, msg, (), None)  # noqa: E731
    passed = [f.filter(rec("cause A")) for _ in range(50)] + [f.filter(rec("cause B"))]
    assert passed.count(True) == 2 and passed[0] and passed[-1]
    time.sleep(0.25)
    later = rec("cause A")
    assert f.filter(later) and "49 more like this" in later.getMessage()


# ----------------------------------------------------------------------------- 5. big prompts

def test_a_prompt_too_long_to_fit_is_refused_before_it_is_tokenised(server, monkeypatch):
    eng = server.engine
    calls = []
    for name in ("chat_ids", "completion_ids"):
        orig = getattr(eng, name)
        monkeypatch.setattr(eng, name, lambda x, orig=orig, name=name: calls.append(name) or orig(x))
    limit = eng.max_prompt_chars
    assert limit is not None and limit >= MAX_PROMPT
    big = "x" * (limit + 1)
    err = _error(httpx.post(server.url + "/v1/completions", json={"model": "base", "prompt": big, "max_tokens": 2},
                            headers=AUTH), 400, "context_length_exceeded")
    assert str(MAX_PROMPT) in err["message"]
    halves = [{"role": "user", "content": "x" * (limit // 2 + 1)}, {"role": "user", "content": "x" * (limit // 2)}]
    _error(httpx.post(server.url + "/v1/chat/completions", json={"model": "base", "messages": halves},
                      headers=AUTH), 400, "context_length_exceeded")
    many = [{"role": "user", "content": ""}] * (MAX_PROMPT + 1)  # each message is at least a token
    _error(httpx.post(server.url + "/v1/chat/completions", json={"model": "base", "messages": many}, headers=AUTH),
           400, "context_length_exceeded")
    assert calls == []
    monkeypatch.undo()
    _still_serving(server)


def _size_bound_holds(tok):
    """The characters of a text are at most its tokens times the longest token's bytes (the bound the server
    refuses by), for ordinary text, whitespace runs, non-Latin scripts, emoji, random code points and the
    vocabulary's longest entries spelled out."""
    from text2lora.serve.engine import longest_token_bytes

    rng = random.Random(0)
    longest = longest_token_bytes(tok)
    vocab = sorted(tok.get_vocab(), key=len)[-50:]
    texts = ["The committee met on Tuesday. " * 40, " " * 3000, "\n" + " " * 64 + "x" * 40, "東京都の天気" * 100,
             "🙂🚀🔥" * 200, tok.convert_tokens_to_string(vocab * 3),
             "".join(chr(rng.randrange(32, 0x2FFF)) for _ in range(3000))]
    for text in texts:
        n = len(tok(text, add_special_tokens=False)["input_ids"])
        assert len(text) <= n * longest, (text[:40], n, longest)


def test_the_size_check_never_refuses_a_prompt_that_fits(tiny):
    _size_bound_holds(tiny[1].tokenizer)


@pytest.mark.slow
def test_the_size_check_never_refuses_a_prompt_that_fits_the_default_base():
    from transformers import AutoTokenizer

    from text2lora.base import resolve_base_path

    _size_bound_holds(AutoTokenizer.from_pretrained(resolve_base_path("smollm2-135m-instruct")))


def test_tokenising_runs_off_the_event_loop(server, monkeypatch):
    """A prompt that takes long to tokenise (made to take 2 s here) does not hold up /health."""
    eng = server.engine
    orig = eng.completion_ids

    def slow(text):
        time.sleep(2.0)
        return orig(text)

    monkeypatch.setattr(eng, "completion_ids", slow)
    t = threading.Thread(target=lambda: httpx.post(server.url + "/v1/completions", headers=AUTH, timeout=30,
                                                   json={"model": "base", "prompt": "hi", "max_tokens": 2}))
    t.start()
    time.sleep(0.4)  # the slow tokenisation has begun
    t0 = time.monotonic()
    assert httpx.get(server.url + "/health", timeout=10).status_code == 200
    waited = time.monotonic() - t0
    t.join()
    assert waited < 1.0, waited


# ----------------------------------------------------------------------------- 6. malformed JSON

def _nested(depth: int, inner: str = "1") -> str:
    return "[" * depth + inner + "]" * depth


def _depth_of(value) -> int:
    """Nesting depth of a parsed JSON value (the oracle for json_depth)."""
    if isinstance(value, list):
        return 1 + max((_depth_of(v) for v in value), default=0)
    if isinstance(value, dict):
        return 1 + max((_depth_of(v) for v in value.values()), default=0)
    return 0


def test_json_depth_matches_the_parsed_structure():
    from text2lora.serve.server import json_depth

    rng = random.Random(1)
    tricky = ['"]]]"', '"[[[{"', '"a\\"[b"', '"\\\\"', '"\\\\\\"]"', "1", "null", '"}"']

    def make(d):
        if d == 0 or rng.random() < 0.2:
            return json.loads(rng.choice(tricky))
        if rng.random() < 0.5:
            return [make(d - 1) for _ in range(rng.randrange(0, 3))]
        return {rng.choice(["k", "[", "}", 'q"']) + str(i): make(d - 1) for i in range(rng.randrange(0, 3))}

    for _ in range(300):
        value = make(rng.randrange(0, 12))
        assert json_depth(json.dumps(value).encode()) == _depth_of(value)
    assert json_depth(_nested(100_000).encode()) == 100_000


@pytest.mark.parametrize("body", [
    _nested(100_000),
    '{"model": "base", "max_tokens": 2, "messages": ' + _nested(990, '{"role": "user", "content": "hi"}') + "}",
    '{"model": "base", "max_tokens": 2, "messages": [{"role": "user", "content": ' + _nested(990, '{"type": "text"}')
    + "}]}",
    '{"model": "base", "max_tokens": 2, "prompt": "hi", "stop": ' + _nested(400, '"x"') + "}",
], ids=["arrays-100000", "messages-990", "content-990", "just-over-400"])
def test_deeply_nested_json_is_a_400(server, body):
    for path in ("/v1/chat/completions", "/v1/completions", "/v1/adapters"):
        r = httpx.post(server.url + path, content=body.encode(), headers={**AUTH, "content-type": "application/json"})
        err = _error(r, 400, "invalid_json")
        assert "deep" in err["message"] and "400" in err["message"]
    _still_serving(server)


def test_nesting_up_to_the_limit_is_parsed(server):
    """400 levels are parsed and then checked as usual (a 4xx for a bad field, never a 500)."""
    body = '{"model": "base", "max_tokens": 2, "messages": [{"role": "user", "content": ' + \
        _nested(396, '{"type": "text"}') + "}]}"
    from text2lora.serve.server import json_depth

    assert json_depth(body.encode()) == 400
    for path in ("/v1/chat/completions", "/v1/completions", "/v1/adapters"):
        r = httpx.post(server.url + path, content=body.encode(), headers={**AUTH, "content-type": "application/json"})
        assert 400 <= r.status_code < 500 and r.json()["error"]["code"] != "invalid_json", r.text


def test_a_client_that_disconnects_mid_body_is_logged_as_a_disconnect(server, fresh_logs, caplog):
    with caplog.at_level(logging.INFO, logger="text2lora.serve"):
        s = _half_open(server.url, 1, b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\ncontent-type: "
                       b"application/json\r\ncontent-length: 5000\r\n" + AUTH_HEADER + b"\r\n{\"model\": \"base\", ")[0]
        time.sleep(0.5)  # the server is reading the body
        s.close()
        deadline = time.monotonic() + 20
        while not any("disconnected" in r.getMessage() for r in caplog.records) and time.monotonic() < deadline:
            time.sleep(0.1)
    disconnects = [r for r in caplog.records if "disconnected before sending its whole request" in r.getMessage()]
    assert len(disconnects) == 1 and disconnects[0].levelno == logging.INFO and disconnects[0].exc_info is None
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info], caplog.text
    _still_serving(server)


# ----------------------------------------------------------------------------- 11. the API key

@pytest.mark.parametrize("path", ["/docs", "/openapi.json", "/redoc", "/docs/oauth2-redirect"])
def test_docs_and_openapi_need_the_key(server, path):
    _error(httpx.get(server.url + path), 401, "invalid_api_key")
    _error(httpx.get(server.url + path, headers={"authorization": "Bearer wrong"}), 401, "invalid_api_key")
    assert httpx.get(server.url + path, headers=AUTH).status_code == 200
    assert httpx.get(server.url + "/health").status_code == 200


def test_docs_are_open_without_a_key(tiny, tmp_path, engine_kind):
    from text2lora.serve.server import ServerThread, create_app

    _, base, gen = tiny
    with ServerThread(create_app(make_engine(engine_kind, base, gen))) as srv:
        assert httpx.get(srv.url + "/openapi.json").json()["info"]["title"] == "text2lora"


def test_the_guard_keeps_kept_alive_clients_working(server):
    """Idle kept-alive connections are never sent an unasked-for 408: a client that pauses between requests
    on one connection (longer than the head timeout, shorter than the keep-alive timeout) is answered."""
    from text2lora.serve.middleware import ConnectionLimits

    root, base, gen = server.root, server.engine.base, server.engine.gen
    srv = _start(root, base, gen, server.engine.kind, adapter_dir="adapters-keepalive",
                 limits=ConnectionLimits(head_timeout=1.0))
    try:
        with httpx.Client(headers=AUTH, timeout=30) as c:
            for _ in range(3):
                assert c.get(srv.url + "/health").status_code == 200
                time.sleep(1.5)
        assert httpx.get(srv.url + "/v1/stats", headers=AUTH).json()["connections"]["head_timeouts"] == 0
    finally:
        srv.stop()
