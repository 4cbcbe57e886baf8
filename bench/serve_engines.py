"""``t2l serve`` on the PyTorch engine and on the llama.cpp engine, side by side in one run, on the default base.

Each engine serves in turn (never both at once), through HTTP with the official ``openai`` client against a
live server on 127.0.0.1, the same adapters (a fresh generator with random heads, as in bench/serve.py: the
shipped generator's adapters make the model answer in a token or two), greedy chat requests of
``--max-tokens`` (128) new tokens:

- one client: ``--requests`` requests one after another, each with the same adapter;
- 8 clients at once, each with its own adapter (8 distinct descriptions), ``--rounds`` requests each;
  tokens/s is all new tokens over the wall time, latency is each request's, end to end;
- first use of a new description: ``POST /v1/adapters`` for ``--first-uses`` descriptions never seen before
  (median): the whole request, the generation alone (the response's ``generation_ms``), and the rest (for
  llama.cpp: the GGUF export and the load into llama.cpp, plus HTTP).

Both engines get ``--threads`` CPU threads (PyTorch's ``torch.set_num_threads``, llama.cpp's ``n_threads``).
The load average before each engine's run is recorded: the numbers are only comparable on a quiet machine.
The JSON goes where ``--out`` says, by default into the text2lora cache (never over tracked files).
Usage: python bench/serve_engines.py [--max-tokens 128] [--requests 3] [--rounds 2] [--threads 2]
Needs llama-cpp-python (T2L_LLAMA_CPP=1 bash scripts/setup.sh) for the llama.cpp rows.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import DESCRIPTIONS, add_out_arg, print_table, write_json  # noqa: E402
from serve import QUESTIONS, _generator  # noqa: E402

ENGINES = ("torch", "llama.cpp")


def _percentile(xs: list[float], q: float) -> float:
    import numpy as np

    return float(np.percentile(xs, q))


def _ask(client, model: str, question: str, max_tokens: int) -> tuple[float, int]:
    """One greedy chat request: (seconds, new tokens)."""
    t0 = time.perf_counter()
    r = client.chat.completions.create(model=model, max_tokens=max_tokens, temperature=0,
                                       messages=[{"role": "user", "content": question}])
    return time.perf_counter() - t0, r.usage.completion_tokens


def _phase(client, ids: list[str], rounds: int, max_tokens: int) -> dict:
    """``len(ids)`` clients at once, client i sending ``rounds`` requests with adapter ``ids[i]``."""
    results: list[tuple[float, int]] = []
    lock = threading.Lock()
    gate = threading.Barrier(len(ids))

    def client_loop(i: int) -> None:
        gate.wait(timeout=60)
        for r in range(rounds):
            res = _ask(client, ids[i], QUESTIONS[(i + r) % len(QUESTIONS)], max_tokens)
            with lock:
                results.append(res)

    t0 = time.perf_counter()
    with ThreadPoolExecutor(len(ids)) as ex:
        list(ex.map(client_loop, range(len(ids))))
    wall = time.perf_counter() - t0
    lat = [s for s, _ in results]
    tokens = sum(n for _, n in results)
    return {"clients": len(ids), "requests": len(results), "tokens": tokens,
            "mean new tokens": round(tokens / len(results), 1), "tokens/s": round(tokens / wall, 1),
            "p50 s": round(_percentile(lat, 50), 2), "p95 s": round(_percentile(lat, 95), 2)}


def run(kind: str, base, gen, args: argparse.Namespace) -> tuple[list[dict], dict]:
    """One engine's rows: one client, 8 clients, and the first use of new descriptions."""
    import httpx
    import openai

    from text2lora.serve.engine import Engine, EngineConfig
    from text2lora.serve.server import ServerThread, create_app

    load = os.getloadavg()[0]
    config = EngineConfig(max_batch=8, max_tokens_limit=max(args.max_tokens, 256))
    if kind == "llama.cpp":
        from text2lora.serve.llama_cpp import LlamaCppEngine

        engine = LlamaCppEngine(base, gen, config, n_threads=args.threads)
    else:
        engine = Engine(base, gen, config)
    with ServerThread(create_app(engine)) as srv:
        client = openai.OpenAI(base_url=srv.url + "/v1", api_key="unused", max_retries=0, timeout=1800)
        http = httpx.Client(timeout=600)
        first = []
        for i in range(args.first_uses):
            desc = f"{DESCRIPTIONS[i % len(DESCRIPTIONS)]} (first use {i}, {kind})"
            t0 = time.perf_counter()
            made = http.post(srv.url + "/v1/adapters", json={"description": desc}).json()
            total = (time.perf_counter() - t0) * 1000
            assert made["cached"] is False, made
            first.append((total, made["generation_ms"]))
        ids = [http.post(srv.url + "/v1/adapters", json={"description": d}).json()["id"] for d in DESCRIPTIONS]
        _phase(client, ids, 1, 8)  # warm-up: every adapter used once
        rows = [_phase(client, ids[:1], args.requests, args.max_tokens),
                _phase(client, ids, args.rounds, args.max_tokens)]
        http.close()
    for row in rows:
        row["engine"] = kind
    first_row = {"engine": kind, "first use ms": round(statistics.median(t for t, _ in first)),
                 "generation ms": round(statistics.median(g for _, g in first)),
                 "beyond generation ms": round(statistics.median(t - g for t, g in first)),
                 "load average before": round(load, 2)}
    return rows, first_row


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--engines", default=",".join(ENGINES), help="comma-separated engines (default: both)")
    ap.add_argument("--max-tokens", type=int, default=128, help="max_tokens per request (default 128)")
    ap.add_argument("--requests", type=int, default=3, help="requests of the single client (default 3)")
    ap.add_argument("--rounds", type=int, default=2, help="requests per client of the 8 clients (default 2)")
    ap.add_argument("--first-uses", type=int, default=3, help="new descriptions timed on first use (default 3)")
    ap.add_argument("--threads", type=int, default=2, help="CPU threads of each engine (default 2)")
    ap.add_argument("--generator", choices=["random", "shipped"], default="random",
                    help="adapters from random heads (long answers; default) or the shipped generator")
    add_out_arg(ap, "serve_engines")
    args = ap.parse_args()
    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    if not engines or any(e not in ENGINES for e in engines):
        ap.error(f"--engines takes {', '.join(ENGINES)}")

    import torch

    from text2lora import load_base
    from text2lora.embedded import DEFAULT_BASE

    torch.set_num_threads(args.threads)
    base = load_base(DEFAULT_BASE)
    gen, gen_kind = _generator(base, args.generator)
    rows, first = [], []
    for kind in engines:
        r, f = run(kind, base, gen, args)
        rows += r
        first.append(f)
        print(r, f, flush=True)

    print(f"\nbase {DEFAULT_BASE}, generator: {gen_kind}, {args.threads} thread(s) per engine, greedy chat, max_tokens "
          f"{args.max_tokens}; one client: {args.requests} requests; 8 clients with 8 distinct descriptions: "
          f"{args.rounds} requests each\n")
    print_table(rows, ["engine", "clients", "requests", "mean new tokens", "tokens/s", "p50 s", "p95 s"])
    print()
    print_table(first, ["engine", "first use ms", "generation ms", "beyond generation ms", "load average before"])
    targets = {}
    if set(engines) == set(ENGINES):
        by = {(r["engine"], r["clients"]): r for r in rows}
        one = by[("llama.cpp", 1)]["tokens/s"] / by[("torch", 1)]["tokens/s"]
        targets = {"one_client_speedup": round(one, 2), "one_client_speedup_target": 4.0,
                   "p95_8_clients_s": {e: by[(e, 8)]["p95 s"] for e in ENGINES},
                   "llama_cpp_first_use_beyond_generation_ms": first[engines.index("llama.cpp")]["beyond generation ms"],
                   "first_use_beyond_generation_target_ms": 1000}
        print(f"\none client: llama.cpp / PyTorch tokens/s = {one:.2f}x (target >= 4x); 8 clients p95: llama.cpp "
              f"{by[('llama.cpp', 8)]['p95 s']} s, PyTorch {by[('torch', 8)]['p95 s']} s (target: llama.cpp below); "
              f"llama.cpp first use beyond generation: {targets['llama_cpp_first_use_beyond_generation_ms']} ms "
              "(target < 1000 ms)")
    write_json("serve_engines", {"base": DEFAULT_BASE, "generator": gen_kind, "threads": args.threads,
                                 "max_tokens": args.max_tokens, "requests": args.requests, "rounds": args.rounds,
                                 "first_uses": args.first_uses, "rows": rows, "first_use": first, **targets},
               args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
