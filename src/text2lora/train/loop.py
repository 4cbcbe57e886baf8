"""The training loop shared by every recipe.

A recipe provides a :class:`Job` (what one micro-batch's loss is, how to validate, what to save);
:class:`Trainer` (or :func:`train_loop`) does the rest: AdamW, linear warm-up then linear decay,
gradient accumulation and clipping, NaN/inf detection (stop, keep the last good checkpoint, name the
step), a tqdm progress bar with ETA, periodic validation with best-checkpoint tracking and early
stopping, periodic resumable checkpoints, and resume. Device placement and DDP go through :mod:`accelerate`, so the same
code runs on one CPU with no launcher and on many GPUs under ``accelerate launch``.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol, Sequence

import torch
from torch import Tensor, nn

from .._io import STOP_FILE
from .._rng import rng_state, set_rng_state
from ..base import BaseModel, load_base
from ..errors import CheckpointError, ConfigError, T2LError
from .config import TrainConfig, _TaskConfig
from .provenance import checkpoint_record
from .run import RunDir

__all__ = ["Job", "LoopResult", "NonFiniteLossError", "Trainer", "make_accelerator", "make_optimizer",
           "make_scheduler", "train_loop"]


class NonFiniteLossError(T2LError):
    """The loss or gradient became NaN/inf; training stopped and the last good checkpoint was kept."""

    def __init__(self, message: str, step: int, checkpoint: Path | None):
        super().__init__(message)
        self.step = step
        self.checkpoint = checkpoint


class Job(Protocol):
    """What a recipe hands to :func:`train_loop`."""

    module: nn.Module
    """The trainable module (parameters with ``requires_grad`` are optimised)."""
    model: nn.Module
    """The module to call in :meth:`loss`; the loop sets it to the Accelerate-prepared ``module``."""

    def loss(self, step: int) -> tuple[Tensor, dict[str, float]]:
        """Loss of the next micro-batch (scalar with grad) and extra numbers to log."""

    def validate(self) -> float | None:
        """Validation loss (lower is better), or ``None`` when there is nothing to validate on."""

    def save_artifact(self, path: Path, step: int | None = None) -> None:
        """Write the usable result (generator checkpoint, PEFT adapter) to ``path`` atomically; ``step`` is the
        training step whose weights it holds."""

    def trainable_state(self) -> dict[str, Tensor]:
        """Tensors needed to restore the trained weights."""

    def load_trainable_state(self, state: dict[str, Tensor]) -> None: ...

    def state_dict(self) -> dict[str, Any]:
        """JSON-ready data-order state (sampler positions)."""

    def load_state_dict(self, state: dict[str, Any]) -> None: ...

    # Optional: ``checkpoint_config() -> dict`` makes each checkpoint a loadable artifact (its
    # ``config.json``), as the generator recipes do.


class GeneratorJob:
    """The state methods of a :class:`Job` whose trainable module is a generator's hypernetwork
    (``self.gen``, ``self.module = self.gen.hypernet``): checkpoints are loadable generators."""

    gen: Any
    module: nn.Module
    device: torch.device
    embed_cache_limit = 200_000
    """Most texts whose embeddings :meth:`embed` keeps (then it starts over)."""

    def embed(self, texts: Sequence[str]) -> Tensor:
        """Embeddings ``[len(texts), dim]`` of ``texts`` by the generator's encoder, on ``self.device``.
        Each text is encoded once (the encoder is frozen) and on its own: an encoder's output for a text
        moves by ~1e-6 with the other rows of its batch (padding, kernels chosen by batch size), so a
        batch made of whatever the cache missed would give a resumed run, whose cache starts empty,
        other embeddings than the uninterrupted run had."""
        cache: dict[str, Tensor] | None = getattr(self, "_embeddings", None)
        if cache is None:
            cache = self._embeddings = {}
        missing = list(dict.fromkeys(t for t in texts if t not in cache))
        if missing:
            if len(cache) + len(missing) > self.embed_cache_limit:
                cache.clear()
            for t in missing:
                cache[t] = self.gen.encoder.encode([t])[0].float().cpu()
        return torch.stack([cache[t] for t in texts]).to(self.device)

    provenance: dict[str, Any] | None = None
    """The ``training`` block of the checkpoints' config.json (:mod:`~text2lora.train.provenance`), or ``None``."""

    def save_artifact(self, path: Path, step: int | None = None) -> None:
        training = None
        if self.provenance is not None:
            training = checkpoint_record(self.provenance, step)
        self.gen.save_pretrained(path, force=True, training=training)

    def checkpoint_config(self) -> dict[str, Any]:
        return self.gen.config_dict()

    def trainable_state(self) -> dict[str, Tensor]:
        return {k: v.detach() for k, v in self.module.state_dict().items()}

    def load_trainable_state(self, state: dict[str, Tensor]) -> None:
        missing, unexpected = self.module.load_weights(state)
        if missing or unexpected:
            raise CheckpointError(f"checkpoint does not match this generator (missing {missing[:3]}, "
                                  f"unexpected {unexpected[:3]}); resume with the recipe that started the run")


@dataclass
class LoopResult:
    """What a finished loop reports."""

    step: int
    """Last completed optimiser step."""
    train_losses: list[float] = field(default_factory=list)
    """Loss of each step run in this call (after resume: only the steps run now)."""
    best_val: float | None = None
    best_step: int | None = None
    stopped_early: bool = False
    seconds: float = 0.0
    run_dir: Path | None = None
    """The run directory (set by the recipe functions)."""
    report: list[dict[str, Any]] | None = None
    """Per-task results of recipes that report them (reconstruction errors, trained adapters)."""
    summary: dict[str, Any] | None = None
    """Run-level results of recipes that report them (reconstruction: the compression ratio)."""


def make_accelerator(cfg: TrainConfig):
    """An :class:`accelerate.Accelerator` honouring ``cfg.device`` when not under a launcher. Refuses a
    bfloat16 base off CUDA before the run directory is written (CPUs run it many times slower)."""
    from accelerate import Accelerator

    cpu = cfg.device == "cpu" or (cfg.device is None and not torch.cuda.is_available())
    accelerator = Accelerator(cpu=cpu, mixed_precision="no")
    if getattr(cfg, "base_dtype", "auto") == "bfloat16" and accelerator.device.type != "cuda":
        raise ConfigError(f"base_dtype: bfloat16 is for CUDA; on {accelerator.device.type} it runs many times "
                          "slower than float32; use base_dtype auto or float32")
    return accelerator


def load_train_base(cfg: _TaskConfig, device: torch.device) -> BaseModel:
    """The frozen base model of a run, on ``device`` in ``cfg.base_dtype``."""
    dtype = None if cfg.base_dtype == "auto" else getattr(torch, cfg.base_dtype)
    if dtype is torch.float32 and torch.device(device).type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
    return load_base(cfg.base, cfg.target_modules, device=device, dtype=dtype)


def make_optimizer(params, cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW over ``params`` with the config's lr and weight decay."""
    params = [p for p in params if p.requires_grad]
    if not params:
        raise T2LError("nothing to train: the job has no parameters that require gradients")
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def lr_factor(step: int, total: int, warmup: int) -> float:
    """Linear warm-up over ``warmup`` steps to 1, then linear decay to 0 at ``total``."""
    if step < warmup:
        return (step + 1) / warmup
    return max(0.0, (total - step) / max(1, total - warmup))


def make_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig) -> torch.optim.lr_scheduler.LambdaLR:
    """Warm-up for ``warmup_frac * steps`` steps then linear decay."""
    warmup = int(cfg.warmup_frac * cfg.steps)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, cfg.steps, warmup))


def _progress(total: int, initial: int, desc: str, disable: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc=desc, disable=disable, dynamic_ncols=True, unit="step")


class Trainer:
    """One run of the shared loop over a :class:`Job`: set up (and resume), then one optimiser step at a
    time, each followed by its logging, validation and checkpoint; :meth:`fit` strings them together."""

    def __init__(self, job: Job, cfg: TrainConfig, run: RunDir, accelerator=None, *, quiet: bool = False,
                 patience: int = 0, on_step: Callable[[int, dict[str, float]], None] | None = None):
        self.accelerator = accelerator or make_accelerator(cfg)
        self.t0 = time.perf_counter()
        self.job, self.cfg, self.run = job, cfg, run
        self.quiet, self.patience, self.on_step = quiet, patience, on_step
        self.optimizer = make_optimizer(job.module.parameters(), cfg)
        self.scheduler = make_scheduler(self.optimizer, cfg)
        job.model = self.accelerator.prepare(job.module)
        if self.accelerator.num_processes > 1:
            self.optimizer = self.accelerator.prepare_optimizer(self.optimizer)
        self.main = self.accelerator.is_main_process
        self.result = LoopResult(step=0)
        self.since_best = 0  # validations since the best one (early stopping counts them)
        self.params: list[nn.Parameter] = []  # the trainable ones, set by fit (after resume)
        self.bar: Any = None  # the progress bar while fit runs

    def fit(self, resume: bool = False) -> LoopResult:
        """Train up to ``cfg.steps`` (after restoring the latest checkpoint with ``resume``)."""
        self.accelerator.wait_for_everyone()  # the main process has set up the run directory
        if resume:
            self.resume()
        self.params = [p for p in self.job.module.parameters() if p.requires_grad]
        self.bar = _progress(self.cfg.steps, self.result.step, self.run.path.name, self.quiet or not self.main)
        self.job.module.train()
        try:
            while self.result.step < self.cfg.steps:
                logs = self.train_step()
                step = self.result.step
                self.log(step, logs)
                stop = self.validate(step) if self._due(self.cfg.eval_every, step) else False
                if _stop_requested(self.run, self.accelerator):
                    stop = True
                    self.bar.write(f"{self.run.path / STOP_FILE} exists: stopping after step {step}")
                if self._due(self.cfg.save_every, step) or stop:
                    self.checkpoint(step)
                if self.on_step is not None:
                    self.on_step(step, logs)
                if stop:
                    self.result.stopped_early = True
                    break
        finally:
            self.bar.close()
        return self.finish()

    def resume(self) -> None:
        """Restore weights, optimizer, scheduler, data order, RNG states and best-so-far from the latest
        checkpoint (if any), and drop the metrics logged after it (they are replayed)."""
        ck = self.run.load_checkpoint()
        if ck is not None:
            st = ck["state"]
            self.job.load_trainable_state(ck["model"])
            self.optimizer.load_state_dict(ck["optimizer"])
            self.scheduler.load_state_dict(st["scheduler"])
            ranks = st.get("job_ranks") or [st["job"]]
            n = self.accelerator.num_processes
            if len(ranks) != n:
                raise CheckpointError(f"checkpoint {ck['path']} was written by {len(ranks)} process(es) but this run "
                                      f"has {n}; resume with the same number of processes")
            # each process draws its own dropout masks and noise, so it gets its own RNG states back (a
            # checkpoint written before they were kept per process has the main process's only)
            rngs = ck["rng"]
            set_rng_state(*rngs[self.accelerator.process_index if len(rngs) == n else 0])
            self.job.load_state_dict(ranks[self.accelerator.process_index])
            self.result.step, self.result.best_val, self.result.best_step = st["step"], st["best_val"], st["best_step"]
            self.since_best = st["since_best"]
        self.run.truncate_metrics(self.result.step)

    def train_step(self) -> dict[str, float]:
        """One optimiser step: ``grad_accum`` micro-batches, clipping, update; returns the step's logs.
        A NaN/inf loss or gradient norm raises :class:`NonFiniteLossError`."""
        cfg, acc, job, step = self.cfg, self.accelerator, self.job, self.result.step
        ts = time.perf_counter()
        extra_logs: dict[str, float] = {}
        total = 0.0
        for micro in range(cfg.grad_accum):
            sync = contextlib.nullcontext() if micro == cfg.grad_accum - 1 else acc.no_sync(job.model)
            with sync:
                loss, extra = job.loss(step)
                value = float(acc.reduce(loss.detach(), "mean"))
                if not math.isfinite(value):
                    _diverged("loss", value, step + 1, self.run)
                acc.backward(loss / cfg.grad_accum)
            total += value / cfg.grad_accum
            for k, v in extra.items():
                extra_logs[k] = extra_logs.get(k, 0.0) + v / cfg.grad_accum
        clip = cfg.grad_clip if cfg.grad_clip > 0 else float("inf")
        grad_norm = float(acc.clip_grad_norm_(self.params, clip))
        if not math.isfinite(grad_norm):
            _diverged("gradient norm", grad_norm, step + 1, self.run)
        lr = self.scheduler.get_last_lr()[0]
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.result.step = step + 1
        self.result.train_losses.append(total)
        return {"loss": total, **extra_logs, "lr": lr, "grad_norm": grad_norm,
                "step_seconds": time.perf_counter() - ts}

    def log(self, step: int, logs: dict[str, float]) -> None:
        """Write the step's metrics (every ``log_every`` steps and the last) and move the progress bar."""
        if self._due(self.cfg.log_every, step):
            self.run.log(step, "train", logs)
        self.bar.update(1)
        self.bar.set_postfix_str(f"loss {logs['loss']:.4f}", refresh=False)

    def validate(self, step: int) -> bool:
        """Validate; keep the artifact when the loss is the best so far. True when early stopping triggers."""
        result = self.result
        self.job.module.eval()
        with torch.no_grad():
            val = self.job.validate()
        self.job.module.train()
        if val is None:
            return False
        self.run.log(step, "val", {"loss": val})
        if result.best_val is None or val < result.best_val:
            result.best_val, result.best_step, self.since_best = val, step, 0
            if self.main:
                self.job.save_artifact(self.run.best_path, step)
        else:
            self.since_best += 1
        self.bar.set_postfix_str(f"val {val:.4f} (best {result.best_val:.4f} @ {result.best_step})", refresh=False)
        return self.patience > 0 and self.since_best >= self.patience

    def checkpoint(self, step: int) -> None:
        """Write a resumable checkpoint: weights, optimizer, scheduler, every process's data order and RNG states."""
        # every process draws its own data and its own random numbers: keep each one's sampler and RNG states
        ranks, rngs = [self.job.state_dict()], [rng_state()]
        if self.accelerator.num_processes > 1:
            from accelerate.utils import gather_object

            ranks, rngs = gather_object(ranks), gather_object(rngs)
        state = {"scheduler": self.scheduler.state_dict(), "job": ranks[0], "job_ranks": ranks,
                 "best_val": self.result.best_val, "best_step": self.result.best_step, "since_best": self.since_best}
        config = self.job.checkpoint_config() if hasattr(self.job, "checkpoint_config") else None
        self.run.save_checkpoint(step, self.job.trainable_state(), self.optimizer.state_dict(), state, config=config,
                                 rng=rngs)

    def finish(self) -> LoopResult:
        """Keep the last weights as the artifact when nothing was validated; plot; close the run."""
        result = self.result
        if self.main:
            if not self.cfg.eval_every or result.best_step is None:
                self.job.save_artifact(self.run.best_path, result.step)
                result.best_step = result.step
            self.run.plot()
        self.run.close()
        result.seconds = time.perf_counter() - self.t0
        self.accelerator.wait_for_everyone()
        return result

    def _due(self, every: int, step: int) -> bool:
        """Whether a periodic action (every ``every`` steps, 0 = never) falls on ``step``; the last step
        always counts."""
        return bool(every) and (step % every == 0 or step == self.cfg.steps)


def train_loop(job: Job, cfg: TrainConfig, run: RunDir, accelerator=None, *, resume: bool = False,
               quiet: bool = False, patience: int = 0,
               on_step: Callable[[int, dict[str, float]], None] | None = None) -> LoopResult:
    """Train ``job`` for ``cfg.steps`` optimiser steps, writing metrics and checkpoints to ``run``.

    With ``resume`` the latest checkpoint in ``run`` (if any) restores weights, optimizer, scheduler,
    data order and RNG states, so the run ends exactly where an uninterrupted one would.
    ``patience`` > 0 stops after that many validations without improvement. ``on_step(step, logs)``
    is called after every step (hooks for tests and notebooks).
    """
    return Trainer(job, cfg, run, accelerator, quiet=quiet, patience=patience, on_step=on_step).fit(resume=resume)


def _stop_requested(run: RunDir, accelerator) -> bool:
    """True when the run's STOP file exists (agreed across processes, so none waits on the others)."""
    flag = torch.tensor([float((run.path / STOP_FILE).exists())], device=accelerator.device)
    return float(accelerator.reduce(flag, "sum")) > 0


def _diverged(what: str, value: float, step: int, run: RunDir) -> None:
    ck = run.latest_checkpoint()
    where = (f"the last good checkpoint {ck} is kept (resume from it with --resume, e.g. with a lower lr)"
             if ck is not None else "no checkpoint had been written yet")
    raise NonFiniteLossError(f"{what} became {value} at step {step}; training stopped and {where}", step, ck)
