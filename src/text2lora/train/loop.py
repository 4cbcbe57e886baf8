"""The training loop shared by every recipe.

A recipe provides a :class:`Job` (what one micro-batch's loss is, how to validate, what to save);
:func:`train_loop` does the rest: AdamW, linear warm-up then linear decay, gradient accumulation and
clipping, NaN/inf detection (stop, keep the last good checkpoint, name the step), a tqdm progress
bar with ETA, periodic validation with best-checkpoint tracking and early stopping, periodic
resumable checkpoints, and resume. Device placement and DDP go through :mod:`accelerate`, so the same
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
from ..errors import CheckpointError, T2LError
from .config import TrainConfig
from .run import RunDir

__all__ = ["Job", "LoopResult", "NonFiniteLossError", "make_accelerator", "make_optimizer", "make_scheduler",
           "train_loop"]


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

    def save_artifact(self, path: Path) -> None:
        """Write the usable result (generator checkpoint, PEFT adapter) to ``path`` atomically."""

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
        """Embeddings ``[len(texts), dim]`` of ``texts`` by the generator's encoder, on ``self.device``;
        each text is encoded once (the encoder is frozen), in one batch with the others missing."""
        cache: dict[str, Tensor] | None = getattr(self, "_embeddings", None)
        if cache is None:
            cache = self._embeddings = {}
        missing = list(dict.fromkeys(t for t in texts if t not in cache))
        if missing:
            if len(cache) + len(missing) > self.embed_cache_limit:
                cache.clear()
            for t, e in zip(missing, self.gen.encoder.encode(missing)):
                cache[t] = e.float().cpu()
        return torch.stack([cache[t] for t in texts]).to(self.device)

    def save_artifact(self, path: Path) -> None:
        self.gen.save_pretrained(path, force=True)

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
    """An :class:`accelerate.Accelerator` honouring ``cfg.device`` when not under a launcher."""
    from accelerate import Accelerator

    cpu = cfg.device == "cpu" or (cfg.device is None and not torch.cuda.is_available())
    return Accelerator(cpu=cpu, mixed_precision="no")


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


def train_loop(job: Job, cfg: TrainConfig, run: RunDir, accelerator=None, *, resume: bool = False,
               quiet: bool = False, patience: int = 0,
               on_step: Callable[[int, dict[str, float]], None] | None = None) -> LoopResult:
    """Train ``job`` for ``cfg.steps`` optimiser steps, writing metrics and checkpoints to ``run``.

    With ``resume`` the latest checkpoint in ``run`` (if any) restores weights, optimizer, scheduler,
    data order and RNG states, so the run ends exactly where an uninterrupted one would.
    ``patience`` > 0 stops after that many validations without improvement. ``on_step(step, logs)``
    is called after every step (hooks for tests and notebooks).
    """
    accelerator = accelerator or make_accelerator(cfg)
    t0 = time.perf_counter()
    optimizer = make_optimizer(job.module.parameters(), cfg)
    scheduler = make_scheduler(optimizer, cfg)
    job.model = accelerator.prepare(job.module)
    optimizer = accelerator.prepare_optimizer(optimizer) if accelerator.num_processes > 1 else optimizer
    start, best_val, best_step, since_best = 0, None, None, 0
    accelerator.wait_for_everyone()  # the main process has set up the run directory
    if resume:
        ck = run.load_checkpoint()
        if ck is not None:
            st = ck["state"]
            job.load_trainable_state(ck["model"])
            optimizer.load_state_dict(ck["optimizer"])
            scheduler.load_state_dict(st["scheduler"])
            ranks = st.get("job_ranks") or [st["job"]]
            if len(ranks) != accelerator.num_processes:
                raise CheckpointError(f"checkpoint {ck['path']} was written by {len(ranks)} process(es) but this run "
                                      f"has {accelerator.num_processes}; resume with the same number of processes")
            job.load_state_dict(ranks[accelerator.process_index])
            start, best_val, best_step, since_best = st["step"], st["best_val"], st["best_step"], st["since_best"]
        run.truncate_metrics(start)  # rows logged after the checkpoint are replayed
    result = LoopResult(step=start, best_val=best_val, best_step=best_step)
    params = [p for p in job.module.parameters() if p.requires_grad]
    main = accelerator.is_main_process
    bar = _progress(cfg.steps, start, run.path.name, quiet or not main)

    def checkpoint(step: int) -> None:
        # every process draws its own data: keep each one's sampler state
        ranks = [job.state_dict()]
        if accelerator.num_processes > 1:
            from accelerate.utils import gather_object

            ranks = gather_object(ranks)
        state = {"scheduler": scheduler.state_dict(), "job": ranks[0], "job_ranks": ranks,
                 "best_val": result.best_val, "best_step": result.best_step, "since_best": since_best}
        config = job.checkpoint_config() if hasattr(job, "checkpoint_config") else None
        run.save_checkpoint(step, job.trainable_state(), optimizer.state_dict(), state, config=config)

    def validate(step: int) -> bool:
        """Validate; return True when early stopping triggers."""
        nonlocal since_best
        job.module.eval()
        with torch.no_grad():
            val = job.validate()
        job.module.train()
        if val is None:
            return False
        run.log(step, "val", {"loss": val})
        if result.best_val is None or val < result.best_val:
            result.best_val, result.best_step, since_best = val, step, 0
            if main:
                job.save_artifact(run.best_path)
        else:
            since_best += 1
        bar.set_postfix_str(f"val {val:.4f} (best {result.best_val:.4f} @ {result.best_step})", refresh=False)
        return patience > 0 and since_best >= patience

    job.module.train()
    try:
        step = start
        while step < cfg.steps:
            ts = time.perf_counter()
            logs: dict[str, float] = {}
            total = 0.0
            for micro in range(cfg.grad_accum):
                sync = contextlib.nullcontext() if micro == cfg.grad_accum - 1 else accelerator.no_sync(job.model)
                with sync:
                    loss, extra = job.loss(step)
                    value = float(accelerator.reduce(loss.detach(), "mean"))
                    if not math.isfinite(value):
                        _diverged("loss", value, step + 1, run)
                    accelerator.backward(loss / cfg.grad_accum)
                total += value / cfg.grad_accum
                for k, v in extra.items():
                    logs[k] = logs.get(k, 0.0) + v / cfg.grad_accum
            clip = cfg.grad_clip if cfg.grad_clip > 0 else float("inf")
            grad_norm = float(accelerator.clip_grad_norm_(params, clip))
            if not math.isfinite(grad_norm):
                _diverged("gradient norm", grad_norm, step + 1, run)
            lr = scheduler.get_last_lr()[0]
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            result.step = step
            result.train_losses.append(total)
            logs = {"loss": total, **logs, "lr": lr, "grad_norm": grad_norm, "step_seconds": time.perf_counter() - ts}
            if step % cfg.log_every == 0 or step == cfg.steps:
                run.log(step, "train", logs)
            bar.update(1)
            bar.set_postfix_str(f"loss {total:.4f}", refresh=False)
            stop = False
            if cfg.eval_every and (step % cfg.eval_every == 0 or step == cfg.steps):
                stop = validate(step)
            if _stop_requested(run, accelerator):
                stop = True
                bar.write(f"{run.path / STOP_FILE} exists: stopping after step {step}")
            if step % cfg.save_every == 0 or step == cfg.steps or stop:
                checkpoint(step)
            if on_step is not None:
                on_step(step, logs)
            if stop:
                result.stopped_early = True
                break
    finally:
        bar.close()
    if main:
        if not cfg.eval_every or result.best_step is None:
            job.save_artifact(run.best_path)
            result.best_step = result.step
        run.plot()
    run.close()
    result.seconds = time.perf_counter() - t0
    accelerator.wait_for_everyone()
    return result


def _stop_requested(run: RunDir, accelerator) -> bool:
    """True when the run's STOP file exists (agreed across processes, so none waits on the others)."""
    flag = torch.tensor([float((run.path / STOP_FILE).exists())], device=accelerator.device)
    return float(accelerator.reduce(flag, "sum")) > 0


def _diverged(what: str, value: float, step: int, run: RunDir) -> None:
    ck = run.latest_checkpoint()
    where = (f"the last good checkpoint {ck} is kept (resume from it with --resume, e.g. with a lower lr)"
             if ck is not None else "no checkpoint had been written yet")
    raise NonFiniteLossError(f"{what} became {value} at step {step}; training stopped and {where}", step, ck)
