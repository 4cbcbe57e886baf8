"""BIG-bench JSON tasks, read from the ``bigbench==1.0.0`` source distribution (never installed) or a
checkout of the BIG-bench repository, which holds the same ``bigbench/benchmark_tasks`` folder.

Every ``benchmark_tasks/**/task.json`` with examples is a candidate task; a task with subtasks
contributes each subtask (the parent file holds no examples). Task names are
``bigbench/<path under benchmark_tasks>``, e.g. ``bigbench/arithmetic/1_digit_addition``.

The JSON task format is honoured: ``task_prefix`` starts each prompt, then
``example_input_prefix`` (default ``"\\nQ: "``) + input, for multiple-choice tasks the choices
joined with ``choice_prefix`` (default ``"\\n  choice: "``) unless ``append_choices_to_input`` is
false, then ``example_output_prefix`` (default ``"\\nA: "``). A list-valued ``target`` keeps every
accepted answer in ``meta["targets"]``; ``target_scores`` gives the choices and the gold one
(highest score). A multiple-choice prompt that lists its choices also keeps the same prompt without
them in ``meta["prompt_unlisted"]``: the format of the benchmarks' multiple-choice items, where the
model is scored on continuing the prompt with each choice (training can mix the two, see
:class:`~text2lora.data.TaskSampler`).

Each kept task keeps at most ``max_examples`` examples (a seeded random subset, original order
kept) and splits them deterministically into train (90%) and validation (10%, at least 10, at most
100).
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any, Iterator

from ...errors import DataError
from ..records import Example, TaskRecord
from .archive import iter_tar_json

__all__ = ["MIN_EXAMPLES", "MAX_EXAMPLES", "iter_bigbench_tasks", "convert_task", "build_bigbench"]

MIN_EXAMPLES = 100
MAX_EXAMPLES = 500
_MARK = "benchmark_tasks/"
_LICENSE = "Apache-2.0"
_CITATION = "Srivastava et al. 2022, Beyond the Imitation Game (BIG-bench), bigbench==1.0.0"


def iter_bigbench_tasks(path: str | Path) -> Iterator[tuple[str, dict]]:
    """(relative task path, parsed task.json) for every JSON task of an sdist ``.tar.gz`` or a folder.

    A folder may be the unpacked sdist, its ``bigbench/benchmark_tasks`` folder, or anything in between.
    """
    path = Path(path)
    if path.is_dir():
        files = sorted(path.rglob("task.json"))
        items: Iterator[tuple[str, bytes]] = ((str(f.as_posix()), f.read_bytes()) for f in files)
    elif path.is_file():
        items = iter_tar_json(path)
    else:
        raise DataError(f"BIG-bench source {path} does not exist; pass the bigbench-1.0.0 sdist or a BIG-bench "
                        "checkout, or run `t2l data fetch bigbench` to download the pinned package")
    for member, raw in items:
        parent = member[: -len("/task.json")]
        if _MARK in parent:
            rel = parent.split(_MARK, 1)[1]
        elif path.is_dir():
            rel = Path(parent).relative_to(path).as_posix()
        else:
            rel = parent
        try:
            yield rel, json.loads(raw)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}!{member}: invalid JSON ({e.msg}, line {e.lineno})") from None


def _gold_index(scores: dict[str, Any]) -> int:
    vals = [float(v) for v in scores.values()]
    return vals.index(max(vals))


def convert_task(task: dict, where: str = "task.json") -> tuple[list[Example], str]:
    """Examples of one BIG-bench JSON task and its metric (``choice_acc`` or ``exact_match``)."""
    raw = task.get("examples") or []
    task_prefix = task.get("task_prefix", "") or ""
    in_prefix = task.get("example_input_prefix", "\nQ: ")
    out_prefix = task.get("example_output_prefix", "\nA: ")
    choice_prefix = task.get("choice_prefix", "\n  choice: ")
    append_choices = task.get("append_choices_to_input", True)
    is_mc = bool(raw) and all("target_scores" in e for e in raw)
    out = []
    for i, e in enumerate(raw):
        if not isinstance(e, dict) or "input" not in e:
            raise DataError(f"{where}: example {i} has no 'input' field")
        text = in_prefix + str(e["input"])
        if is_mc:
            choices = [str(c) for c in e["target_scores"]]
            if not choices:
                raise DataError(f"{where}: example {i} has empty 'target_scores'")
            meta = {}
            if append_choices:
                meta["prompt_unlisted"] = (task_prefix + text + out_prefix).strip()
                text += choice_prefix + choice_prefix.join(choices)
            prompt = (task_prefix + text + out_prefix).strip()
            gold = _gold_index(e["target_scores"])
            out.append(Example(prompt=prompt, choices=choices, gold=gold, response=choices[gold], meta=meta))
        else:
            target = e.get("target")
            targets = [str(t) for t in target] if isinstance(target, list) else [str(target)] if target is not None else []
            if not targets and "target_scores" in e:
                targets = [list(e["target_scores"])[_gold_index(e["target_scores"])]]
            if not targets:
                raise DataError(f"{where}: example {i} has neither 'target' nor 'target_scores'")
            prompt = (task_prefix + text + out_prefix).strip()
            meta = {"targets": targets} if len(targets) > 1 else {}
            out.append(Example(prompt=prompt, response=targets[0], meta=meta))
    return out, ("choice_acc" if is_mc else "exact_match")


def split_examples(examples: list[Example], name: str, max_examples: int | None, seed: int):
    """Seeded cap + train/validation split (validation 10%, at least 10, at most 100)."""
    rng = random.Random(f"{seed}:{name}")
    idx = list(range(len(examples)))
    rng.shuffle(idx)
    if max_examples is not None:
        idx = idx[:max_examples]
    n_val = min(100, max(10, len(idx) // 10))
    val, train = sorted(idx[:n_val]), sorted(idx[n_val:])
    return [examples[i] for i in train], [examples[i] for i in val]


def build_bigbench(source: str | Path, descriptions: dict[str, list[str]], *, min_examples: int = MIN_EXAMPLES,
                   max_examples: int | None = MAX_EXAMPLES, min_descriptions: int = 8, seed: int = 0,
                   quiet: bool = True) -> tuple[list[TaskRecord], dict[str, str]]:
    """Build BIG-bench task records; returns (kept records, {dropped task name: reason})."""
    from tqdm.auto import tqdm

    kept: list[TaskRecord] = []
    dropped: dict[str, str] = {}
    bar = tqdm(desc="bigbench tasks", unit="task", disable=quiet)
    seen = 0
    for rel, task in iter_bigbench_tasks(source):
        bar.update(1)
        seen += 1
        name = f"bigbench/{rel}"
        n = len(task.get("examples") or [])
        if n == 0:
            dropped[name] = "no examples in task.json (container of subtasks or programmatic task)"
            continue
        if n < min_examples:
            dropped[name] = f"only {n} examples (< {min_examples})"
            continue
        descs = descriptions.get(rel, [])
        if len(descs) < min_descriptions:
            dropped[name] = "no descriptions" if not descs else f"only {len(descs)} descriptions (< {min_descriptions})"
            continue
        examples, metric = convert_task(task, f"{source}!{rel}/task.json")
        train, val = split_examples(examples, name, max_examples, seed)
        kept.append(TaskRecord(
            name=name, source="bigbench", license=_LICENSE, citation=_CITATION, metric=metric,
            train_descriptions=list(descs), heldout_descriptions=[], splits={"train": train, "validation": val},
            info={"num_examples_total": n, "keywords": list(task.get("keywords") or []),
                  "original_description": str(task.get("description") or "")}))
    bar.close()
    if not seen:
        raise DataError(f"no BIG-bench task (a task.json under benchmark_tasks/) in {source}; pass the bigbench-1.0.0 "
                        "sdist or a checkout of the BIG-bench repository (https://github.com/google/BIG-bench)")
    kept.sort(key=lambda r: r.name)
    return kept, dropped
