"""The bare-input suite: does a model answer a bare input the way a task description asks?

``t2l eval run -b instruct`` evaluates it like the benchmarks. Each task has a held-out description
that states the task and the answer form, and inputs that carry no instruction (a review, two
numbers, a word), so only the description -- in the prompt, or turned into an adapter -- says what
to do with them. Three kinds of task (``resources/instruct/suite.yaml``):

- ``label``: the answer must be one of the labels the description names; scored by label match
  (``correct``) and by whether it is a valid label at all (``form_ok``);
- ``form``: the answer must take the form the description states (one word, at most N words, all
  capitals, a JSON object with a named key, a bulleted list of N items, a number only, a Python
  function); scored by the form's checker (:mod:`text2lora.data.forms`; ``correct`` = ``form_ok``);
- ``short``: a gold answer (arithmetic, unit conversion, word manipulation); scored by normalised
  exact match of the whole answer (``correct``), its form checked as well (``form_ok``).

Inputs come from seeded generators (:mod:`text2lora.eval.instruct_gen`, word lists in
``resources/instruct/words.yaml``) written for this project, not from any benchmark or training
collection. Name entries: ``instruct`` (every task), ``instruct/<task>`` (glob patterns work), and
``instruct:FILE.yaml`` (a suite file of your own, in the same format; its tasks may list their
``inputs`` instead of naming a generator). A suite file whose task lacks a description or a checker
(an answer form) is refused, naming the task.

All answers are generated greedily with one fixed budget (:data:`TOKENS` new tokens, ``--max-new-tokens``
to change it). :func:`instruct_summary` / :func:`instruct_markdown` report each condition's label
accuracy, valid-label rate, form compliance and exact match, averaged over the tasks of each kind,
and paired bootstrap intervals of the differences between conditions.
"""

from __future__ import annotations

import fnmatch
import functools
import random
from pathlib import Path
from typing import Any, Sequence

import yaml

from ..data import Example, TaskRecord
from ..data import forms
from ..errors import DataError, T2LError
from .instruct_gen import GENERATORS

__all__ = ["SUITE_FILE", "KINDS", "TOKENS", "METRICS", "load_suite", "suite_tasks", "is_instruct", "score",
           "instruct_summary", "instruct_markdown"]

_DIR = Path(__file__).resolve().parent.parent / "resources" / "instruct"
#: The shipped suite (``-b instruct``).
SUITE_FILE = _DIR / "suite.yaml"
_WORDS_FILE = _DIR / "words.yaml"
#: Task kinds.
KINDS = ("label", "form", "short")
#: New-token budget of every answer (greedy): room for a short function or a list of four items.
TOKENS = 64
#: Collection name and task-name prefix.
PREFIX = "instruct"
#: Reported metrics: key -> (the task kind it averages over, or None for all tasks; the per-answer field; title).
METRICS: dict[str, tuple[str | None, str, str]] = {
    "label_accuracy": ("label", "correct", "label accuracy"),
    "valid_label": ("label", "form_ok", "valid label"),
    "form_compliance": ("form", "form_ok", "form compliance (form tasks)"),
    "exact_match": ("short", "correct", "exact match"),
    "form_all": (None, "form_ok", "form compliance (all tasks)"),
}


def _read_yaml(path: Path) -> Any:
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"suite file {path} does not exist") from None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise DataError(f"suite file {path} cannot be read as YAML ({e}); fix or replace it") from None


@functools.lru_cache(maxsize=1)
def _words() -> dict[str, Any]:
    return _read_yaml(_WORDS_FILE)


def _check_task(spec: Any, i: int, path: Path) -> dict[str, Any]:
    """One task entry of a suite file, checked; a :class:`DataError` naming the task and what is wrong."""
    if not isinstance(spec, dict) or not isinstance(spec.get("name"), str) or not spec["name"].strip():
        raise DataError(f"{path}: task {i + 1} has no name; give every task a 'name'")
    name = spec["name"]
    where = f"{path}: task {name!r}"
    description = spec.get("description")
    if not isinstance(description, str) or not description.strip():
        raise DataError(f"{where} has no description; give it a held-out 'description' that states the task and "
                        "the answer form")
    if spec.get("kind") not in KINDS:
        raise DataError(f"{where}: 'kind' must be one of {', '.join(KINDS)}, got {spec.get('kind')!r}")
    if not spec.get("form"):
        raise DataError(f"{where} has no checker; give it a 'form' (one of {', '.join(forms.FORMS)}) and its "
                        "'params'")
    try:
        params = forms.check_params(spec["form"], spec.get("params"))
    except DataError as e:
        raise DataError(f"{where}: {e}") from None
    if (spec["kind"] == "label") != (spec["form"] == "label"):
        raise DataError(f"{where}: a label task has the form 'label' (with its labels), and only a label task has it")
    has_gen, has_inputs = "generator" in spec, "inputs" in spec
    if has_gen == has_inputs:
        raise DataError(f"{where} needs exactly one of 'generator' (one of {', '.join(GENERATORS)}) or 'inputs'")
    if has_gen and spec["generator"] not in GENERATORS:
        raise DataError(f"{where}: unknown generator {spec['generator']!r}; use one of {', '.join(GENERATORS)}")
    return {**spec, "params": params}


def _inputs(spec: dict[str, Any], n: int, where: str) -> list[tuple[str, list[str] | None]]:
    """The task's ``n`` distinct inputs with their gold answers (a generator's seeded draws, or its list)."""
    if "inputs" in spec:
        items = []
        for k, entry in enumerate(spec["inputs"] or []):
            entry = entry if isinstance(entry, dict) else {"input": entry}
            text, gold = entry.get("input"), entry.get("gold")
            if not isinstance(text, str) or not text.strip():
                raise DataError(f"{where}: input {k + 1} is empty or not text")
            golds = None if gold is None else [str(g) for g in (gold if isinstance(gold, list) else [gold])]
            items.append((text, golds))
        if not items:
            raise DataError(f"{where} lists no inputs")
        return items
    gen = GENERATORS[spec["generator"]]
    rng = random.Random(f"{PREFIX}:{spec['name']}")
    seen: dict[str, list[str] | None] = {}
    for _ in range(200 * n):
        text, golds = gen(rng, _words())
        seen.setdefault(text, golds)
        if len(seen) == n:
            break
    else:
        raise DataError(f"{where}: generator {spec['generator']!r} makes only {len(seen)} distinct inputs, fewer than "
                        f"{n}; lower 'inputs_per_task' or widen its word lists")
    return list(seen.items())


def load_suite(path: str | Path = SUITE_FILE) -> list[TaskRecord]:
    """The tasks of a suite file as task records named ``instruct/<task>``, their inputs in ``splits["test"]``.

    Every task is checked before any is built: one without a description or an answer form (its
    checker), with unknown parameters, or with a gold answer that is not one of its labels is refused
    with a :class:`DataError` naming it.
    """
    path = Path(path)
    data = _read_yaml(path)
    if not isinstance(data, dict) or not isinstance(data.get("tasks"), list) or not data["tasks"]:
        raise DataError(f"{path} is not a suite file: it needs a list 'tasks' (see {SUITE_FILE})")
    n = data.get("inputs_per_task", 50)
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise DataError(f"{path}: 'inputs_per_task' must be a positive whole number, got {n!r}")
    specs = [_check_task(spec, i, path) for i, spec in enumerate(data["tasks"])]
    names = [s["name"] for s in specs]
    dup = sorted({x for x in names if names.count(x) > 1})
    if dup:
        raise DataError(f"{path}: task names {dup} appear more than once; give every task its own name")
    records = []
    for spec in specs:
        where = f"{path}: task {spec['name']!r}"
        examples = []
        for text, golds in _inputs(spec, n, where):
            if spec["kind"] != "form" and not golds:
                raise DataError(f"{where}: input {text!r} has no gold answer; a {spec['kind']} task needs one")
            if spec["kind"] == "label" and not forms.check("label", golds[0], spec["params"]):
                raise DataError(f"{where}: gold {golds[0]!r} of input {text!r} is not one of its labels "
                                f"{spec['params']['labels']}")
            if spec["kind"] == "form":  # any answer of the form will do: no gold is kept
                golds = None
            examples.append(Example(text, golds[0] if golds else "", meta={"targets": golds} if golds else {}))
        records.append(TaskRecord(
            f"{PREFIX}/{spec['name']}", PREFIX, "Apache-2.0", "generated by text2lora (resources/instruct)",
            "exact_match", [], [spec["description"].strip()], {"test": examples},
            info={PREFIX: {"kind": spec["kind"], "form": spec["form"], "params": spec["params"],
                           "file": str(path)}}))
    return records


def suite_tasks(entry: str) -> list[TaskRecord] | None:
    """The suite tasks an evaluation entry names (``instruct``, ``instruct/<task or pattern>``,
    ``instruct:FILE.yaml``), or ``None`` when the entry is not about the suite."""
    if entry == PREFIX:
        return load_suite()
    if entry.startswith(PREFIX + ":"):
        return load_suite(entry[len(PREFIX) + 1:])
    if entry.startswith(PREFIX + "/"):
        tasks = [t for t in load_suite() if fnmatch.fnmatchcase(t.name, entry)]
        if not tasks:
            have = ", ".join(t.name for t in load_suite())
            raise DataError(f"no task of the bare-input suite is named {entry!r}; its tasks: {have}")
        return tasks
    return None


def is_instruct(task: TaskRecord) -> bool:
    """Whether ``task`` is a task of a bare-input suite (scored by :func:`score`)."""
    return PREFIX in (task.info or {})


def score(completion: str, example: Example, task: TaskRecord) -> dict[str, Any]:
    """One answer's record fields: ``kind``, ``form_ok`` (the checker), ``correct`` (label or exact match;
    form compliance for form tasks), and the ``gold`` answers where there are any."""
    spec = task.info[PREFIX]
    form_ok = forms.check(spec["form"], completion, spec["params"])
    golds = example.meta.get("targets")
    out: dict[str, Any] = {"completion": completion, "kind": spec["kind"], "form": spec["form"],
                           "form_ok": float(form_ok)}
    if spec["kind"] == "form":
        out["correct"] = float(form_ok)
    else:
        out["correct"] = float(forms.matches(completion, golds))
    if golds:
        out["gold"] = golds
    return out


# ----------------------------------------------------------------------------- report

def _records(records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in records if r.get("metric") == PREFIX]


def _as_correct(records: Sequence[dict[str, Any]], metric: str) -> list[dict[str, Any]]:
    """The records one metric averages over, with that metric's field as ``correct`` (what the paired
    bootstrap of :mod:`text2lora.eval.report` reads)."""
    kind, field, _ = METRICS[metric]
    return [{**r, "correct": r[field]} for r in records if kind is None or r["kind"] == kind]


def instruct_summary(records: Sequence[dict[str, Any]], conditions: Sequence[str] | None = None,
                     n_boot: int = 10_000, seed: int = 0) -> dict[str, Any]:
    """Per condition, each metric of :data:`METRICS` (in %, the mean over the tasks of its kind, each task
    weighing the same); which description placement of the base model is better; and paired bootstrap
    intervals of the comparisons the suite exists for, on the items both conditions answered."""
    from .report import _ordered, paired_difference

    recs = _records(records)
    if not recs:
        return {}
    conds = _ordered([r["condition"] for r in recs], conditions or [])
    kind_of = {r["condition"]: r.get("spec", "").split(":", 1)[0] for r in recs}
    table: dict[str, dict[str, Any]] = {}
    for c in conds:
        row: dict[str, Any] = {}
        for m in METRICS:
            by_task: dict[str, list[float]] = {}
            for r in _as_correct([r for r in recs if r["condition"] == c], m):
                by_task.setdefault(r["task"], []).append(r["correct"])
            row[m] = 100 * sum(sum(v) / len(v) for v in by_task.values()) / len(by_task) if by_task else None
            row[m + "_tasks"] = len(by_task)
        scored = [row[m] for m in ("label_accuracy", "form_compliance", "exact_match") if row[m] is not None]
        row["mean"] = sum(scored) / len(scored) if scored else None
        row["n"] = sum(r["condition"] == c for r in recs)
        table[c] = row
    # the base model with the description: the better of the user-message prefix and the system message
    described = [c for c in conds if kind_of[c] in ("description", "description-system") and table[c]["mean"] is not None]
    best_base = max(described, key=lambda c: table[c]["mean"]) if described else None
    pairs = []
    by_kind = {k: [c for c in conds if kind_of[c] == k] for k in set(kind_of.values())}
    for t2l in by_kind.get("t2l", []):
        pairs += [(a, t2l) for a in by_kind.get("base", []) + ([best_base] if best_base else [])
                  + by_kind.get("adapter", [])]
    for both in by_kind.get("t2l-description", []) + by_kind.get("t2l-description-system", []):
        pairs += [(a, both) for a in by_kind.get("t2l", []) + ([best_base] if best_base else [])]
    paired = []
    for a, b in dict.fromkeys(pairs):
        row = {"a": a, "b": b}
        for m in METRICS:
            sub = _as_correct(recs, m)
            if not {r["condition"] for r in sub} >= {a, b}:
                continue
            try:
                res = paired_difference(sub, a, b, n_boot=n_boot, seed=seed)["average"]
            except T2LError:  # no item of this metric scored by both: the cell stays empty
                continue
            row[m] = {"diff": res["diff"], "ci": res["ci"], "p_not_above": res["p_not_above"]}
        paired.append(row)
    return {"conditions": conds, "table": table, "best_base_description": best_base, "paired": paired}


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{x:.1f}"


def instruct_markdown(summary: dict[str, Any]) -> str:
    """The suite's tables: one row per condition, one column per metric; then the paired differences."""
    if not summary:
        return ""
    ms = list(METRICS)
    lines = ["Bare-input suite (greedy; label and short-answer tasks scored on the whole answer):", "",
             "| condition | " + " | ".join(METRICS[m][2] for m in ms) + " | mean |", "|---|" + "---:|" * (len(ms) + 1)]
    for c in summary["conditions"]:
        row = summary["table"][c]
        mark = " (better placement)" if c == summary["best_base_description"] else ""
        lines.append(f"| {c}{mark} | " + " | ".join(_pct(row[m]) for m in ms) + f" | {_pct(row['mean'])} |")
    first = summary["table"][summary["conditions"][0]]
    lines += ["", f"Tasks: {first['label_accuracy_tasks']} label, {first['form_compliance_tasks']} form, "
                  f"{first['exact_match_tasks']} short-answer; scores in %, each task weighs the same; mean = of label "
                  "accuracy, form compliance (form tasks) and exact match."]
    if summary["paired"]:
        lines += ["", "b - a on the same items (points; paired bootstrap 95% interval over items within each task, "
                      "averaged over tasks):", "",
                  "| a | b | " + " | ".join(METRICS[m][2] for m in ms) + " |", "|---|---|" + "---:|" * len(ms)]
        for p in summary["paired"]:
            cells = [f"{p[m]['diff']:+.1f} [{p[m]['ci'][0]:+.1f}, {p[m]['ci'][1]:+.1f}]" if m in p else "-" for m in ms]
            lines.append(f"| {p['a']} | {p['b']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
