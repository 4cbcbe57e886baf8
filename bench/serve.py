"""Benchmark ``t2l serve`` on the default base (SmolLM2-135M-Instruct): batching and the adapter cache.

Measures, through HTTP with the official ``openai`` client against a live server on 127.0.0.1:
  - requests/s with 8 distinct adapters in flight (8 client threads, each with its own adapter),
    batched (one forward pass for all rows) versus one at a time (``max_batch=1``); target >= 3x;
  - latency of a cache miss (the adapter is generated) versus a hit, for ``POST /v1/adapters`` and
    for a 1-token chat request with ``"model": "t2l:<description>"``.

By default the adapters come from a fresh ``TextToLoRA.init(base)`` with random heads: speed does not
depend on training, but answer length does, and the shipped generator's adapters make the model
answer in a token or two (it learned short answers), which would measure prefill, not decoding.
``--generator shipped`` uses the shipped one.
Usage: python bench/serve.py [--rounds 3] [--max-tokens 32] [--misses 8]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import print_table, write_json  # noqa: E402

TASKS = [
    "Answer grade-school math word problems step by step.", "Translate English sentences into French.",
    "Decide whether the statement is true or false and answer yes or no.",
    "Pick the most plausible ending of a short everyday scenario.", "Write a Python function from its docstring.",
    "Classify the sentiment of a product review as positive or negative.", "Sort a list of words alphabetically.",
    "Answer a science question by choosing one of four options.",
]
QUESTIONS = ["What is 12 + 7?", "Name a primary color.", "Is the sky green?", "Give a synonym for happy.",
             "What is the capital of Italy?", "Say hello in French.", "How many legs does a spider have?",
             "What is water made of?"]


def _generator(base, kind: str):
    import torch

    from text2lora import TextToLoRA

    if kind == "shipped":
        return TextToLoRA.from_pretrained(base=base), "shipped"
    gen = TextToLoRA.init(base)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in gen.hypernet.heads.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.01)
    return gen.eval(), "fresh TextToLoRA.init (M head) with random heads"


def _throughput(client, ids: list[str], rounds: int, max_tokens: int) -> tuple[float, int]:
    """8 threads, each sending ``rounds`` requests with its own adapter; returns (req/s, tokens)."""
    tokens = [0] * len(ids)
    gate = threading.Barrier(len(ids))

    def worker(i: int) -> None:
        gate.wait(timeout=60)
        for r in range(rounds):
            resp = client.chat.completions.create(model=ids[i], max_tokens=max_tokens, messages=[
                {"role": "user", "content": QUESTIONS[(i + r) % len(QUESTIONS)]}])
            tokens[i] += resp.usage.completion_tokens

    t0 = time.perf_counter()
    with ThreadPoolExecutor(len(ids)) as ex:
        list(ex.map(worker, range(len(ids))))
    return len(ids) * rounds / (time.perf_counter() - t0), sum(tokens)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3, help="requests per client thread per mode")
    ap.add_argument("--max-tokens", type=int, default=32, help="max_tokens per request")
    ap.add_argument("--generator", choices=["random", "shipped"], default="random",
                    help="adapters from random heads (long answers; default) or the shipped generator")
    ap.add_argument("--misses", type=int, default=8, help="new descriptions for the miss/hit latency")
    ap.add_argument("--base", default="smollm2-135m-instruct", help="base model")
    ap.add_argument("--batch-wait-ms", type=float, default=25.0, help="the server's batching window")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch CPU threads (1 avoids OpenMP thrashing when other processes share the cores)")
    args = ap.parse_args()
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)

    import httpx
    import openai

    from text2lora import load_base
    from text2lora.serve.engine import Engine, EngineConfig
    from text2lora.serve.server import ServerThread, create_app

    base = load_base(args.base)
    gen, gen_kind = _generator(base, args.generator)
    engine = Engine(base, gen, EngineConfig(max_batch=8, batch_wait_ms=args.batch_wait_ms))
    with ServerThread(create_app(engine)) as srv:
        client = openai.OpenAI(base_url=srv.url + "/v1", api_key="unused", max_retries=0, timeout=600)
        ids = [httpx.post(srv.url + "/v1/adapters", json={"description": t}, timeout=120).json()["id"] for t in TASKS]
        _throughput(client, ids, 1, 4)  # warm-up
        rows = []
        for mode, max_batch in (("one at a time", 1), ("batched", 8)):
            engine.batcher.max_batch = max_batch
            before = engine.batcher.snapshot()
            rps, toks = _throughput(client, ids, args.rounds, args.max_tokens)
            after = engine.batcher.snapshot()
            n_batches = after["batches"] - before["batches"]
            rows.append({"mode": mode, "req/s": round(rps, 3), "tokens": toks, "forward batches": n_batches,
                         "rows/batch": round((after["rows"] - before["rows"]) / max(n_batches, 1), 2)})
        speedup = rows[1]["req/s"] / rows[0]["req/s"]

        miss_post, hit_post, miss_chat, hit_chat = [], [], [], []
        for i in range(args.misses):
            for kind, (miss, hit) in (("post", (miss_post, hit_post)), ("chat", (miss_chat, hit_chat))):
                desc = f"{TASKS[i % len(TASKS)]} (variant {kind} {i})"
                for bucket in (miss, hit):
                    t0 = time.perf_counter()
                    if kind == "post":
                        r = httpx.post(srv.url + "/v1/adapters", json={"description": desc}, timeout=120).json()
                        assert r["cached"] is (bucket is hit)
                    else:
                        r = client.chat.completions.create(model=f"t2l:{desc}", max_tokens=1,
                                                           messages=[{"role": "user", "content": "Hi"}])
                        assert r.t2l["cache_hit"] is (bucket is hit)
                    bucket.append((time.perf_counter() - t0) * 1000)
    ms = {k: round(statistics.median(v), 2) for k, v in
          (("miss_post", miss_post), ("hit_post", hit_post), ("miss_chat", miss_chat), ("hit_chat", hit_chat))}

    print(f"\nbase {args.base}, generator: {gen_kind}, {torch.get_num_threads()} torch thread(s); "
          "8 distinct adapters in flight, "
          f"{args.rounds} requests each, max_tokens {args.max_tokens}\n")
    print_table(rows, ["mode", "req/s", "tokens", "forward batches", "rows/batch"])
    print(f"\nbatched / one at a time: {speedup:.2f}x (target >= 3x)\n")
    lat = [{"request": "POST /v1/adapters", "miss ms": ms["miss_post"], "hit ms": ms["hit_post"]},
           {"request": "chat, 1 token, model t2l:<desc>", "miss ms": ms["miss_chat"], "hit ms": ms["hit_chat"]}]
    print_table(lat, ["request", "miss ms", "hit ms"])
    write_json("serve", {"base": args.base, "torch_threads": torch.get_num_threads(), "generator": gen_kind,
                         "rounds": args.rounds, "batch_wait_ms": args.batch_wait_ms, "max_tokens": args.max_tokens,
                         "throughput": rows, "speedup": round(speedup, 2),
                         "target_speedup": 3.0, "latency_ms_median": ms, "misses": args.misses})
    return 0


if __name__ == "__main__":
    sys.exit(main())
