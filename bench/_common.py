"""Helpers shared by the benchmark scripts: timing, machine facts, table printing, JSON output."""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any, Callable

# Task descriptions the benchmarks generate adapters from.
DESCRIPTIONS = [
    "Answer grade-school math word problems step by step.", "Translate English sentences into French.",
    "Decide whether the statement is true or false and answer yes or no.",
    "Pick the most plausible ending of a short everyday scenario.", "Write a Python function from its docstring.",
    "Classify the sentiment of a product review as positive or negative.", "Sort a list of words alphabetically.",
    "Answer a science question by choosing one of four options.",
]


def machine() -> dict[str, Any]:
    import torch

    return {"cpu_cores": os.cpu_count(), "torch_threads": torch.get_num_threads(), "python": platform.python_version(),
            "torch": torch.__version__, "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "platform": platform.platform()}


def median_time(fn: Callable[[], Any], repeat: int, warmup: int = 3) -> float:
    """Median wall time of ``fn`` in seconds over ``repeat`` runs after ``warmup`` runs."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def print_table(rows: list[dict[str, Any]], columns: list[str]) -> None:
    widths = {c: max(len(c), *(len(str(r.get(c, ""))) for r in rows)) for c in columns}
    print(" | ".join(c.ljust(widths[c]) for c in columns))
    print("-|-".join("-" * widths[c] for c in columns))
    for r in rows:
        print(" | ".join(str(r.get(c, "")).ljust(widths[c]) for c in columns))


def add_out_arg(ap: argparse.ArgumentParser, name: str) -> None:
    """``--out FILE.json``: where a benchmark writes its JSON. By default outside the repository, so a run never
    replaces the committed numbers in bench/results/ unless asked to."""
    ap.add_argument("--out", metavar="FILE.json", default=None,
                    help=f"write the JSON here (default: bench/{name}.json under the text2lora cache, "
                         f"$TEXT2LORA_CACHE or ~/.cache/text2lora; --out bench/results/{name}.json replaces the "
                         "committed numbers)")


def out_path(name: str, out: str | Path | None = None) -> Path:
    """The JSON file of benchmark ``name``: ``out`` when given, else ``bench/<name>.json`` in the cache."""
    if out:
        return Path(out)
    from text2lora._io import cache_dir

    return cache_dir("bench") / f"{name}.json"


def write_json(name: str, payload: dict[str, Any], out: str | Path | None = None) -> Path:
    """Write ``payload`` and the machine's facts to :func:`out_path` (atomically) and say where."""
    from text2lora._io import atomic_write_json

    path = out_path(name, out)
    atomic_write_json(path, {"machine": machine(), **payload})
    print(f"\nwrote {path}")
    return path
