"""Hostile and careless clients: prompt-length limit, empty prompts, lone surrogates, the API key, the right
adapter for a description (planted directories are never served for it), the adapter-dir quota, batches
grouped by prompt length, and generation cancelled when a client goes away. The server tests run on each engine
(``engine_kind``); the batching tests drive the PyTorch engine's batcher."""

from __future__ import annotations

import contextlib
import json
import threading
import time

import pytest

pytest.importorskip("fastapi")
openai = pytest.importorskip("openai")
import httpx  # noqa: E402
import torch  # noqa: E402

from _serve_utils import engine_kind, greedy_reply, make_engine, tiny_generator  # noqa: E402, F401

MAX_PROMPT = 48
KEY = "test-key-0123456789"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("limits")
    base, gen = tiny_generator(root, context=2048)
    return root, base, gen


@pytest.fixture(scope="module")
def server(tiny, engine_kind):
    from text2lora.serve.engine import EngineConfig
    from text2lora.serve.server import ServerThread, create_app

    root, base, gen = tiny
    engine = make_engine(engine_kind, base, gen, EngineConfig(max_tokens_limit=16, max_prompt_tokens=MAX_PROMPT,
                                                              adapter_dir=str(root / f"adapters-{engine_kind}")))
    with ServerThread(create_app(engine, api_key=KEY)) as srv:
        srv.engine, srv.root = engine, root
        srv.client = openai.OpenAI(base_url=srv.url + "/v1", api_key=KEY, max_retries=0, timeout=60)
        yield srv


def _post(srv, path, body=None, content=None, key=KEY):
    headers = {"authorization": f"Bearer {key}"} if key is not None else {}
    if content is not None:
        headers["content-type"] = "application/json"
    return httpx.post(srv.url + path, json=body, content=content, headers=headers, timeout=60)


def _error(r, status, code, param=None):
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["code"] == code and err["message"], err
    if param is not None:
        assert err["param"] == param, err
    return err


def _text_of_tokens(engine, n: int) -> str:
    """A completion prompt of exactly ``n`` tokens (counted with the server's own tokenizer)."""
    for k in range(n, 0, -1):
        text = " ".join(["word"] * k)
        if len(engine.completion_ids(text)) == n:
            return text
    raise AssertionError(f"no run of 'word' gives {n} tokens")


# ----------------------------------------------------------------------------- prompt length and content

def test_prompt_over_the_limit_is_refused_and_at_the_limit_is_served(server):
    eng = server.engine
    long_text = " ".join(["word"] * (MAX_PROMPT * 3))
    assert len(eng.completion_ids(long_text)) > MAX_PROMPT
    err = _error(_post(server, "/v1/completions", {"model": "base", "prompt": long_text, "max_tokens": 2}),
                 400, "context_length_exceeded", "prompt")
    assert str(MAX_PROMPT) in err["message"]
    _error(_post(server, "/v1/chat/completions",
                 {"model": "base", "messages": [{"role": "user", "content": long_text}], "max_tokens": 2}),
           400, "context_length_exceeded", "messages")
    ok = _text_of_tokens(eng, MAX_PROMPT)
    r = _post(server, "/v1/completions", {"model": "base", "prompt": ok, "max_tokens": 2})
    assert r.status_code == 200, r.text
    assert r.json()["usage"]["prompt_tokens"] == MAX_PROMPT


@pytest.mark.parametrize("prompt", ["", [""]])
def test_empty_prompt_is_a_400(server, prompt):
    _error(_post(server, "/v1/completions", {"model": "base", "prompt": prompt, "max_tokens": 2}),
           400, "invalid_value", "prompt")


@pytest.mark.parametrize("path,body", [
    ("/v1/chat/completions", '{"model": "base", "max_tokens": 2, "messages": [{"role": "user", "content": "a\\ud800b"}]}'),
    ("/v1/completions", '{"model": "base", "max_tokens": 2, "prompt": "\\udfff"}'),
    ("/v1/adapters", '{"description": "Answer \\ud83d questions."}'),
    ("/v1/chat/completions", '{"model": "t2l:Solve \\udc00 puzzles.", "max_tokens": 2, '
                             '"messages": [{"role": "user", "content": "hi"}]}'),
])
def test_lone_surrogates_are_a_400(server, path, body):
    err = _error(_post(server, path, content=body.encode()), 400, "invalid_value")
    assert "surrogate" in err["message"]
    # and the server goes on serving
    assert server.client.completions.create(model="base", prompt="hi", max_tokens=2).choices


# ----------------------------------------------------------------------------- API key

def test_api_key_is_required_on_v1_when_set(server):
    body = {"description": "Answer questions about geography."}
    for key in (None, "wrong", KEY + "x", KEY[:-1]):
        _error(_post(server, "/v1/adapters", body, key=key), 401, "invalid_api_key")
    _error(httpx.get(server.url + "/v1/models"), 401, "invalid_api_key")
    bad = openai.OpenAI(base_url=server.url + "/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.models.list()
    assert httpx.get(server.url + "/health").status_code == 200
    # the OpenAI client with the key gets through (it sends "Authorization: Bearer <key>")
    assert server.client.models.list().data[0].id == server.engine.base_name
    assert _post(server, "/v1/adapters", body).status_code == 200


# ----------------------------------------------------------------------------- the right adapter

def _plant(adapter_dir, name, adapter, claimed_description, generator_digest=None):
    """Write ``adapter`` to ``adapter_dir/name`` claiming ``claimed_description`` (and ``generator_digest``)
    in its provenance."""
    from text2lora.adapter import LoRAAdapter

    meta = {**adapter.meta, "description": claimed_description}
    if generator_digest is not None:
        meta["generator_digest"] = generator_digest
    fake = LoRAAdapter(adapter.base, adapter.A, adapter.B, adapter.alpha, adapter.use_rslora, meta)
    fake.save(adapter_dir / name, vllm=False)
    return fake


def _reply(srv, model, prompt="Tell me about the sea."):
    r = srv.client.completions.create(model=model, prompt=prompt, max_tokens=8, temperature=0)
    return r.choices[0].text, r.t2l


def test_a_planted_directory_is_never_served_for_a_description(server):
    from text2lora.adapter import LoRAAdapter
    from text2lora.serve.store import AdapterStore, UnknownAdapter, adapter_id_for

    eng, gen = server.engine, server.engine.gen
    adapter_dir = server.root / f"adapters-{eng.kind}"
    desc = "Translate English sentences into French."
    own = gen.generate(desc)  # what the loaded generator makes for this description (the oracle)
    other = gen.generate("Write a limerick about cats.")
    assert own.digest() != other.digest()
    gd = eng.store.gen_digest
    gid = adapter_id_for(desc, gd)
    # planted before the server ever saw the description, claiming it and the loaded generator: under the
    # very id it would use, and under two names
    _plant(adapter_dir, gid, other, desc, gd)
    _plant(adapter_dir, "lookalike", other, desc, gd)
    _plant(adapter_dir, "lookalike2", gen.generate("Sort a list of numbers."), desc, gd)

    text, t2l = _reply(server, "t2l:" + desc)
    assert t2l["adapter"] == gid
    prompt = eng.completion_ids("Tell me about the sea.")
    expected, planted_text = greedy_reply(eng, prompt, own, 8), greedy_reply(eng, prompt, other, 8)
    assert text == expected
    assert planted_text != expected  # the check can tell the two apart
    served = eng.adapter(desc)[0]
    assert served.digest() == own.digest()
    # the same id on disk holds other weights: the server did not overwrite it, nor claim it as its own
    assert eng.store.lookup(gid).path is None
    assert LoRAAdapter.load(adapter_dir / gid).digest() == other.digest()
    # names whose directories claim the description but hold other weights are refused, saying why
    for name in ("lookalike", "lookalike2"):
        with pytest.raises(UnknownAdapter, match="weights"):
            eng.adapter(adapter_id=name)
        r = httpx.get(f"{server.url}/v1/adapters/{name}", headers={"authorization": f"Bearer {KEY}"})
        assert r.status_code == 404 and "weights" in r.json()["error"]["message"], r.text
    # a restarted server on the same directory: the id and the description both get the generator's adapter
    fresh = AdapterStore(gen, adapter_dir=adapter_dir)
    adapter, info, _ = fresh.by_id(gid)
    assert adapter.digest() == own.digest() and info.path is None
    adapter, info, _ = fresh.get(desc)
    assert info.generated and adapter.digest() == own.digest()


def test_adapter_config_that_is_a_list_is_a_client_error(server):
    from text2lora.adapter import LoRAAdapter
    from text2lora.errors import AdapterError

    d = server.root / f"adapters-{server.engine.kind}" / "listcfg"
    server.engine.gen.generate("Count words.").save(d, vllm=False)
    (d / "adapter_config.json").write_text("[1, 2]")
    with pytest.raises(AdapterError, match="adapter_config.json"):
        LoRAAdapter.load(d)
    r = httpx.get(server.url + "/v1/adapters/listcfg", headers={"authorization": f"Bearer {KEY}"})
    assert r.status_code == 404, r.text


# ----------------------------------------------------------------------------- disk quota

def test_adapter_dir_quota_evicts_least_recently_used_and_only_own_directories(tiny, tmp_path):
    from text2lora.serve.store import AdapterStore

    _, _, gen = tiny
    adapter_dir = tmp_path / "adapters"
    adapter_dir.mkdir()
    (adapter_dir / "mine").mkdir()
    (adapter_dir / "mine" / "notes.txt").write_text("user file")
    probe = AdapterStore(gen, adapter_dir=tmp_path / "probe")
    probe.get("Probe the size.")
    one = probe.disk_bytes()
    assert one > 0
    store = AdapterStore(gen, adapter_dir=adapter_dir, disk_quota_mb=2.5 * one / (1024 * 1024))
    _, a, _ = store.get("Task A: classify sentiment.")
    _, b, _ = store.get("Task B: extract dates.")
    store.by_id(a.id)  # A used again: B is now the least recently used
    _, c, _ = store.get("Task C: answer trivia.")
    names = {p.name for p in adapter_dir.iterdir()}
    assert names == {"mine", a.id, c.id}
    assert (adapter_dir / "mine" / "notes.txt").read_text() == "user file"
    assert store.disk_bytes() <= 2.5 * one
    assert store.lookup(b.id).path is None and store.by_id(b.id)[1].generated  # still served: generated again


# ----------------------------------------------------------------------------- batching and cancellation

def _collect_events(reqs):
    """Point each request's sink (``reqs``: name -> GenRequest) at shared records; returns (texts so far,
    the final event by name, names in the order they ended)."""
    lock = threading.Lock()
    texts: dict[str, str] = {name: "" for name in reqs}
    dones: dict[str, object] = {}
    order: list[str] = []
    for name, r in reqs.items():
        def sink(ev, name=name):
            with lock:
                if ev.kind == "text":
                    texts[name] += ev.text
                elif ev.kind == "done":
                    dones[name] = ev
                    order.append(name)
                else:
                    dones[name] = ev
        r.sink = sink
    return texts, dones, order


def _serve_all(base, reqs, **batcher_kw):
    """Run ``reqs`` (name -> GenRequest) through a fresh Batcher and wait for them all to end."""
    from text2lora.serve.batcher import Batcher

    texts, dones, order = _collect_events(reqs)
    b = Batcher(base, **batcher_kw)
    try:
        for r in reqs.values():
            b.submit(r)
        deadline = time.monotonic() + 300
        while len(dones) < len(reqs) and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        b.close()
    return texts, dones, order


def test_short_prompts_are_not_batched_with_long_ones(tiny):
    from text2lora.serve.batcher import GenRequest

    _, base, _ = tiny
    tok = base.tokenizer
    long_ids = tok(" ".join(["long"] * 400))["input_ids"]
    short_ids = tok("hi")["input_ids"]
    assert len(long_ids) > 256 and len(short_ids) < 64
    reqs = {"long1": GenRequest(long_ids, None, None, 2), "long2": GenRequest(long_ids, None, None, 2),
            "short": GenRequest(short_ids, None, None, 2)}
    _, done, _ = _serve_all(base, reqs, max_batch=8, wait_ms=500)
    assert done["long1"].batch_id == done["long2"].batch_id and done["long1"].batch_size == 2
    assert done["short"].batch_id != done["long1"].batch_id and done["short"].batch_size == 1


def test_sliced_batches_decode_what_one_generate_call_decodes(tiny):
    """Prompts read into the KV cache in chunks and new tokens made a few per turn give, row for row, the
    greedy reply of ``model.generate`` run on that prompt and adapter alone (plain transformers)."""
    from text2lora.inject import apply_adapters
    from text2lora.serve.batcher import GenRequest

    _, base, gen = tiny
    tok = base.tokenizer
    prompts = ["short one", " ".join(["a few more words here"] * 2), " ".join(["and a longer prompt"] * 4)]
    adapters = [gen.generate("Add two numbers."), None, gen.generate("Translate English to French.")]
    ids = [tok(p)["input_ids"] for p in prompts]
    assert len({len(i) for i in ids}) == 3 and max(len(i) for i in ids) <= 64  # one length bucket, one batch
    expected = []
    for i, a in zip(ids, adapters):
        applied = apply_adapters(base.model, a, base.spec) if a is not None else contextlib.nullcontext()
        with torch.no_grad(), applied:
            out = base.model.generate(torch.tensor([i]), max_new_tokens=12, do_sample=False,
                                      pad_token_id=base.tokenizer.pad_token_id)[0, len(i):].tolist()
        stop = next((k for k, t in enumerate(out) if t in set(base.end_ids)), len(out))
        expected.append(tok.decode(out[:stop], skip_special_tokens=True))
    reqs = {f"r{k}": GenRequest(i, a, None, 12) for k, (i, a) in enumerate(zip(ids, adapters))}
    texts, dones, _ = _serve_all(base, reqs, max_batch=8, wait_ms=500, slice_tokens=3, prefill_chunk=7)
    assert {d.batch_size for d in dones.values()} == {3}  # they did share one batch
    assert [texts[f"r{k}"] for k in range(3)] == expected
    assert any(e for e in expected)  # the replies are not all empty


@pytest.mark.parametrize("family", ["llama", "mistral", "gemma2", "gemma3", "qwen2", "qwen3", "phi3"])
def test_sliced_decoding_matches_generate_in_every_family(family, tmp_path):
    """Chunked prompts and sliced decoding on each supported family (Gemma's 64-token sliding window
    included: the long prompt is longer), with weights drawn wide enough that greedy replies vary:
    the reply is plain ``model.generate``'s."""
    from text2lora import load_base
    from text2lora.serve.batcher import GenRequest
    from text2lora.testing import save_tiny_base

    save_tiny_base(tmp_path / "base", family)
    base = load_base(str(tmp_path / "base"), device="cpu",
                     target_modules=["qkv_proj"] if family == "phi3" else ["q_proj", "v_proj"])
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in base.model.parameters():
            if p.dim() == 2:
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    tok = base.tokenizer
    ids = [tok(" ".join(f"word{i}" for i in range(k)))["input_ids"] for k in (20, 35)]
    assert max(len(i) for i in ids) > 64
    expected = []
    for i in ids:
        with torch.no_grad():
            out = base.model.generate(torch.tensor([i]), max_new_tokens=10, do_sample=False,
                                      pad_token_id=tok.pad_token_id)[0, len(i):].tolist()
        stop = next((k for k, t in enumerate(out) if t in set(base.end_ids)), len(out))
        expected.append(tok.decode(out[:stop], skip_special_tokens=True))
    reqs = {f"r{k}": GenRequest(i, None, None, 10) for k, i in enumerate(ids)}
    texts, dones, _ = _serve_all(base, reqs, max_batch=8, wait_ms=0, slice_tokens=3, prefill_chunk=16)
    assert all(d.kind == "done" for d in dones.values())
    assert [texts["r0"], texts["r1"]] == expected and len(set(expected)) == 2


def test_a_short_request_does_not_wait_for_a_long_batch_to_finish(tiny):
    """A long batch (400-token prompt, 200 new tokens) is already running when a short request arrives;
    the short one gets its own batch and ends while the long one still runs: its 'done' comes first."""
    from text2lora.serve.batcher import Batcher, GenRequest

    _, base, _ = tiny
    tok = base.tokenizer
    long_ids, short_ids = tok(" ".join(["long"] * 400))["input_ids"], tok("hi")["input_ids"]
    reqs = {"long": GenRequest(long_ids, None, None, 200, stop=["\u2603 never"]),
            "short": GenRequest(short_ids, None, None, 2)}
    _, dones, order = _collect_events(reqs)
    b = Batcher(base, max_batch=8, wait_ms=0, slice_tokens=8, prefill_chunk=64)
    try:
        b.submit(reqs["long"])
        deadline = time.monotonic() + 300
        while b.snapshot()["batches"] == 0 and time.monotonic() < deadline:
            time.sleep(0.001)
        b.submit(reqs["short"])  # the long batch has started
        while len(dones) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        b.close()
    assert dones["long"].completion_tokens == 200  # it ran its whole length (no early end of answer)
    assert dones["short"].completion_tokens == 2 and dones["short"].batch_id != dones["long"].batch_id
    assert order == ["short", "long"]


def test_a_non_streaming_client_that_disconnects_stops_its_generation(tiny, engine_kind):
    """The client gives up after a second; the server cancels its row instead of generating every token it
    asked for (the engine's token counter is the oracle)."""
    from text2lora.serve.engine import EngineConfig
    from text2lora.serve.server import ServerThread, create_app

    _, base, gen = tiny
    engine = make_engine(engine_kind, base, gen, EngineConfig(max_tokens_limit=1500))
    body = {"model": "base", "prompt": "Once upon a time", "max_tokens": 1500, "temperature": 0,
            "stop": ["\u2603 never"]}
    with _slowed(engine), ServerThread(create_app(engine)) as srv:
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(srv.url + "/v1/completions", json=body, timeout=httpx.Timeout(5.0, read=1.0))
        deadline = time.monotonic() + 120
        while engine.stats()["batcher"]["tokens"] == 0 and time.monotonic() < deadline:
            time.sleep(0.1)  # the batch's tokens are counted when it ends
        stats = httpx.get(srv.url + "/v1/stats").json()
    assert stats["disconnects"] == 1
    assert 0 < stats["batcher"]["tokens"] < 1500


@contextlib.contextmanager
def _slowed(engine, seconds: float = 0.01):
    """Every decoding step of ``engine`` takes ``seconds`` longer (the tiny model is otherwise done before a
    client could go away): each forward pass of the PyTorch model, each token of the llama.cpp model."""
    if engine.kind == "llama.cpp":
        owner, name = engine.model, "tokens"
        orig = owner.tokens

        def slowed(*a, **k):
            for tok in orig(*a, **k):
                time.sleep(seconds)
                yield tok
    else:
        owner, name = engine.base.model, "forward"
        orig = owner.forward

        def slowed(*a, **k):
            time.sleep(seconds)
            return orig(*a, **k)

    setattr(owner, name, slowed)
    try:
        yield
    finally:
        delattr(owner, name)  # back to the class's method


def test_new_flags_reach_the_engine():
    from text2lora.cli import build_parser
    from text2lora.serve.engine import EngineConfig

    args = build_parser().parse_args(["serve", "--max-prompt-tokens", "100", "--api-key", "k",
                                      "--adapter-dir-quota-mb", "5"])
    assert (args.max_prompt_tokens, args.api_key, args.adapter_dir_quota_mb) == (100, "k", 5.0)
    with pytest.raises(ValueError, match="--max-prompt-tokens"):
        EngineConfig(max_prompt_tokens=0)
    assert json.loads(json.dumps(EngineConfig().__dict__))["max_prompt_tokens"] == 2048
