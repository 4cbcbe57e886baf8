"""``t2l serve --engine llama.cpp`` on the tiny Llama written as a GGUF file: greedy replies are llama.cpp's own
greedy tokens (the argmax of its logits, step by step, in a model of its own with the adapter loaded by
``Llama(lora_path=...)``), with adapters used in turn and at once; each adapter is exported and loaded once,
its GGUF file kept beside its PEFT files; an adapter llama.cpp refuses is a 422 naming it while the others are
served. (The server's other tests run on this engine too: ``engine_kind`` in their fixtures.)"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

pytest.importorskip("fastapi")
openai = pytest.importorskip("openai")
import httpx  # noqa: E402

from _serve_utils import llama_cpp_greedy, make_engine, needs_llama_cpp, tiny_generator  # noqa: E402

pytestmark = needs_llama_cpp

N = 12
DESCRIPTIONS = ["Answer with yes or no.", "Translate English to French.", "Solve the math word problem."]
PROMPTS = ["What is 2 + 3?", "The quick brown fox jumps over the lazy dog.", "Classify the sentiment of the review."]
BAD = "Answer in a way llama.cpp cannot load."


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from text2lora.serve.engine import EngineConfig
    from text2lora.serve.server import ServerThread, create_app

    root = tmp_path_factory.mktemp("serve_llama_cpp")
    base, gen = tiny_generator(root)
    engine = make_engine("llama.cpp", base, gen, EngineConfig(max_tokens_limit=64, adapter_dir=str(root / "adapters")))
    with ServerThread(create_app(engine)) as srv:
        srv.engine, srv.root = engine, root
        srv.client = openai.OpenAI(base_url=srv.url + "/v1", api_key="unused", max_retries=0, timeout=120)
        yield srv


def _expected(srv, model: str, prompt: str) -> tuple[str, int]:
    """The oracle: the text and the number of llama.cpp's greedy tokens for ``prompt`` under ``model``'s adapter."""
    eng = srv.engine
    adapter = None if model == "base" else eng.store.get(model[4:])[0]
    tokens = llama_cpp_greedy(eng.gguf, eng.chat_ids(prompt), adapter, N)
    end = set(eng.base.end_ids)
    n = next((i for i, t in enumerate(tokens) if t in end), N)
    return eng.base.tokenizer.decode(tokens[:n], skip_special_tokens=True), n


def _ask(srv, model: str, prompt: str, **kw):
    return srv.client.chat.completions.create(model=model, messages=[{"role": "user", "content": prompt}],
                                              max_tokens=N, temperature=0, **kw)


def test_greedy_replies_are_llama_cpps_own_tokens_with_adapters_in_turn(server):
    """Adapters and the base model in turn, and back again, in one server: each reply (and its usage count) is
    llama.cpp's greedy reply for that prompt and adapter alone, so no adapter leaks into the next request."""
    models = ["t2l:" + DESCRIPTIONS[0], "base", "t2l:" + DESCRIPTIONS[1], "t2l:" + DESCRIPTIONS[0],
              "t2l:" + DESCRIPTIONS[2], "base", "t2l:" + DESCRIPTIONS[1]]
    seen: dict[str, set[str]] = {}
    for i, model in enumerate(models):
        prompt = PROMPTS[i % len(PROMPTS)]
        r = _ask(server, model, prompt)
        text, n = _expected(server, model, prompt)
        assert r.choices[0].message.content == text, (model, prompt)
        assert r.usage.completion_tokens == n and r.choices[0].finish_reason == ("length" if n == N else "stop")
        assert r.t2l["batch_size"] == 1
        seen.setdefault(prompt, set()).add(text)
    # the adapters change the replies, so a leaked adapter would show
    assert all(len(texts) > 1 for prompt, texts in seen.items() if prompt == PROMPTS[0])


def test_concurrent_requests_with_different_adapters_each_get_their_own(server):
    models = ["base"] + ["t2l:" + d for d in DESCRIPTIONS]
    jobs = [(m, p) for p in PROMPTS for m in models]
    for m in models:
        _ask(server, m, PROMPTS[0])  # adapters generated and loaded first
    with ThreadPoolExecutor(len(jobs)) as ex:
        out = list(ex.map(lambda job: _ask(server, *job), jobs))
    assert len({r.t2l["batch_id"] for r in out}) == len(jobs)  # one after another
    for (m, p), r in zip(jobs, out):
        assert r.choices[0].message.content == _expected(server, m, p)[0], (m, p)


def test_each_adapter_is_exported_and_loaded_once_and_kept_beside_its_peft_files(server):
    import gguf

    from text2lora.formats.gguf import gguf_tensors, read_base
    from text2lora.serve.store import adapter_id_for

    eng = server.engine
    desc = "Write a haiku about autumn."
    before = eng.stats()["batcher"]
    made = httpx.post(server.url + "/v1/adapters", json={"description": desc}, timeout=60).json()
    gid = adapter_id_for(desc, eng.store.gen_digest)
    assert made["id"] == gid
    path = server.root / "adapters" / gid / "adapter.gguf"
    assert path.is_file() and (path.parent / "adapter_model.safetensors").is_file()
    mtime = path.stat().st_mtime_ns
    for prompt in PROMPTS:
        _ask(server, "t2l:" + desc, prompt)
        _ask(server, gid, prompt)
    after = eng.stats()["batcher"]
    assert after["adapters_loaded"] == before["adapters_loaded"] + 1  # loaded into llama.cpp once
    assert path.stat().st_mtime_ns == mtime  # exported once
    # the file holds this id's adapter: the same tensors as the adapter the store serves, in llama.cpp's layout
    adapter = eng.store.get(desc)[0]
    want = gguf_tensors(adapter, read_base(eng.gguf))
    reader = gguf.GGUFReader(str(path))
    got = {t.name: t.data for t in reader.tensors}
    assert set(got) == set(want)
    for name, t in want.items():
        assert (got[name].reshape(t.shape) == t).all(), name
    assert desc in str(reader.fields["general.description"].contents())


def test_an_adapter_llama_cpp_refuses_is_a_422_naming_it_and_the_others_are_served(server, monkeypatch):
    from text2lora.serve.store import adapter_id_for

    eng = server.engine
    export = eng.store.gguf_path

    def damaged(adapter, info, base_gguf):
        path = export(adapter, info, base_gguf)
        if adapter.description != BAD:
            return path
        bad = path.with_name("damaged.gguf")
        bad.write_bytes(path.read_bytes()[:200])  # cut short: llama.cpp cannot read it
        return bad

    monkeypatch.setattr(eng.store, "gguf_path", damaged)
    failures = eng.stats()["batcher"]["load_failures"]
    bad_id = adapter_id_for(BAD, eng.store.gen_digest)
    for path, body in (("/v1/chat/completions", {"model": "t2l:" + BAD, "max_tokens": 4,
                                                 "messages": [{"role": "user", "content": "hi"}]}),
                       ("/v1/adapters", {"description": BAD}),
                       ("/v1/chat/completions", {"model": "t2l:" + BAD, "max_tokens": 4, "stream": True,
                                                 "messages": [{"role": "user", "content": "hi"}]})):
        r = httpx.post(server.url + path, json=body, timeout=60)
        assert r.status_code == 422, r.text
        err = r.json()["error"]
        assert err["code"] == "adapter_load_failed" and bad_id in err["message"], err
    assert eng.stats()["batcher"]["load_failures"] == failures + 3
    with pytest.raises(openai.UnprocessableEntityError):
        _ask(server, bad_id, PROMPTS[0])
    for model in ("base", "t2l:" + DESCRIPTIONS[0]):  # the others are served, and right
        assert _ask(server, model, PROMPTS[0]).choices[0].message.content == _expected(server, model, PROMPTS[0])[0]


def test_sampled_requests_and_stats(server):
    r = server.client.completions.create(model="t2l:" + DESCRIPTIONS[0], prompt="Once upon a time", max_tokens=N,
                                         temperature=1.0, top_p=0.9)
    assert r.choices[0].finish_reason in ("stop", "length") and 0 < r.usage.completion_tokens <= N
    stats = httpx.get(server.url + "/v1/stats").json()
    assert stats["engine"] == "llama.cpp" and stats["batcher"]["max_batch_size"] == 1


def test_without_an_adapter_directory_the_gguf_files_are_private_and_deleted_on_close(tmp_path):
    root = tmp_path
    base, gen = tiny_generator(root)
    engine = make_engine("llama.cpp", base, gen)
    try:
        adapter, info, _ = engine.adapter(DESCRIPTIONS[0])
        path = engine.store.gguf_path(adapter, info, engine.gguf)
        assert path.is_file() and root not in path.parents
        reply = "".join(ev.text for ev in engine.stream(engine.chat_ids(PROMPTS[0]), adapter, max_tokens=N))
        want = llama_cpp_greedy(engine.gguf, engine.chat_ids(PROMPTS[0]), adapter, N)
        assert reply == engine.base.tokenizer.decode(
            want[:next((i for i, t in enumerate(want) if t in set(base.end_ids)), N)], skip_special_tokens=True)
    finally:
        engine.close()
    assert not path.exists()
