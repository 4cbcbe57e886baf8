"""Benchmark adapter generation on the default base (SmolLM2-135M-Instruct) and encoder (all-MiniLM-L6-v2).

Measures, per generator configuration:
  - warm latency of one adapter from one description (median of --repeat runs, encoder + hypernetwork),
  - throughput for a batch of 64 descriptions (adapters/s),
  - cold start of `t2l generate` as a whole process (median of --cold runs, wall clock).

Usage: python bench/generate.py [--repeat 50] [--cold 3]
Targets on 2 CPU cores: <= 30 ms warm per adapter, >= 150 adapters/s batched, cold CLI <= 6 s.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import DESCRIPTIONS, add_out_arg, median_time, print_table, write_json  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=50, help="runs for the warm median (>= 50)")
    ap.add_argument("--cold", type=int, default=3, help="process starts for the cold median")
    ap.add_argument("--configs", default="shipped,M/512,M/128,S/512,L/512",
                    help="generator configs: 'shipped' and/or HEAD/HEAD_IN entries")
    add_out_arg(ap, "generate")
    args = ap.parse_args()

    import torch

    from text2lora import TextToLoRA, load_base
    from text2lora.generator import DEFAULT_GENERATOR_DIR

    base = load_base()
    batch64 = [f"{DESCRIPTIONS[i % len(DESCRIPTIONS)]} (variant {i})" for i in range(64)]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for cfg in args.configs.split(","):
            if cfg == "shipped":
                if not (DEFAULT_GENERATOR_DIR / "config.json").is_file():
                    print("no shipped generator in this installation; skipping 'shipped'", file=sys.stderr)
                    continue
                ckpt = DEFAULT_GENERATOR_DIR
                gen = TextToLoRA.from_pretrained()
            else:
                head, head_in = cfg.split("/")
                gen = TextToLoRA.init(base, head_size=head, head_in=int(head_in))
                ckpt = gen.save_pretrained(Path(tmp) / cfg.replace("/", "_"))
                gen = TextToLoRA.from_pretrained(ckpt)
            h = gen.hyper_config
            warm = median_time(lambda: gen.generate(DESCRIPTIONS[0]), args.repeat)
            with torch.inference_mode():
                emb1 = gen.embed(DESCRIPTIONS[:1])
                hyper_only = median_time(lambda: gen(emb1), args.repeat)
                enc_only = median_time(lambda: gen.embed(DESCRIPTIONS[:1]), args.repeat)
            t64 = median_time(lambda: gen.generate(batch64), 5, warmup=1)
            cold = []
            for i in range(args.cold):
                out = Path(tmp) / f"cold_{cfg.replace('/', '_')}_{i}"
                t = time.perf_counter()
                subprocess.run([sys.executable, "-m", "text2lora.cli", "generate", "--model", str(ckpt),
                                DESCRIPTIONS[0], "--out", str(out), "--quiet"], check=True)
                cold.append(time.perf_counter() - t)
            rows.append({
                "config": cfg, "head": h.head_size, "head_in": h.head_in, "params": gen.param_counts()["total"],
                "warm_ms": round(warm * 1e3, 1), "encoder_ms": round(enc_only * 1e3, 1),
                "hypernet_ms": round(hyper_only * 1e3, 1), "batch64_s": round(t64, 3),
                "adapters_per_s": round(64 / t64, 1), "cold_cli_s": round(statistics.median(cold), 2),
            })
            print(rows[-1], file=sys.stderr)
    cols = ["config", "params", "warm_ms", "encoder_ms", "hypernet_ms", "adapters_per_s", "cold_cli_s"]
    print_table(rows, cols)
    write_json("generate", {"rows": rows, "targets": {"warm_ms": 30, "adapters_per_s": 150, "cold_cli_s": 6}},
               out=args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
