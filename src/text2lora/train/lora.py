"""Oracle LoRAs (one PEFT LoRA per task) and the multi-task LoRA baseline.

``t2l train lora`` trains a list of tasks in one command. Each task gets its own sub-run under
``RUN_DIR/tasks/<task>/`` (metrics, checkpoints) and, when finished, its adapter under
``RUN_DIR/library/<task>/`` (a PEFT directory with ``text2lora.json`` naming the task and its
training descriptions, ready for ``t2l train recon``). Finished tasks are skipped when the command is
run again with ``--resume``; an interrupted task continues from its checkpoint. Each task stops
early when its validation loss has not improved for ``patience`` validations, and the adapter saved
is the best one by validation loss.

``t2l train mt-lora`` trains one LoRA on all training tasks with task-balanced batches; the result
is ``RUN_DIR/best/`` (validated on held-out tasks, or on the training tasks' validation examples).
"""

from __future__ import annotations

import random
import warnings
from pathlib import Path
from typing import Any, Callable

import torch
from torch import Tensor, nn

from ..adapter import LoRAAdapter
from ..base import BaseModel
from ..data import Example, TaskRecord, TaskSampler, resolve_tasks, task_slug
from ..errors import AdapterError, ConfigError
from .batches import ExampleSampler, encode_examples, grouped_response_loss, validation_examples
from .config import LoRAConfig, MTLoRAConfig
from .loop import LoopResult, load_train_base, make_accelerator, train_loop
from .provenance import checkpoint_record, run_record
from .run import RunDir
from .tasks import recipe_tasks, split_tasks

__all__ = ["LoRAJob", "train_lora", "train_mt_lora", "task_slug"]


def _peft(base: BaseModel, cfg: LoRAConfig, init: LoRAAdapter | None) -> nn.Module:
    """Wrap ``base.model`` in a fresh PEFT LoRA (seeded), optionally initialised from ``init``."""
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(cfg.seed)
    lcfg = LoraConfig(r=cfg.rank, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout, target_modules=list(cfg.target_modules),
                      bias="none", task_type="CAUSAL_LM")
    with warnings.catch_warnings():  # PEFT asks transformers a question transformers has renamed; nothing to act on
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        model = get_peft_model(base.model, lcfg)
    if init is not None:
        if init.r != cfg.rank or set(init.A) != set(cfg.target_modules):
            raise AdapterError(f"--init-from adapter has rank {init.r} and modules {sorted(init.A)}, but the recipe "
                               f"trains rank {cfg.rank} on {sorted(cfg.target_modules)}; make them match")
        fold = init.scaling / (cfg.alpha / cfg.rank)
        with torch.no_grad():
            for name in init.A:
                path = base.spec.module(name).path
                for i in range(base.spec.num_layers):
                    mod = model.base_model.model.get_submodule(path.format(layer=i))
                    mod.lora_A["default"].weight.copy_(init.A[name][i])
                    mod.lora_B["default"].weight.copy_(init.B[name][i] * fold)
    return model


def _adapter_of(peft_model: nn.Module, base: BaseModel, cfg: LoRAConfig, meta: dict[str, Any]) -> LoRAAdapter:
    A, B = {}, {}
    for name in cfg.target_modules:
        path = base.spec.module(name).path
        mods = [peft_model.base_model.model.get_submodule(path.format(layer=i)) for i in range(base.spec.num_layers)]
        A[name] = torch.stack([m.lora_A["default"].weight.detach().float().cpu() for m in mods])
        B[name] = torch.stack([m.lora_B["default"].weight.detach().float().cpu() for m in mods])
    return LoRAAdapter(base.spec, A, B, alpha=cfg.alpha, meta=meta)


class LoRAJob:
    """Training one PEFT LoRA on examples drawn per batch (a :class:`~text2lora.train.loop.Job`).

    Single-task: shuffled epochs over ``train`` examples. Multi-task (``tasks``): task-balanced
    batches from :class:`TaskSampler`.
    """

    def __init__(self, cfg: LoRAConfig, base: BaseModel, peft_model: nn.Module, device: torch.device, *,
                 train: list[Example] | None = None, tasks: list[TaskRecord] | None = None,
                 val: list[Example], meta: dict[str, Any], process_index: int = 0):
        self.cfg, self.base, self.device, self.meta = cfg, base, device, meta
        self.module = peft_model
        self.model = peft_model
        self.train_examples = train
        self.val = val
        if tasks is not None:
            k = min(getattr(cfg, "tasks_per_batch", cfg.batch_size), len(tasks))
            self.sampler: Any = TaskSampler(tasks, k, seed=cfg.seed + process_index, **cfg.sampler_options())
        else:
            assert train is not None
            self.sampler = ExampleSampler(len(train), cfg.batch_size, seed=cfg.seed + process_index)

    def _batch(self) -> list[Example]:
        if isinstance(self.sampler, TaskSampler):
            return [ex for _, ex, _ in self.sampler.next_batch()]
        return [self.train_examples[i] for i in self.sampler.next_batch()]  # type: ignore[index]

    def _ce(self, examples: list[Example], smoothing: float, average: str = "sample") -> Tensor:
        tb = encode_examples(self.base.tokenizer, examples, self.cfg.max_prompt_tokens,
                             self.cfg.max_response_tokens, eos=self.cfg.eos_loss).to(self.device)
        return grouped_response_loss(self.model, tb, smoothing, average, self.cfg.length_groups)

    def loss(self, step: int) -> tuple[Tensor, dict[str, float]]:
        return self._ce(self._batch(), self.cfg.label_smoothing, self.cfg.loss_average), {}

    def validate(self) -> float | None:
        if not self.val:
            return None
        total, k = 0.0, self.cfg.batch_size
        for i in range(0, len(self.val), k):
            chunk = self.val[i:i + k]
            total += float(self._ce(chunk, 0.0)) * len(chunk)
        return total / len(self.val)

    provenance: dict[str, Any] | None = None
    """The ``training`` block of the adapter's text2lora.json (:mod:`~text2lora.train.provenance`), or ``None``."""

    def save_artifact(self, path: Path, step: int | None = None) -> None:
        meta = self.meta if self.provenance is None else {**self.meta,
                                                          "training": checkpoint_record(self.provenance, step)}
        _adapter_of(self.module, self.base, self.cfg, meta).save(path, force=True, vllm=False)

    def trainable_state(self) -> dict[str, Tensor]:
        return {n: p.detach() for n, p in self.module.named_parameters() if p.requires_grad}

    def load_trainable_state(self, state: dict[str, Tensor]) -> None:
        params = dict(self.module.named_parameters())
        with torch.no_grad():
            for n, t in state.items():
                params[n].copy_(t)

    def state_dict(self) -> dict[str, Any]:
        return {"sampler": self.sampler.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.sampler.load_state_dict(state["sampler"])


def _task_split(task: TaskRecord, cfg: LoRAConfig) -> tuple[list[Example], list[Example]]:
    """(train, validation) examples: the task's splits, or a seeded share of train held out."""
    train = list(task.splits.get("train") or [])
    if not train:
        raise ConfigError(f"task {task.name} has no train split; an oracle LoRA needs training examples")
    val = list(task.splits.get("validation") or []) if "validation" in task.splits else []
    if not val and len(train) >= 2:
        order = list(range(len(train)))
        random.Random(f"lora-val:{cfg.seed}:{task.name}").shuffle(order)
        n_val = max(1, int(round(cfg.val_fraction * len(train))))
        val = [train[i] for i in sorted(order[:n_val])]
        train = [train[i] for i in sorted(order[n_val:])]
    return train, val[: cfg.val_examples]


def _load(cfg: LoRAConfig, base: BaseModel | None, accelerator) -> BaseModel:
    if base is None:
        base = load_train_base(cfg, accelerator.device)
    return base


def train_lora(cfg: LoRAConfig, out: str | Path, *, resume: bool = False, quiet: bool = False,
               base: BaseModel | None = None, tasks: list[TaskRecord] | None = None,
               on_step: Callable[[int, dict[str, float]], None] | None = None) -> LoopResult:
    """Train one oracle LoRA per task into ``out/library/<task>``; finished tasks are skipped.

    Returns the result of the last task trained, with ``report`` listing every task's outcome.
    """
    if cfg.mc_unlisted:
        raise ConfigError("mc_unlisted mixes prompt formats in the multi-task recipes (mt-lora, sft); an oracle "
                          "LoRA trains on its task's examples as stored: remove mc_unlisted from this recipe")
    if cfg.long_answer_weight != 1.0:
        raise ConfigError("long_answer_weight sets how often each task is drawn in the multi-task recipes (mt-lora, "
                          "sft); an oracle LoRA trains on one task: remove long_answer_weight from this recipe")
    if cfg.cot_prefill or cfg.format_contrast:
        raise ConfigError("cot_prefill and format_contrast change how the multi-task recipes (mt-lora, sft) draw "
                          "examples; an oracle LoRA trains on its task's examples as stored: remove cot_prefill and "
                          "format_contrast from this recipe")
    accelerator = make_accelerator(cfg)
    run = RunDir.open(out, cfg, resume=resume, main=accelerator.is_main_process)
    if tasks is None:
        if not cfg.tasks:
            raise ConfigError("no tasks: set `tasks` in the recipe or pass --tasks NAME[,NAME...]")
        tasks = resolve_tasks(cfg.tasks, cfg.exclude_tasks)
        tasks, _ = split_tasks(tasks, [], 0, cfg.max_tasks, cfg.seed)
    base = _load(cfg, base, accelerator)
    init = LoRAAdapter.load(cfg.init_from, base=base.spec) if cfg.init_from else None
    report, last = [], LoopResult(step=0)
    for n, task in enumerate(tasks):
        dest = run.path / "library" / task_slug(task.name)
        if (dest / "adapter_config.json").is_file():
            report.append({"task": task.name, "status": "skipped (finished)", "adapter": str(dest)})
            continue
        train, val = _task_split(task, cfg)
        sub = RunDir(run.path / "tasks" / task_slug(task.name), cfg, run.main)
        if run.main:
            sub.path.mkdir(parents=True, exist_ok=True)
        meta = {"task": task.name, "descriptions": list(task.train_descriptions), "trained_by": "t2l train lora",
                "source": task.source}
        model = _peft(base, cfg, init)
        try:
            job = LoRAJob(cfg, base, model, accelerator.device, train=train, val=val, meta=meta,
                          process_index=accelerator.process_index)
            if not quiet and run.main:
                print(f"[{n + 1}/{len(tasks)}] {task.name}: {len(train)} train / {len(val)} val examples")
            last = train_loop(job, cfg, sub, accelerator, resume=resume, quiet=quiet, patience=cfg.patience,
                              on_step=on_step)
        finally:
            base.model = model.unload().eval()  # remove the LoRA layers: the base is left as it was
        if run.main:
            import shutil

            dest.parent.mkdir(parents=True, exist_ok=True)
            tmp = dest.parent / f".{dest.name}.copy"
            shutil.rmtree(tmp, ignore_errors=True)
            shutil.copytree(sub.best_path, tmp)
            tmp.replace(dest)
        report.append({"task": task.name, "status": "trained", "adapter": str(dest), "steps": last.step,
                       "best_val": last.best_val, "best_step": last.best_step, "stopped_early": last.stopped_early})
    last.run_dir, last.report = run.path, report
    return last


def train_mt_lora(cfg: MTLoRAConfig, out: str | Path, *, resume: bool = False, quiet: bool = False,
                  base: BaseModel | None = None, tasks: list[TaskRecord] | None = None,
                  val_tasks: list[TaskRecord] | None = None,
                  on_step: Callable[[int, dict[str, float]], None] | None = None,
                  recipe: dict[str, Any] | None = None) -> LoopResult:
    """Train one LoRA on all training tasks (task-balanced batches) into ``out/best``; with ``recipe``
    (:func:`~text2lora.train.provenance.recipe_record`) its text2lora.json records the recipe, the data, the
    commit and the chosen step, as a generator's config.json does."""
    accelerator = make_accelerator(cfg)
    run = RunDir.open(out, cfg, resume=resume, main=accelerator.is_main_process)
    tasks, val_tasks = recipe_tasks(cfg, tasks, val_tasks)
    val_from = val_tasks or tasks
    val = [ex for t in val_from for ex in validation_examples(t, cfg.val_examples, cfg.seed, cfg.mc_unlisted > 0)]
    base = _load(cfg, base, accelerator)
    init = LoRAAdapter.load(cfg.init_from, base=base.spec) if cfg.init_from else None
    model = _peft(base, cfg, init)
    meta = {"task": "multi-task", "tasks": [t.name for t in tasks], "trained_by": "t2l train mt-lora"}
    try:
        job = LoRAJob(cfg, base, model, accelerator.device, tasks=tasks, val=val, meta=meta,
                      process_index=accelerator.process_index)
        if recipe is not None:
            job.provenance = run_record(recipe, [*tasks, *val_tasks], cfg.steps)
        result = train_loop(job, cfg, run, accelerator, resume=resume, quiet=quiet, patience=cfg.patience,
                            on_step=on_step)
    finally:
        base.model = model.unload().eval()
    result.run_dir = run.path
    return result
