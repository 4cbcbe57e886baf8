"""Evaluate each new checkpoint of a training run as it appears; keep the best; signal early stopping.

A checkpoint is a generator directory (``config.json`` + ``model.safetensors``) matching
``pattern`` under the run directory (default ``checkpoints/*``; folders starting with ``.`` are
temporary atomic writes and are skipped). Each one is evaluated with a generator condition on the
*validation* split of the chosen tasks (test sets are never used for model selection), and the
score is the average over tasks. State lives in ``RUN_DIR/watch/``:

- ``state.json``: every evaluated checkpoint with its per-task scores and average, and the best;
- ``<checkpoint>/results.jsonl``: per-example results (a restarted watcher resumes them);
- ``best/``: a copy of the best checkpoint so far (replaced atomically).

With ``patience = k``, after ``k`` evaluated checkpoints in a row without an improvement of more
than ``min_delta`` the watcher writes ``RUN_DIR/<stop_file>`` (JSON: reason, best checkpoint, its
score) and returns; a training loop that checks for that file can stop.
"""

from __future__ import annotations

import re
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from .._io import STOP_FILE, atomic_dir, atomic_write_json, read_json
from ..base import BaseModel
from ..data import TaskRecord
from ..errors import ConfigError
from .report import summarize
from .runner import EvalConfig, run_eval

__all__ = ["WatchConfig", "find_checkpoints", "watch", "SELECTION_BENCHMARKS"]

#: Benchmarks with a validation split distinct from their evaluation items: the default for selection.
SELECTION_BENCHMARKS = ["arc_challenge", "arc_easy", "boolq", "hellaswag", "openbookqa", "piqa", "winogrande"]


CONDITIONS = ("t2l", "t2l-train", "t2l-other", "t2l-random", "hyperdecoders")
"""The generator condition kinds a watcher evaluates checkpoints with."""


@dataclass
class WatchConfig:
    """What the checkpoint watcher evaluates and when it stops."""

    run_dir: str
    """Training run directory."""
    benchmarks: list[str] = field(default_factory=lambda: list(SELECTION_BENCHMARKS))
    """Tasks to select on (their validation split)."""
    condition: str = "t2l"
    """Generator condition kind: ``t2l`` (held-out descriptions), ``t2l-train``, ``t2l-other``, ``t2l-random`` or
    ``hyperdecoders``."""
    split: str = "validation"
    """Split to evaluate; ``test`` is refused (no model selection on test sets)."""
    limit: int | None = 100
    """Items per task (seeded subset)."""
    pattern: str = "checkpoints/*"
    """Glob (relative to ``run_dir``) of checkpoint directories."""
    interval: float = 60.0
    """Seconds between scans for new checkpoints."""
    patience: int | None = None
    """Stop after this many evaluated checkpoints without improvement (``None``: never)."""
    min_delta: float = 0.0
    """Improvement (percentage points of the average) that counts."""
    stop_file: str = STOP_FILE
    """File written under ``run_dir`` to signal early stopping."""
    once: bool = False
    """Evaluate the checkpoints present now, then return."""
    idle_timeout: float | None = None
    """Return after this many seconds without a new checkpoint (``None``: wait until interrupted)."""
    mc_metric: str = "acc_norm"
    """Multiple-choice accuracy that selects: ``acc`` (summed log-probs) or ``acc_norm`` (per character)."""
    seed: int = 0
    """Seed of the item subset."""
    batch_size: int = 8
    """Examples per forward pass."""
    quiet: bool = False
    """No progress bars."""

    def __post_init__(self) -> None:
        if self.split == "test":
            raise ConfigError("--split test is refused: choosing checkpoints on test sets leaks them into the "
                              "results; use validation (or train) splits for model selection")
        if self.condition not in CONDITIONS:
            raise ConfigError(f"--condition must be one of {', '.join(CONDITIONS)} (a generator condition), "
                              f"got {self.condition!r}")
        if self.patience is not None and self.patience < 1:
            raise ConfigError(f"--patience must be >= 1, got {self.patience}")


def _natural_key(p: Path) -> list:
    return [int(s) if s.isdigit() else s for s in re.split(r"(\d+)", p.name)]


def find_checkpoints(run_dir: str | Path, pattern: str = "checkpoints/*") -> list[Path]:
    """Complete checkpoint directories matching ``pattern``, in natural order (step-100 < step-1000)."""
    run_dir = Path(run_dir)
    found = [p for p in run_dir.glob(pattern) if p.is_dir() and not p.name.startswith(".")
             and (p / "config.json").is_file() and (p / "model.safetensors").is_file()]
    return sorted(found, key=_natural_key)


def _copy_best(src: Path, dest: Path) -> None:
    with atomic_dir(dest, force=True) as tmp:
        for f in src.iterdir():
            if f.is_file():
                shutil.copy2(f, tmp / f.name)


def watch(cfg: WatchConfig, base: BaseModel, tasks: Sequence[TaskRecord] | None = None,
          log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run the watcher (see module docstring); returns the final state."""
    run = Path(cfg.run_dir)
    if not run.is_dir():
        raise ConfigError(f"run directory {run} does not exist")
    wdir = run / "watch"
    wdir.mkdir(exist_ok=True)
    state_path = wdir / "state.json"
    state: dict[str, Any] = read_json(state_path) if state_path.is_file() else {
        "evaluated": {}, "best": None, "best_score": None, "since_best": 0, "stopped": False}
    state["config"] = asdict(cfg)
    last_new = time.monotonic()
    while True:
        new = [c for c in find_checkpoints(run, cfg.pattern) if c.name not in state["evaluated"]]
        for ckpt in new:
            last_new = time.monotonic()
            ecfg = EvalConfig(benchmarks=list(cfg.benchmarks), conditions=[f"{ckpt.name}={cfg.condition}:{ckpt}"],
                              base=base.spec.name, out=str(wdir / ckpt.name), limit=cfg.limit, seed=cfg.seed,
                              split=cfg.split, batch_size=cfg.batch_size, mc_metric=cfg.mc_metric, quiet=cfg.quiet)
            records = run_eval(ecfg, base, tasks)
            summary = summarize(records, cfg.mc_metric)
            avg = summary["average"][ckpt.name]
            scores = {t: round(c["score"], 4) for t, c in summary["scores"][ckpt.name].items()}
            improved = state["best_score"] is None or avg > state["best_score"] + cfg.min_delta
            state["evaluated"][ckpt.name] = {"path": str(ckpt), "average": avg, "scores": scores,
                                             "time": time.strftime("%Y-%m-%dT%H:%M:%S")}
            if improved:
                state.update(best=ckpt.name, best_score=avg, since_best=0)
                _copy_best(ckpt, wdir / "best")
            else:
                state["since_best"] += 1
            atomic_write_json(state_path, state)
            log(f"{ckpt.name}: average {avg:.2f} ({'new best' if improved else 'best ' + str(state['best'])})")
            if cfg.patience is not None and state["since_best"] >= cfg.patience:
                reason = (f"no improvement over {state['best']} ({state['best_score']:.2f}) in "
                          f"{state['since_best']} checkpoints (patience {cfg.patience})")
                atomic_write_json(run / cfg.stop_file, {"reason": reason, "best": state["best"],
                                                        "best_score": state["best_score"],
                                                        "best_path": str(wdir / "best")})
                state["stopped"] = True
                atomic_write_json(state_path, state)
                log(f"early stop: {reason}; wrote {run / cfg.stop_file}")
                return state
        if cfg.once:
            return state
        if cfg.idle_timeout is not None and time.monotonic() - last_new > cfg.idle_timeout:
            log(f"no new checkpoint for {cfg.idle_timeout:.0f} s; stopping")
            return state
        time.sleep(cfg.interval)
