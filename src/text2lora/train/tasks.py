"""A recipe's training and validation tasks: its ``tasks`` / ``val_tasks`` entries resolved by
:func:`text2lora.data.resolve_tasks`, validation tasks held out, the training set subsampled."""

from __future__ import annotations

import random

from ..data import BENCHMARKS, TaskRecord, resolve_tasks
from ..data.reserved import check_not_reserved
from ..errors import ConfigError
from .config import MTLoRAConfig, SFTConfig

__all__ = ["split_tasks", "recipe_tasks"]


def split_tasks(train: list[TaskRecord], val: list[TaskRecord], num_val: int, max_tasks: int | None,
                seed: int) -> tuple[list[TaskRecord], list[TaskRecord]]:
    """Remove validation tasks from ``train``; when ``val`` is empty hold out ``num_val`` training tasks
    (seeded); keep at most ``max_tasks`` training tasks (seeded subset, order kept)."""
    val_names = {r.name for r in val}
    train = [r for r in train if r.name not in val_names]
    rng = random.Random(f"tasks:{seed}")
    if not val and num_val > 0:
        if num_val >= len(train):
            raise ConfigError(f"num_val_tasks={num_val} leaves no training task (there are {len(train)})")
        picked = set(rng.sample(range(len(train)), num_val))
        val = [r for i, r in enumerate(train) if i in picked]
        train = [r for i, r in enumerate(train) if i not in picked]
    if max_tasks is not None and len(train) > max_tasks:
        keep = set(rng.sample(range(len(train)), max_tasks))
        train = [r for i, r in enumerate(train) if i in keep]
    return train, val


def recipe_tasks(cfg, tasks: list[TaskRecord] | None, val_tasks: list[TaskRecord] | None
                 ) -> tuple[list[TaskRecord], list[TaskRecord]]:
    """(training, validation) tasks of a recipe with ``tasks`` / ``val_tasks`` / ``num_val_tasks``;
    records passed in (tests, notebooks) replace what the recipe names."""
    entries = [e for e in [*(cfg.tasks or []), *(cfg.val_tasks or [])] if e not in BENCHMARKS and e != "all"]
    check_not_reserved(entries, "the recipe")
    if tasks is None:
        if not cfg.tasks:
            raise ConfigError("no training tasks: set `tasks` (e.g. [bigbench]) in the recipe or pass --tasks")
        tasks = resolve_tasks(cfg.tasks, cfg.exclude_tasks)
        val_tasks = resolve_tasks(cfg.val_tasks, known=tasks) if val_tasks is None and cfg.val_tasks else val_tasks
    if isinstance(cfg, (SFTConfig, MTLoRAConfig)):
        leaked = [t.name for t in tasks if t.name in BENCHMARKS]
        if leaked:
            raise ConfigError(f"training task(s) {', '.join(leaked)} are evaluation benchmarks; a generator or "
                              "multi-task LoRA never trains on them (remove them from `tasks`)")
    check_not_reserved([t.name for t in [*tasks, *(val_tasks or [])] if t.name not in BENCHMARKS], "the recipe")
    train, val = split_tasks(tasks, list(val_tasks or []), cfg.num_val_tasks, cfg.max_tasks, cfg.seed)
    if not train:
        raise ConfigError("no training tasks left after removing validation/excluded tasks")
    return train, val
