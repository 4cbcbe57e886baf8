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

``--adversarial`` measures instead what long prompts and hostile clients do to a short request: the
latency of a short chat request alone, sent just before
``--long`` prompts of ``--long-tokens`` tokens (the same batching window), just after them, and while
they already run; with the server's length-bucketed batching and with it turned off (every request in
one padded batch), with batches run in slices and without (static batches: a batch runs its prompts
and all its new tokens in one turn, as the server did before); and beside prompts over
``--max-prompt-tokens``, which are refused. Then the hostile rows (``--hostile-only`` runs only these): the
median of ``--repeat`` short requests (and of ``/health``) alone, beside a slowloris (``--slowloris``
connections that send a request line and one header and never finish, held by a child process, so that
``--nofile`` lowers the open-file limit of the server's process only), and beside ``--big-clients``
clients that post 1 MB prompts in a loop.
The batching window is 400 ms unless ``--batch-wait-ms`` is given, so that requests sent 100 ms apart share
one window even on a loaded machine (each request then waits up to that long for company).
The JSON goes where ``--out`` says, by default into the text2lora cache (never over tracked files).
Usage: python bench/serve.py [--rounds 3] [--max-tokens 32] [--misses 8]
       python bench/serve.py --adversarial [--long 2] [--long-tokens 1024] [--threads 1]
       python bench/serve.py --adversarial --hostile-only --nofile 1024 --slowloris 1100 --big-clients 4
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import add_out_arg, print_table, write_json  # noqa: E402
from text2lora.embedded import DEFAULT_BASE  # noqa: E402

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


def _long_prompt(tokenizer, n_tokens: int) -> str:
    """A completion prompt of about ``n_tokens`` tokens (prose, repeated and cut to length)."""
    text = ("The committee met on Tuesday to review the quarterly figures, the new hiring plan and the "
            "proposal to move the archive to the east wing of the library. ") * (n_tokens // 8 + 8)
    ids = tokenizer(text, add_special_tokens=False)["input_ids"][:n_tokens]
    return tokenizer.decode(ids)


SLOWLORIS = r"""
import socket, sys
host, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
socks, failed = [], 0
for _ in range(n):
    try:
        s = socket.create_connection((host, port), timeout=5)
        s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")
        socks.append(s)
    except OSError:
        failed += 1
print(len(socks), failed, flush=True)
sys.stdin.readline()
closed = 0
for s in socks:
    s.setblocking(False)
    try:
        s.recv(65536)
        closed += 1
    except BlockingIOError:
        pass
    except OSError:
        closed += 1
print(closed, flush=True)
"""
"""A child process that opens ``n`` connections, sends each a request line and one header and never the
rest; prints how many it opened (and how many failed), waits for a line on stdin, then prints how many the
server has closed."""

BIG_PROMPTS = r"""
import http.client, json, statistics, sys, threading, time
host, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
body = json.dumps({"model": "base", "prompt": "x" * 1_000_000, "max_tokens": 1}).encode()
stop, lock, answers = threading.Event(), threading.Lock(), []
def flood():
    while not stop.is_set():
        t0 = time.perf_counter()
        try:
            c = http.client.HTTPConnection(host, port, timeout=60)
            c.request("POST", "/v1/completions", body, {"content-type": "application/json"})
            status = c.getresponse().status
            c.close()
        except OSError as e:
            status = type(e).__name__
        with lock:
            answers.append((str(status), (time.perf_counter() - t0) * 1000))
threads = [threading.Thread(target=flood, daemon=True) for _ in range(n)]
for t in threads:
    t.start()
deadline = time.monotonic() + 120
while len(answers) < n and time.monotonic() < deadline:
    time.sleep(0.05)
print("ready", flush=True)
sys.stdin.readline()
stop.set()
with lock:
    got = list(answers)
print(len(got), ",".join(sorted({a[0] for a in got})) or "-", round(statistics.mean([a[1] for a in got] or [0])),
      flush=True)
"""
"""A child process with ``n`` threads that post a 1 MB completion prompt in a loop; prints ``ready`` once each
has had an answer, and after a line on stdin how many were answered, with which statuses, in what mean ms."""


def _timed(fn, repeat: int) -> tuple[float | str, str]:
    """Median milliseconds of ``repeat`` calls of ``fn`` (or the first failure's name) and the range."""
    ms = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        try:
            fn()
        except Exception as e:  # noqa: BLE001 - a failure under attack is a result
            return f"failed: {type(e).__name__}", ""
        ms.append((time.perf_counter() - t0) * 1000)
    return round(statistics.median(ms)), f"{round(min(ms))}-{round(max(ms))}"


def hostile(args: argparse.Namespace, srv, client, engine) -> list[dict]:
    """Short-request and /health latency alone, beside a slowloris and beside clients looping 1 MB prompts, with
    the server's default batching window."""
    import httpx

    from text2lora.serve.engine import EngineConfig

    engine.batcher.wait_s = EngineConfig().batch_wait_ms / 1000

    host, port = srv.url.rsplit("/", 1)[-1].split(":")
    health = httpx.Client(timeout=args.hostile_timeout)

    def short() -> None:
        client.chat.completions.create(model="base", max_tokens=args.short_tokens, temperature=0,
                                       messages=[{"role": "user", "content": "What is 12 + 7?"}])

    def check_health() -> None:
        health.get(srv.url + "/health").raise_for_status()

    guard = getattr(srv.config.app.state, "connections", None)

    def measure(name: str) -> dict:
        s_ms, s_range = _timed(short, args.repeat)
        h_ms, _ = _timed(check_health, args.repeat)
        row = {"short request": name, "short ms (median)": s_ms, "short ms (range)": s_range,
               "/health ms (median)": h_ms, "adversary": ""}
        print(row, flush=True)
        return row

    short()  # warm-up
    rows = [measure("alone")]

    if args.slowloris:
        rows.append(_beside_slowloris(args, host, port, guard, measure))
    if args.big_clients:
        rows.append(_beside_big_prompts(args, host, port, measure))
    rows.append(measure("alone again"))
    health.close()
    return rows


def _beside_slowloris(args: argparse.Namespace, host: str, port: str, guard, measure) -> dict:
    import resource

    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    child = subprocess.Popen([sys.executable, "-c", SLOWLORIS, host, port, str(args.slowloris)], text=True,
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard)))
    opened, failed = child.stdout.readline().split()
    time.sleep(1.0)
    held = dict(guard.snapshot()) if guard is not None else None
    row = measure(f"beside a slowloris ({args.slowloris} connections that never finish their request)")
    child.stdin.write("\n")
    child.stdin.flush()
    closed = child.stdout.readline().strip()
    child.wait(timeout=60)
    row["adversary"] = (f"{opened} opened ({failed} failed), {closed} closed by the server"
                        + (f"; cap {held['cap']}, {held['open']} open" if held else ""))
    return row


def _beside_big_prompts(args: argparse.Namespace, host: str, port: str, measure) -> dict:
    child = subprocess.Popen([sys.executable, "-c", BIG_PROMPTS, host, port, str(args.big_clients)], text=True,
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    child.stdout.readline()
    row = measure(f"beside {args.big_clients} clients looping 1 MB prompts")
    child.stdin.write("\n")
    child.stdin.flush()
    answered, statuses, mean_ms = child.stdout.readline().split()
    child.wait(timeout=120)
    row["adversary"] = f"{answered} prompts answered {statuses} in {mean_ms} ms (mean)"
    return row


def adversarial(args: argparse.Namespace) -> int:
    """A short request's latency alone and beside long prompts; see the module docstring."""
    import httpx
    import openai
    import torch

    from text2lora import load_base
    from text2lora.serve.batcher import GenRequest
    from text2lora.serve.engine import Engine, EngineConfig
    from text2lora.serve.server import ServerThread, create_app

    base = load_base(args.base)
    gen, _ = _generator(base, "random")
    wait_ms = args.batch_wait_ms
    engine = Engine(base, gen, EngineConfig(max_batch=8, batch_wait_ms=wait_ms,
                                            max_prompt_tokens=args.max_prompt_tokens))
    long_text = _long_prompt(base.tokenizer, args.long_tokens)
    over_text = _long_prompt(base.tokenizer, args.max_prompt_tokens + 512)
    bucketed = GenRequest.batch_key

    rows: list[dict] = []
    hostile_rows: list[dict] = []
    with ServerThread(create_app(engine)) as srv:
        client = openai.OpenAI(base_url=srv.url + "/v1", api_key="unused", max_retries=0, timeout=1800)
        hostile_client = openai.OpenAI(base_url=srv.url + "/v1", api_key="unused", max_retries=0,
                                       timeout=args.hostile_timeout)

        http = httpx.Client(timeout=1800)  # one client, made up front: a new one takes long to start under load

        def short() -> tuple[float, int, int, float]:
            t0 = time.perf_counter()
            r = client.chat.completions.create(model="base", max_tokens=args.short_tokens, temperature=0,
                                               messages=[{"role": "user", "content": "What is 12 + 7?"}])
            t1 = time.perf_counter()
            return (t1 - t0) * 1000, r.t2l["batch_size"], r.t2l["batch_id"], t1

        def long(text: str) -> tuple[float, int, int | None, float]:
            t0 = time.perf_counter()
            r = http.post(srv.url + "/v1/completions", json={
                "model": "base", "prompt": text, "max_tokens": args.long_max_tokens, "temperature": 0})
            t1 = time.perf_counter()
            return (t1 - t0) * 1000, r.status_code, r.json().get("t2l", {}).get("batch_id"), t1

        gap = engine.config.batch_wait_ms / 4000  # requests this far apart land in one batching window

        slicing = (engine.batcher.slice_tokens, engine.batcher.prefill_chunk)

        def scenario(name: str, buckets: bool, text: str | None, order: str, slices: bool = True) -> None:
            """``order``: "short first" / "long first" (``gap`` apart, one batching window) or "while running"
            (the short request is sent once the long prompts' batch has started). Without ``slices`` a batch
            runs its prompts and all its new tokens in one turn (static batches)."""
            GenRequest.batch_key = bucketed if buckets else (lambda self: self.sampling_key())
            engine.batcher.slice_tokens, engine.batcher.prefill_chunk = slicing if slices else (10**9, 10**9)
            with ThreadPoolExecutor(args.long + 1) as ex:
                longs, s = [], None
                if order == "short first":
                    s = ex.submit(short)
                    time.sleep(gap)
                if text is not None:
                    busy = engine.batcher.snapshot()["batches"]
                    longs = [ex.submit(long, text) for _ in range(args.long)]
                    if order == "while running":  # until their batch starts (a refused prompt never runs)
                        deadline = time.monotonic() + 120
                        while engine.batcher.snapshot()["batches"] == busy and time.monotonic() < deadline \
                                and not all(f.done() for f in longs):
                            time.sleep(0.01)
                    else:
                        time.sleep(gap)
                s = s or ex.submit(short)
                ms, size, batch, end = s.result()
                done = [f.result() for f in longs]
            GenRequest.batch_key = bucketed
            engine.batcher.slice_tokens, engine.batcher.prefill_chunk = slicing
            long_batches = {d[2] for d in done if d[2] is not None}
            ran = ("alone" if not long_batches else "with them" if batch in long_batches else
                   "started before them" if batch < min(long_batches) else "started after them")
            if long_batches:
                ran += ", ended " + ("before them" if end < min(d[3] for d in done if d[2] is not None)
                                     else "after them")
            rows.append({"short request sent": name, "length buckets": "on" if buckets else "off",
                         "batches in slices": "on" if slices else "off",
                         "short ms": round(ms), "short's batch size": size, "short ran": ran,
                         "long ms (mean)": round(statistics.mean(d[0] for d in done)) if done else "",
                         "long status": ",".join(sorted({str(d[1]) for d in done})) if done else ""})
            print(rows[-1], flush=True)

        if not args.hostile_only:
            short()  # warm-up
            scenario("alone", True, None, "alone")
            n, k = args.long, args.long_tokens
            for buckets in (True, False):
                scenario(f"just before {n} x {k}-token prompts (same batching window)", buckets, long_text,
                         "short first")
            scenario(f"just after {n} x {k}-token prompts (same batching window)", False, long_text, "long first")
            for slices in (True, False):
                scenario(f"just after {n} x {k}-token prompts (same batching window)", True, long_text,
                         "long first", slices)
                scenario(f"while {n} x {k}-token prompts run", True, long_text, "while running", slices)
            scenario(f"beside {n} x {args.max_prompt_tokens + 512}-token prompts (over the limit: refused)", True,
                     over_text, "long first")
        http.close()
        hostile_rows = hostile(args, srv, hostile_client, engine)
    print(f"\nbase {args.base}, {torch.get_num_threads()} torch thread(s); short request: chat, max_tokens "
          f"{args.short_tokens}; long prompts: /v1/completions, max_tokens {args.long_max_tokens}; "
          f"--max-prompt-tokens {args.max_prompt_tokens}; --batch-wait-ms {wait_ms:g} (the hostile rows: "
          f"{EngineConfig().batch_wait_ms:g}); open-file limit {_nofile()}\n")
    if rows:
        print_table(rows, ["short request sent", "length buckets", "batches in slices", "short ms",
                           "short's batch size", "short ran", "long ms (mean)", "long status"])
        print()
    print_table(hostile_rows, ["short request", "short ms (median)", "short ms (range)", "/health ms (median)",
                               "adversary"])
    write_json("serve_adversarial", {"base": args.base, "torch_threads": torch.get_num_threads(),
                                     "long": args.long, "long_tokens": args.long_tokens,
                                     "long_max_tokens": args.long_max_tokens, "short_tokens": args.short_tokens,
                                     "max_prompt_tokens": args.max_prompt_tokens, "batch_wait_ms": wait_ms,
                                     "open_file_limit": _nofile(), "slowloris": args.slowloris,
                                     "big_clients": args.big_clients, "repeat": args.repeat, "rows": rows,
                                     "hostile_rows": hostile_rows}, args.out)
    return 0


def _nofile() -> int:
    import resource

    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3, help="requests per client thread per mode")
    ap.add_argument("--max-tokens", type=int, default=32, help="max_tokens per request")
    ap.add_argument("--generator", choices=["random", "shipped"], default="random",
                    help="adapters from random heads (long answers; default) or the shipped generator")
    ap.add_argument("--misses", type=int, default=8, help="new descriptions for the miss/hit latency")
    ap.add_argument("--base", default=DEFAULT_BASE, help=f"base model (default {DEFAULT_BASE})")
    ap.add_argument("--batch-wait-ms", type=float, default=None,
                    help="the server's batching window (default 25; with --adversarial 400)")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch CPU threads (1 avoids OpenMP thrashing when other processes share the cores)")
    ap.add_argument("--adversarial", action="store_true",
                    help="measure a short request's latency alone and beside long prompts instead")
    ap.add_argument("--long", type=int, default=2, help="--adversarial: long prompts in flight (default 2)")
    ap.add_argument("--long-tokens", type=int, default=1024, help="--adversarial: tokens per long prompt")
    ap.add_argument("--long-max-tokens", type=int, default=16, help="--adversarial: max_tokens of a long prompt")
    ap.add_argument("--short-tokens", type=int, default=8, help="--adversarial: max_tokens of the short request")
    ap.add_argument("--max-prompt-tokens", type=int, default=2048, help="--adversarial: the server's prompt limit")
    ap.add_argument("--hostile-only", action="store_true",
                    help="--adversarial: only the rows beside a slowloris and beside 1 MB prompts")
    ap.add_argument("--slowloris", type=int, default=1100,
                    help="--adversarial: half-open connections (default 1100; 0: no slowloris row)")
    ap.add_argument("--big-clients", type=int, default=4,
                    help="--adversarial: clients looping 1 MB prompts (default 4; 0: no 1 MB row)")
    ap.add_argument("--repeat", type=int, default=5, help="--adversarial: short requests per hostile row (median)")
    ap.add_argument("--hostile-timeout", type=float, default=30.0,
                    help="--adversarial: seconds before a request of a hostile row counts as failed")
    ap.add_argument("--nofile", type=int, default=None,
                    help="--adversarial: lower the server process's open-file limit to this (as `ulimit -n`)")
    add_out_arg(ap, "serve")
    args = ap.parse_args()
    if args.nofile:
        import resource

        resource.setrlimit(resource.RLIMIT_NOFILE, (args.nofile, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.batch_wait_ms is None:  # --adversarial: long enough that requests 100 ms apart share a window
        args.batch_wait_ms = 400.0 if args.adversarial else 25.0
    if args.adversarial:
        return adversarial(args)

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
                         "target_speedup": 3.0, "latency_ms_median": ms, "misses": args.misses}, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
