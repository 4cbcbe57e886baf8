"""Time to build each task collection from the downloaded packages and to load it from the cache.

    python bench/data.py                 # build benchmarks + bigbench, then time loading
    python bench/data.py --no-build      # only time loading the collections already in the cache

Prints a table and writes its JSON to --out (default: bench/data.json in the text2lora cache, so the committed
bench/results/data.json changes only when --out names it). Loading is timed in fresh subprocesses (cold
Python, warm OS file cache): "load" is `load_collection` (task metadata; examples decode lazily per
task), "load+decode" also touches every split of every task.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import add_out_arg, out_path  # noqa: E402

_LOAD = """
import time, json
from text2lora.data import load_collection
t0 = time.perf_counter(); recs = load_collection({name!r}); t1 = time.perf_counter()
n = sum(len(v) for r in recs for v in r.splits.values()); t2 = time.perf_counter()
print(json.dumps({{"load_s": t1 - t0, "decode_s": t2 - t1, "tasks": len(recs), "examples": n}}))
"""


def _time_load(name: str, repeats: int) -> dict:
    runs = [json.loads(subprocess.run([sys.executable, "-c", _LOAD.format(name=name)], check=True,
                                      capture_output=True, text=True).stdout.strip().splitlines()[-1])
            for _ in range(repeats)]
    best = min(runs, key=lambda r: r["load_s"])
    return {"load_s": round(best["load_s"], 4),
            "load_decode_s": round(min(r["load_s"] + r["decode_s"] for r in runs), 3),
            "tasks": best["tasks"], "examples": best["examples"]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--no-build", action="store_true", help="skip building; time loading only")
    ap.add_argument("--collections", nargs="+", default=["benchmarks", "bigbench"])
    ap.add_argument("--repeats", type=int, default=3, help="load timings per collection (best is kept)")
    add_out_arg(ap, "data")
    args = ap.parse_args()

    from text2lora.data import build_collection
    from text2lora.data.records import collection_dir

    results = {}
    for name in args.collections:
        row: dict = {}
        if not args.no_build:
            t0 = time.perf_counter()
            build_collection(name, quiet=True)
            row["build_s"] = round(time.perf_counter() - t0, 1)
        row.update(_time_load(name, args.repeats))
        folder = collection_dir(name)
        row["cache_mb"] = round(sum(f.stat().st_size for f in folder.iterdir()) / 1e6, 1)
        results[name] = row

    print(f"{'collection':<12} {'tasks':>6} {'examples':>9} {'build s':>8} {'load s':>8} {'load+decode s':>14} "
          f"{'cache MB':>9}")
    for name, r in results.items():
        print(f"{name:<12} {r['tasks']:>6} {r['examples']:>9} {r.get('build_s', float('nan')):>8.1f} "
              f"{r['load_s']:>8.4f} {r['load_decode_s']:>14.3f} {r['cache_mb']:>9.1f}")
    out = out_path("data", args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    machine = {"python": platform.python_version(), "machine": platform.machine(), "cpus": os.cpu_count()}
    out.write_text(json.dumps({"machine": machine, "results": results}, indent=1) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
