"""User task files: JSONL (one task per line) or YAML (one task, a list, or ``{tasks: [...]}``).

A task::

    name: my_task                      # required; the record is called user/my_task
    descriptions: [..., ...]           # required: training descriptions (at least one)
    heldout_descriptions: [...]        # optional
    metric: exact_match                # optional; default choice_acc (choices) or exact_match
    license: CC-BY-4.0                 # optional
    examples:                          # or train:/validation:/test: lists
      - {input: "2+2?", output: "4"}                       # generative ("prompt"/"response" also accepted)
      - {input: "Sky colour?", choices: [red, blue], gold: 1}  # multiple choice

With a plain ``examples`` list, 10% (at least 1, only when there are 10 or more) become validation,
chosen with a fixed seed.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

from ...errors import DataError
from ..records import Example, TaskRecord

__all__ = ["load_user_tasks", "parse_task"]


def _example(obj: Any, where: str) -> Example:
    if not isinstance(obj, dict):
        raise DataError(f"{where}: an example must be a mapping, got {type(obj).__name__}")
    prompt = obj.get("input", obj.get("prompt"))
    if not isinstance(prompt, str) or not prompt.strip():
        raise DataError(f"{where}: field 'input' (or 'prompt') is missing or empty")
    response = obj.get("output", obj.get("response"))
    choices = obj.get("choices")
    if choices is not None:
        if not isinstance(choices, list) or not choices or not all(isinstance(c, str) for c in choices):
            raise DataError(f"{where}: field 'choices' must be a non-empty list of strings")
        gold = obj.get("gold")
        if not isinstance(gold, int) or not 0 <= gold < len(choices):
            raise DataError(f"{where}: field 'gold' must be an index into the {len(choices)} choices, got {gold!r}")
        return Example(prompt=prompt, choices=list(choices), gold=gold, response=choices[gold],
                       meta=dict(obj.get("meta") or {}))
    if not isinstance(response, str):
        raise DataError(f"{where}: give 'output' (generative) or 'choices' + 'gold' (multiple choice)")
    return Example(prompt=prompt, response=response, meta=dict(obj.get("meta") or {}))


def _strings(obj: dict, key: str, where: str, required: bool) -> list[str]:
    val = obj.get(key)
    if val is None and not required:
        return []
    if isinstance(val, str):
        val = [val]
    if not isinstance(val, list) or not all(isinstance(s, str) and s.strip() for s in val) or (required and not val):
        raise DataError(f"{where}: field {key!r} must be a non-empty list of non-empty strings")
    return [s.strip() for s in val]


def parse_task(obj: Any, where: str, seed: int = 0) -> TaskRecord:
    """Turn one task mapping into a :class:`TaskRecord`; ``where`` names the file and line for errors."""
    if not isinstance(obj, dict):
        raise DataError(f"{where}: a task must be a mapping with 'name', 'descriptions' and 'examples'")
    name = obj.get("name")
    if not isinstance(name, str) or not name.strip():
        raise DataError(f"{where}: field 'name' is missing or empty")
    descs = _strings(obj, "descriptions", f"{where} (task {name})", required=True)
    heldout = _strings(obj, "heldout_descriptions", f"{where} (task {name})", required=False)
    splits: dict[str, list[Example]] = {}
    if "examples" in obj:
        raw = obj["examples"]
        if not isinstance(raw, list) or not raw:
            raise DataError(f"{where} (task {name}): field 'examples' must be a non-empty list")
        exs = [_example(e, f"{where} (task {name}, examples[{i}])") for i, e in enumerate(raw)]
        idx = list(range(len(exs)))
        random.Random(f"{seed}:{name}").shuffle(idx)
        n_val = len(exs) // 10 if len(exs) >= 10 else 0
        splits = {"train": [exs[i] for i in sorted(idx[n_val:])], "validation": [exs[i] for i in sorted(idx[:n_val])]}
    for split in ("train", "validation", "test"):
        if split in obj:
            raw = obj[split]
            if not isinstance(raw, list):
                raise DataError(f"{where} (task {name}): field {split!r} must be a list of examples")
            splits[split] = [_example(e, f"{where} (task {name}, {split}[{i}])") for i, e in enumerate(raw)]
    if not any(splits.values()):
        raise DataError(f"{where} (task {name}): the task has no examples; add 'examples' (or 'train'/'test')")
    mc = {e.choices is not None for exs in splits.values() for e in exs}
    if len(mc) > 1:
        raise DataError(f"{where} (task {name}): mixes multiple-choice and generative examples; split it in two")
    metric = obj.get("metric") or ("choice_acc" if mc == {True} else "exact_match")
    try:
        return TaskRecord(name=f"user/{name.strip()}", source="user", license=str(obj.get("license", "unknown")),
                          citation=str(obj.get("citation", "")), metric=metric, train_descriptions=descs,
                          heldout_descriptions=heldout, splits=splits)
    except DataError as e:  # the record's own validation
        raise DataError(f"{where} (task {name}): {e}") from None


def load_user_tasks(path: str | Path, seed: int = 0) -> list[TaskRecord]:
    """All tasks of a user JSONL or YAML file; errors name the file and the line or task."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"task file {path} does not exist")
    text = path.read_text(encoding="utf-8")
    tasks: list[TaskRecord] = []
    if path.suffix == ".jsonl":
        for lineno, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{path}:{lineno}: not valid JSON ({e.msg} at column {e.colno})") from None
            tasks.append(parse_task(obj, f"{path}:{lineno}", seed))
    elif path.suffix in (".yaml", ".yml", ".json"):
        import yaml

        try:
            data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}:{e.lineno}: not valid JSON ({e.msg})") from None
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            line = f":{mark.line + 1}" if mark is not None else ""
            raise DataError(f"{path}{line}: not valid YAML ({getattr(e, 'problem', e)})") from None
        items = data.get("tasks") if isinstance(data, dict) and "tasks" in data else data
        items = items if isinstance(items, list) else [items]
        tasks = [parse_task(obj, f"{path} (task #{i + 1})", seed) for i, obj in enumerate(items)]
    else:
        raise DataError(f"task file {path} must end in .jsonl, .json, .yaml or .yml")
    if not tasks:
        raise DataError(f"task file {path} holds no tasks")
    names = [t.name for t in tasks]
    dup = {n for n in names if names.count(n) > 1}
    if dup:
        raise DataError(f"task file {path} defines {', '.join(sorted(dup))} more than once")
    for t in tasks:
        t.info = {**t.info, "file": str(path)}
    return tasks
