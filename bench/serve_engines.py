"""``t2l serve`` on the PyTorch engine and on the llama.cpp engine, side by side in one run, on the default base.

Both engines serve at once on 127.0.0.1, each a ``t2l serve --engine ...`` process of its own (as deployed;
only one is sent requests at a time), through HTTP with the official ``openai`` client, the same adapters (a
fresh generator with random heads, as in bench/serve.py: the shipped generator's adapters make the model answer
in a token or two), greedy chat requests for long answers (a story, an explanation) of ``--max-tokens`` (128)
new tokens:

- first use of a new description: ``POST /v1/adapters`` for ``--first-uses`` descriptions never seen before
  (median): the whole request, the generation alone (the response's ``generation_ms``), and the rest (for
  llama.cpp: the GGUF export and the load into llama.cpp, plus HTTP);
- then ``--repeat`` times, the engines taking turns (their order alternating): one client sending one
  request with an adapter, then 8 clients at once, each with its own adapter (8 distinct descriptions),
  sending one request each. tokens/s is all new tokens over the wall time of those phases; latency is each
  request's, end to end, over all repetitions. Taking turns spreads what other processes do over both.

Both engines get ``--threads`` CPU threads (``t2l serve --threads``: PyTorch's threads, or llama.cpp's).
The CPU that processes other than this benchmark and its two servers used during each engine's phases is
recorded (in cores): the numbers are only comparable on a quiet machine.
The JSON goes where ``--out`` says, by default into the text2lora cache (never over tracked files).
Usage: python bench/serve_engines.py [--max-tokens 128] [--repeat 4] [--threads 2]
Needs llama-cpp-python (T2L_LLAMA_CPP=1 bash scripts/setup.sh) for the llama.cpp rows.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import DESCRIPTIONS, add_out_arg, print_table, write_json  # noqa: E402
from serve import _generator  # noqa: E402

ENGINES = ("torch", "llama.cpp")
PROMPTS = ["Write a long story about a lighthouse keeper and a storm.", "Explain in detail how a steam engine works.",
           "Describe your ideal city, street by street.", "Tell me everything you know about the history of Rome.",
           "Write a long letter to a friend about your summer.", "Explain how bread is made, step by step.",
           "Describe a journey by train across the mountains.", "Tell the story of a robot who learns to paint."]
"""Requests for long answers: the replies run to max_tokens rather than ending after a sentence."""


def _cpu_s(pids: list[int]) -> tuple[float, float]:
    """(CPU seconds the whole machine has been busy, CPU seconds of this process and of ``pids``), from
    /proc/stat and /proc/PID/stat."""
    tick = os.sysconf("SC_CLK_TCK")
    with open("/proc/stat") as f:
        fields = [float(x) for x in f.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0.0)  # idle + iowait
    ours = time.process_time()
    for pid in pids:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read().rsplit(")", 1)[1].split()
        ours += (float(stat[11]) + float(stat[12])) / tick  # utime + stime
    return (sum(fields[:8]) - idle) / tick, ours


def _percentile(xs: list[float], q: float) -> float:
    import numpy as np

    return float(np.percentile(xs, q))


def _ask(client, model: str, question: str, max_tokens: int) -> tuple[float, int]:
    """One greedy chat request: (seconds, new tokens)."""
    t0 = time.perf_counter()
    r = client.chat.completions.create(model=model, max_tokens=max_tokens, temperature=0,
                                       messages=[{"role": "user", "content": question}])
    return time.perf_counter() - t0, r.usage.completion_tokens


def _phase(client, ids: list[str], max_tokens: int, pids: list[int]) -> tuple[list[float], int, float, float]:
    """``len(ids)`` clients at once, client i sending one request with adapter ``ids[i]``: (latencies, new
    tokens, wall seconds, CPU seconds of other processes than this one and ``pids`` meanwhile)."""
    results: list[tuple[float, int]] = []
    lock = threading.Lock()
    gate = threading.Barrier(len(ids))

    def one(i: int) -> None:
        gate.wait(timeout=60)
        res = _ask(client, ids[i], PROMPTS[i % len(PROMPTS)], max_tokens)
        with lock:
            results.append(res)

    (busy0, own0), t0 = _cpu_s(pids), time.perf_counter()
    with ThreadPoolExecutor(len(ids)) as ex:
        list(ex.map(one, range(len(ids))))
    (busy1, own1), wall = _cpu_s(pids), time.perf_counter() - t0
    return [s for s, _ in results], sum(n for _, n in results), wall, max(0.0, (busy1 - busy0) - (own1 - own0))


class _Server:
    """One engine's ``t2l serve`` process, its client and its 8 adapters."""

    def __init__(self, kind: str, gen_dir: Path, args: argparse.Namespace):
        import httpx
        import openai

        self.kind = kind
        with socket.socket() as sock:  # a free port
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        cmd = [sys.executable, "-m", "text2lora.cli", "serve", "--model", str(gen_dir), "--engine", kind,
               "--threads", str(args.threads), "--port", str(port), "--max-batch", "8", "--quiet",
               "--max-tokens-limit", str(max(args.max_tokens, 256))]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self.http = httpx.Client(timeout=600)
        deadline = time.monotonic() + 600
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"t2l serve --engine {kind} exited: {self.proc.stderr.read()[-2000:]}")
            try:
                self.http.get(self.url + "/health", timeout=2).raise_for_status()
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
        self.client = openai.OpenAI(base_url=self.url + "/v1", api_key="unused", max_retries=0, timeout=1800)
        self.ids: list[str] = []

    def first_uses(self, n: int) -> dict:
        """``POST /v1/adapters`` for ``n`` new descriptions, then the 8 descriptions the clients use."""
        first = []
        for i in range(n):
            desc = f"{DESCRIPTIONS[i % len(DESCRIPTIONS)]} (first use {i}, {self.kind})"
            t0 = time.perf_counter()
            made = self.http.post(self.url + "/v1/adapters", json={"description": desc}).json()
            total = (time.perf_counter() - t0) * 1000
            assert made["cached"] is False, made
            first.append((total, made["generation_ms"]))
        self.ids = [self.http.post(self.url + "/v1/adapters", json={"description": d}).json()["id"]
                    for d in DESCRIPTIONS]
        return {"engine": self.kind, "first use ms": round(statistics.median(t for t, _ in first)),
                "generation ms": round(statistics.median(g for _, g in first)),
                "beyond generation ms": round(statistics.median(t - g for t, g in first))}

    def stop(self) -> None:
        self.http.close()
        self.proc.terminate()
        self.proc.wait(timeout=60)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--engines", default=",".join(ENGINES), help="comma-separated engines (default: both)")
    ap.add_argument("--max-tokens", type=int, default=128, help="max_tokens per request (default 128)")
    ap.add_argument("--repeat", type=int, default=4,
                    help="turns of each engine: one request of one client, then one of each of 8 clients (default 4)")
    ap.add_argument("--first-uses", type=int, default=3, help="new descriptions timed on first use (default 3)")
    ap.add_argument("--threads", type=int, default=2, help="CPU threads of each engine (default 2)")
    ap.add_argument("--generator", choices=["random", "shipped"], default="random",
                    help="adapters from random heads (long answers; default) or the shipped generator")
    add_out_arg(ap, "serve_engines")
    args = ap.parse_args()
    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    if not engines or any(e not in ENGINES for e in engines):
        ap.error(f"--engines takes {', '.join(ENGINES)}")

    import tempfile

    import torch

    from text2lora import load_base
    from text2lora.embedded import DEFAULT_BASE

    torch.set_num_threads(args.threads)
    base = load_base(DEFAULT_BASE)
    gen, gen_kind = _generator(base, args.generator)
    with tempfile.TemporaryDirectory() as tmp:
        gen.save_pretrained(Path(tmp) / "gen")
        del base, gen
        servers = []
        try:
            servers = [_Server(kind, Path(tmp) / "gen", args) for kind in engines]
            pids = [s.proc.pid for s in servers]
            first = [s.first_uses(args.first_uses) for s in servers]
            for s in servers:  # warm-up: every adapter used once
                _phase(s.client, s.ids, 8, pids)
            acc = {(s.kind, n): {"lat": [], "tokens": 0, "wall": 0.0, "others": 0.0} for s in servers for n in (1, 8)}
            for rep in range(args.repeat):
                for n in (1, 8):
                    for s in servers if rep % 2 == 0 else servers[::-1]:
                        lat, tokens, wall, others = _phase(s.client, s.ids[:n], args.max_tokens, pids)
                        a = acc[(s.kind, n)]
                        a["lat"] += lat
                        a["tokens"] += tokens
                        a["wall"] += wall
                        a["others"] += others
                        print(s.kind, n, round(tokens / wall, 1), "tokens/s", flush=True)
        finally:
            for s in servers:
                s.stop()
    rows = [{"engine": kind, "clients": n, "requests": len(a["lat"]),
             "mean new tokens": round(a["tokens"] / len(a["lat"]), 1), "tokens/s": round(a["tokens"] / a["wall"], 1),
             "p50 s": round(_percentile(a["lat"], 50), 2), "p95 s": round(_percentile(a["lat"], 95), 2),
             "other processes' cores": round(a["others"] / a["wall"], 2)} for (kind, n), a in acc.items()]

    print(f"\nbase {DEFAULT_BASE}, generator: {gen_kind}, {args.threads} thread(s) per engine, greedy chat, max_tokens "
          f"{args.max_tokens}; {args.repeat} turns: one client, one request; 8 clients with 8 distinct descriptions, "
          "one request each\n")
    print_table(rows, ["engine", "clients", "requests", "mean new tokens", "tokens/s", "p50 s", "p95 s",
                       "other processes' cores"])
    print()
    print_table(first, ["engine", "first use ms", "generation ms", "beyond generation ms"])
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
                                 "max_tokens": args.max_tokens, "repeat": args.repeat,
                                 "first_uses": args.first_uses, "rows": rows, "first_use": first, **targets},
               args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
