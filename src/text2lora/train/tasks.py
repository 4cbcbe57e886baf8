"""Resolve the ``tasks`` / ``val_tasks`` entries of a recipe into task records."""

from __future__ import annotations

import fnmatch
import random
from typing import Sequence

from ..data import BENCHMARKS, COLLECTIONS, TaskRecord, get_task, load_collection
from ..errors import ConfigError
from .config import MTLoRAConfig, SFTConfig

__all__ = ["resolve_tasks", "split_tasks", "recipe_tasks"]


def _expand(entry: str) -> list[TaskRecord]:
    if entry in COLLECTIONS:
        return list(load_collection(entry))
    if entry.endswith((".jsonl", ".json", ".yaml", ".yml")):
        return list(load_collection(entry))
    if any(c in entry for c in "*?["):
        coll = entry.split("/", 1)[0]
        if coll not in COLLECTIONS:
            from ..data import BENCHMARKS

            names = list(BENCHMARKS)
            return [get_task(n) for n in names if fnmatch.fnmatchcase(n, entry)]
        found = [r for r in load_collection(coll) if fnmatch.fnmatchcase(r.name, entry)]
        if not found:
            raise ConfigError(f"task pattern {entry!r} matches no task of the {coll} collection")
        return found
    return [get_task(entry)]


def resolve_tasks(entries: Sequence[str], exclude: Sequence[str] = (),
                  known: Sequence[TaskRecord] = ()) -> list[TaskRecord]:
    """Task records for ``entries`` (names, collections, glob patterns, user files), de-duplicated in
    order, minus the names/patterns in ``exclude``. Names and patterns are first matched against
    ``known`` records (e.g. the training tasks read from a user file)."""
    out: dict[str, TaskRecord] = {}
    for entry in entries:
        local = [r for r in known if fnmatch.fnmatchcase(r.name, entry)]
        for rec in local or _expand(entry):
            out.setdefault(rec.name, rec)
    return [r for r in out.values() if not any(fnmatch.fnmatchcase(r.name, p) for p in exclude)]


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
    train, val = split_tasks(tasks, list(val_tasks or []), cfg.num_val_tasks, cfg.max_tasks, cfg.seed)
    if not train:
        raise ConfigError("no training tasks left after removing validation/excluded tasks")
    return train, val
