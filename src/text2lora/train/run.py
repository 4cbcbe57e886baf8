"""Run directories: resolved config, metrics, TensorBoard logs, checkpoints, plots, resume state.

Layout of ``runs/<name>/``::

    config.yaml                  the resolved config (reloadable)
    metrics.csv                  step,split,metric,value,time (long format, one row per value)
    tb/                          TensorBoard logs (only when ``tensorboard`` is installed)
    checkpoints/step-000100/     resumable state: model.safetensors, optimizer.safetensors +
                                 optimizer.json, state.json (step, scheduler, sampler, RNG, best)
                                 and rng.safetensors (samplers and RNGs: one state per process)
    best/                        the best checkpoint by validation loss, in its usable format
    plots/*.png                  loss curves (only when ``matplotlib`` is installed)

Every checkpoint is written into a temporary sibling and renamed into place, so a crash (SIGKILL,
disk full) at any moment leaves the previous checkpoint valid. Nothing is pickled: tensors go to
safetensors, everything else to JSON.
"""

from __future__ import annotations

import csv
import errno
import io
import shutil
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from .._io import atomic_dir, atomic_write_json, atomic_write_text, read_json, remove_stale_temporaries
from .._rng import RngState, rank_states_from_files, rank_states_to_files, rng_state
from ..errors import CheckpointError, ConfigError, OutputExistsError, T2LWarning
from .config import TrainConfig, config_to_yaml, load_config, recipe_of

__all__ = ["RunDir", "optimizer_state_to_files", "optimizer_state_from_files",
           "RESUMABLE_KEYS"]

RESUMABLE_KEYS = frozenset({"steps", "eval_every", "save_every", "keep_checkpoints", "log_every", "device", "name"})
"""Config keys that may change when a run is resumed (everything else must match)."""

_METRIC_FIELDS = ["step", "split", "metric", "value", "time"]


# ----------------------------------------------------------------------------- optimizer / RNG state

def optimizer_state_to_files(state: dict[str, Any]) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Split ``optimizer.state_dict()`` into safetensors tensors and a JSON-ready rest."""
    tensors: dict[str, Tensor] = {}
    rest_state: dict[str, dict[str, Any]] = {}
    for idx, per_param in state["state"].items():
        rest: dict[str, Any] = {}
        for k, v in per_param.items():
            if isinstance(v, Tensor):
                tensors[f"{idx}.{k}"] = v.detach().cpu().contiguous()
            else:
                rest[k] = v
        rest_state[str(idx)] = rest
    groups = [{k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items()} for g in state["param_groups"]]
    return tensors, {"state": rest_state, "param_groups": groups,
                     "tuple_keys": sorted({k for g in state["param_groups"] for k, v in g.items()
                                           if isinstance(v, tuple)})}


def optimizer_state_from_files(tensors: dict[str, Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    """Inverse of :func:`optimizer_state_to_files`."""
    state: dict[int, dict[str, Any]] = {int(i): dict(rest) for i, rest in meta["state"].items()}
    for key, t in tensors.items():
        idx, name = key.split(".", 1)
        state.setdefault(int(idx), {})[name] = t
    tuple_keys = set(meta.get("tuple_keys", []))
    groups = [{k: (tuple(v) if k in tuple_keys else v) for k, v in g.items()} for g in meta["param_groups"]]
    return {"state": state, "param_groups": groups}


@dataclass
class _MetricsFile:
    """What a metrics.csv holds: its complete rows (header excluded), the complete lines that are not a
    row, and an unterminated last line."""

    rows: list[list[str]]
    bad: list[tuple[int, str]]
    """``(line number, text)`` of each line that does not parse as a row (torn by a killed write)."""
    tail: tuple[int, str] | None
    """``(line number, text)`` of a last line with no line end: being written now, or torn by a kill."""

    def describe(self, lines: list[tuple[int, str]]) -> str:
        shown = ", ".join(f"{n} ({text[:40]!r})" for n, text in lines[:5])
        return f"line{'s' if len(lines) > 1 else ''} {shown}{' ...' if len(lines) > 5 else ''}"


def _read_metrics_file(path: Path) -> _MetricsFile:
    if not path.is_file():
        return _MetricsFile([], [], None)
    with open(path, newline="", encoding="utf-8", errors="replace") as f:
        lines = f.read().split("\n")
    last = lines.pop()  # what follows the last line end: "" unless the last line is unterminated
    tail = (len(lines) + 1, last) if last else None
    rows, bad = [], []
    for n, line in enumerate(lines, 1):
        try:
            fields = next(csv.reader([line]), [])
            if n == 1 and fields == _METRIC_FIELDS:
                continue
            if len(fields) != len(_METRIC_FIELDS):
                raise ValueError
            int(fields[0]), float(fields[3])
        except (ValueError, csv.Error):
            bad.append((n, line.rstrip("\r\n")))
            continue
        rows.append(fields)
    return _MetricsFile(rows, bad, tail)


# ----------------------------------------------------------------------------- run directory

class RunDir:
    """One training run's directory. Create with :meth:`open`.

    Only the main process writes (``main=False`` on other ranks makes every write a no-op).
    """

    def __init__(self, path: Path, config: TrainConfig, main: bool = True):
        self.path = Path(path)
        self.config = config
        self.main = main
        self._tb = None
        self._tb_tried = False

    # ------------------------------------------------------------------ creation
    @classmethod
    def open(cls, path: str | Path, config: TrainConfig, resume: bool = False, main: bool = True) -> "RunDir":
        """Create a fresh run directory, or reopen one with ``resume``.

        A directory that exists is refused without ``resume``; with ``resume`` its saved config must
        match ``config`` except for :data:`RESUMABLE_KEYS`.
        """
        path = Path(path)
        if not main:  # other processes of a distributed run: the main process checks and writes
            return cls(path, config, main)
        recipe = recipe_of(config)
        if not resume:
            if path.exists() and (not path.is_dir() or any(path.iterdir())):
                raise OutputExistsError(f"run directory {path} already exists; pass --resume to continue it or "
                                        "--out NEW_DIR to start another run")
        else:
            if not (path / "config.yaml").is_file():
                raise CheckpointError(f"cannot resume: {path} is not a run directory (no config.yaml); drop "
                                      "--resume to start a new run there")
            saved = load_config(recipe, path / "config.yaml")
            diff = [k for k, v in saved.model_dump().items() if k not in RESUMABLE_KEYS and getattr(config, k) != v]
            if diff:
                raise ConfigError(f"cannot resume {path}: config key(s) {', '.join(diff)} differ from the saved "
                                  f"run (saved: {', '.join(f'{k}={getattr(saved, k)!r}' for k in diff)}); only "
                                  f"{', '.join(sorted(RESUMABLE_KEYS))} may change on resume")
        run = cls(path, config, main)
        if main:
            path.mkdir(parents=True, exist_ok=True)
            run.remove_stale_temporaries()
            atomic_write_text(path / "config.yaml", config_to_yaml(config))
        return run

    def remove_stale_temporaries(self) -> list[Path]:
        """Delete what a kill during a write left (``checkpoints/.step-*.tmp``, ``.best.*.tmp``, half-copied
        adapters): the run is being (re)opened, so no write of it is under way."""
        tasks = [p for p in (self.path / "tasks").glob("*") if p.is_dir()]
        return remove_stale_temporaries(self.path, self.checkpoint_root, self.path / "library", self.path / "plots",
                                        *tasks, *(t / "checkpoints" for t in tasks))

    @staticmethod
    def has_results(path: str | Path) -> bool:
        """True once a run in ``path`` has produced something worth keeping: a logged metric, a checkpoint, a
        best artifact or a finished adapter. A start that fails before that leaves nothing behind (the CLI
        removes what it wrote), so the corrected retry is not refused as "already exists"."""
        path = Path(path)
        if (path / "best").exists() or (path / "library").exists():
            return True
        if any(path.glob("checkpoints/step-*/state.json")) or any(path.glob("tasks/*/checkpoints/step-*/state.json")):
            return True
        return any(_read_metrics_file(p).rows for p in [path / "metrics.csv", *path.glob("tasks/*/metrics.csv")])

    # ------------------------------------------------------------------ metrics
    @property
    def metrics_path(self) -> Path:
        return self.path / "metrics.csv"

    def log(self, step: int, split: str, values: dict[str, float]) -> None:
        """Append values for ``step`` to metrics.csv (and TensorBoard when available). After a line torn
        by a killed write, the new rows start on a line of their own (the torn one is reported when read)."""
        if not self.main:
            return
        new = not self.metrics_path.exists()
        now = round(time.time(), 3)
        with open(self.metrics_path, "a+b") as f:
            last = (f.seek(-1, io.SEEK_END), f.read(1))[1] if f.tell() > 0 else b"\n"
        with open(self.metrics_path, "a", newline="", encoding="utf-8") as f:
            if last != b"\n":  # a kill tore the last line: end it, so the new rows stay whole
                f.write("\n" if last == b"\r" else "\r\n")
            w = csv.writer(f)
            if new:
                w.writerow(_METRIC_FIELDS)
            for k, v in values.items():
                w.writerow([step, split, k, repr(float(v)), now])
        tb = self._tensorboard()
        if tb is not None:
            for k, v in values.items():
                tb.add_scalar(f"{split}/{k}", float(v), step)

    def read_metrics(self, split: str | None = None, metric: str | None = None) -> list[tuple[int, str, str, float]]:
        """Rows ``(step, split, metric, value)`` of metrics.csv, filtered. A line that is not a row (torn by
        a killed write) is skipped with a warning naming it; an unterminated last line is skipped quietly
        (the run may be writing it)."""
        found = _read_metrics_file(self.metrics_path)
        if found.bad:
            warnings.warn(f"{self.metrics_path}: skipped {found.describe(found.bad)}, not a complete metrics row (torn "
                          "by an interrupted write?); resuming the run with --resume rewrites the file without it",
                          T2LWarning, stacklevel=2)
        rows = [(int(r[0]), r[1], r[2], float(r[3])) for r in found.rows]
        return [r for r in rows if (split is None or r[1] == split) and (metric is None or r[2] == metric)]

    def truncate_metrics(self, step: int) -> None:
        """Drop rows logged after ``step`` (they are replayed when a run resumes from ``step``), and lines torn
        by a kill mid-write, saying which."""
        if not self.main or not self.metrics_path.exists():
            return
        found = _read_metrics_file(self.metrics_path)
        torn = found.bad + ([found.tail] if found.tail else [])
        if torn:
            warnings.warn(f"{self.metrics_path}: dropped {found.describe(torn)}, torn by an interrupted write, while "
                          f"resuming from step {step}", T2LWarning, stacklevel=2)
        buf = io.StringIO()
        csv.writer(buf).writerows([_METRIC_FIELDS] + [r for r in found.rows if int(r[0]) <= step])
        atomic_write_text(self.metrics_path, buf.getvalue())

    def _tensorboard(self):
        if self._tb_tried:
            return self._tb
        self._tb_tried = True
        try:
            from torch.utils.tensorboard import SummaryWriter
        except Exception:  # tensorboard is optional: skip quietly
            return None
        self._tb = SummaryWriter(str(self.path / "tb"))
        return self._tb

    def plot(self) -> list[Path]:
        """Write PNG loss curves (train and validation) to ``plots/``; nothing if matplotlib is missing."""
        if not self.main:
            return []
        try:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except Exception:  # matplotlib is optional
            return []
        rows = self.read_metrics()
        metrics = sorted({(s, m) for _, s, m, _ in rows if m in ("loss", "ce", "l2", "lr", "grad_norm")})
        out = []
        (self.path / "plots").mkdir(exist_ok=True)
        for metric in sorted({m for _, m in metrics}):
            fig, ax = plt.subplots(figsize=(6, 3.5))
            for split in sorted({s for s, m in metrics if m == metric}):
                pts = [(st, v) for st, s, m, v in rows if s == split and m == metric]
                xs, ys = [p[0] for p in pts], [p[1] for p in pts]
                if len(pts) > 100:  # noisy per-step values: faint, with a running mean of 25 steps
                    line, = ax.plot(xs, ys, alpha=0.25, linewidth=0.8)
                    mean = [sum(ys[max(0, i - 24): i + 1]) / len(ys[max(0, i - 24): i + 1]) for i in range(len(ys))]
                    ax.plot(xs, mean, color=line.get_color(), label=f"{split} (mean of 25 steps)")
                else:
                    ax.plot(xs, ys, marker="o" if len(pts) < 30 else None, label=split)
            ax.set_xlabel("step")
            ax.set_ylabel(metric)
            ax.legend()
            fig.tight_layout()
            buf = io.BytesIO()
            fig.savefig(buf, format="png", dpi=100)
            plt.close(fig)
            from .._io import atomic_write_bytes

            p = self.path / "plots" / f"{metric}.png"
            atomic_write_bytes(p, buf.getvalue())
            out.append(p)
        return out

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
            self._tb = None

    # ------------------------------------------------------------------ checkpoints
    @property
    def checkpoint_root(self) -> Path:
        return self.path / "checkpoints"

    def checkpoints(self) -> list[Path]:
        """Complete checkpoints, oldest first (incomplete temporaries are ignored)."""
        root = self.checkpoint_root
        if not root.is_dir():
            return []
        found = [p for p in root.iterdir() if p.is_dir() and p.name.startswith("step-") and (p / "state.json").is_file()]
        return sorted(found, key=lambda p: int(p.name.split("-")[1]))

    def latest_checkpoint(self) -> Path | None:
        cks = self.checkpoints()
        return cks[-1] if cks else None

    def save_checkpoint(self, step: int, model_state: dict[str, Tensor], optimizer_state: dict[str, Any],
                        state: dict[str, Any], config: dict[str, Any] | None = None,
                        rng: list[RngState] | None = None) -> Path | None:
        """Write ``checkpoints/step-N`` atomically, then prune old ones. Returns its path.

        ``state`` (JSON-ready) should hold the scheduler, sampler and anything else to resume.
        ``config``, when given, is written as ``config.json`` beside ``model.safetensors``, which
        makes the checkpoint a loadable generator directory (``t2l watch`` evaluates those).
        ``rng``: every process's :func:`~text2lora._rng.rng_state`, in process order (default: this
        process's alone). A failed write (e.g. disk full) raises :class:`CheckpointError` and leaves
        the previous checkpoint untouched.
        """
        if not self.main:
            return None
        from safetensors.torch import save_file

        path = self.checkpoint_root / f"step-{step:06d}"
        opt_tensors, opt_meta = optimizer_state_to_files(optimizer_state)
        rng_tensors, rng_meta = rank_states_to_files(rng if rng is not None else [rng_state()])
        try:
            with atomic_dir(path, force=True) as tmp:
                save_file({k: v.detach().cpu().contiguous() for k, v in model_state.items()},
                          str(tmp / "model.safetensors"), metadata={"format": "pt"})
                save_file(opt_tensors, str(tmp / "optimizer.safetensors"), metadata={"format": "pt"})
                atomic_write_json(tmp / "optimizer.json", opt_meta)
                save_file(rng_tensors, str(tmp / "rng.safetensors"))
                atomic_write_json(tmp / "state.json", {"step": step, "rng": rng_meta, **state})
                if config is not None:
                    atomic_write_json(tmp / "config.json", config)
        except OSError as e:
            prev = self.latest_checkpoint()
            why = "the disk is full" if e.errno == errno.ENOSPC else str(e)
            raise CheckpointError(f"could not write checkpoint {path} ({why}); the previous checkpoint "
                                  f"{prev or '(none)'} is intact; free space and resume with --resume") from None
        for old in self.checkpoints()[:-self.config.keep_checkpoints]:
            shutil.rmtree(old, ignore_errors=True)
        return path

    def load_checkpoint(self, path: Path | None = None) -> dict[str, Any] | None:
        """Load a checkpoint (default: the latest): ``{"model", "optimizer", "state", "rng", "path"}``, or
        ``None`` when there is none. ``rng`` holds every process's RNG states, in process order
        (:func:`~text2lora._rng.set_rng_state` restores one)."""
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        path = path or self.latest_checkpoint()
        if path is None:
            return None
        try:
            model = load_file(str(path / "model.safetensors"))
            opt = optimizer_state_from_files(load_file(str(path / "optimizer.safetensors")),
                                             read_json(path / "optimizer.json"))
            rng = load_file(str(path / "rng.safetensors"))
            state = read_json(path / "state.json")
            rngs = rank_states_from_files(rng, state.pop("rng"))
        except (SafetensorError, OSError, KeyError, ValueError, IndexError) as e:
            raise CheckpointError(f"checkpoint {path} is unreadable ({e}); delete it to resume from the one "
                                  "before") from None
        return {"model": model, "optimizer": opt, "state": state, "rng": rngs, "path": path}

    @property
    def best_path(self) -> Path:
        return self.path / "best"
