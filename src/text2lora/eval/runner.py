"""Benchmarks x conditions -> per-example results (JSONL, resumable) -> summary.

``run_eval`` appends one JSON line per scored example to ``OUT/results.jsonl`` after every batch,
so an interrupted evaluation resumes from the examples already scored (a half-written last line is
ignored). ``OUT/run.json`` pins what must not change between a run and its resumption (base model,
seed, shots, generation length, split); benchmarks, conditions and ``--limit`` may grow.

``--limit N`` takes the same seeded random subset of N evaluation items for every condition.
On CPU the whole run is deterministic: the same command twice gives identical numbers.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch

from .._io import atomic_write_json, read_json, undo_on_failure
from ..base import BaseModel
from ..embedded import DEFAULT_BASE
from ..data import BENCHMARKS, TaskRecord, resolve_tasks
from ..errors import ConfigError, DataError
from . import instruct, mc_labels, metrics
from .conditions import Condition, ConditionResolver, PreparedExample, parse_condition, weights_fingerprint
from .sandbox import require_sandbox, run_many
from .scoring import encode_mc, generate, score_choices

__all__ = ["EvalConfig", "select_examples", "run_eval", "load_results", "resolve_eval_tasks", "GEN_TOKENS",
           "MC_PROTOCOLS"]

#: New-token budget of a labelled multiple-choice answer (enough for the text of a long choice).
LABEL_TOKENS = 32
#: Default new-token budget per metric for generative benchmarks.
GEN_TOKENS = {"gsm8k": 256, "pass@1": 384, "exact_match": 64, "instruct": instruct.TOKENS}

_PINNED = ("base", "seed", "shots", "split", "max_new_tokens", "shared_context", "mc_protocol")
#: The value a pinned setting had before it existed (a results directory written by an older version).
_PINNED_BEFORE = {"mc_protocol": "loglik"}
#: Protocols for multiple-choice benchmarks (see :mod:`text2lora.eval.mc_labels`).
MC_PROTOCOLS = ("loglik", "labels")


@dataclass
class EvalConfig:
    """One evaluation: which tasks, which conditions, how much, where to write."""

    benchmarks: list[str] = field(default_factory=lambda: list(BENCHMARKS))
    """What to evaluate: benchmark names (arc_challenge, ..., mbpp), ``all``, task names of built collections
    (``bigbench/<task>``, ``sni/<task>``), a task file (``.jsonl``/``.yaml``, ``#task`` for one), or the bare-input
    suite (``instruct``, ``instruct/<task>``, ``instruct:SUITE.yaml``; :mod:`text2lora.eval.instruct`)."""
    conditions: list[str] = field(default_factory=lambda: ["base", "icl", "description"])
    """Conditions ``[LABEL=]KIND[:PATH]`` (see :mod:`text2lora.eval.conditions`)."""
    base: str = DEFAULT_BASE
    """Base model name/path (recorded; the loaded model is passed to :func:`run_eval`)."""
    out: str | None = None
    """Output directory (results.jsonl, run.json, reports); ``None`` keeps results in memory only."""
    limit: int | None = None
    """Evaluate a seeded random subset of at most this many items per benchmark."""
    seed: int = 0
    """Seed of the subset, the in-context shots and random-string descriptions."""
    shots: int = 3
    """In-context examples for the ``icl`` condition."""
    split: str = "auto"
    """``test`` (the paper's evaluation items), ``validation``, or ``auto`` (test if present, else validation)."""
    batch_size: int = 8
    """Examples per forward pass."""
    gen_batch_size: int = 32
    """Prompts per generation batch (decoding cost per step is mostly fixed overhead on CPU: batch wide)."""
    max_new_tokens: int | None = None
    """Generation budget in new tokens; ``None`` uses :data:`GEN_TOKENS`, per metric."""
    shared_context: bool = True
    """Score multiple-choice options against the context's shared KV cache (exact and faster); off scores every
    context+choice sequence in full."""
    mc_metric: str = "acc_norm"
    """Which multiple-choice accuracy the summary table reports: ``acc`` (summed log-probs) or ``acc_norm``."""
    mc_protocol: str = "loglik"
    """``loglik``: score every choice by its log-likelihood; ``labels``: the paper's protocol, choices listed
    with labels in the prompt and the greedy answer read for the label (:mod:`text2lora.eval.mc_labels`)."""
    code_timeout: float = 10.0
    """Seconds per generated program in the sandbox."""
    code_memory_mb: int = 1024
    """Address-space limit per generated program."""
    quiet: bool = False
    """No progress bar."""

    def __post_init__(self) -> None:
        if self.limit is not None and self.limit < 1:
            raise ConfigError(f"--limit must be >= 1, got {self.limit}")
        if self.batch_size < 1 or self.gen_batch_size < 1:
            raise ConfigError(f"--batch-size and --gen-batch-size must be >= 1, got {self.batch_size}, "
                              f"{self.gen_batch_size}")
        if self.split not in ("auto", "test", "validation", "train"):
            raise ConfigError(f"--split must be auto, test, validation or train, got {self.split!r}")
        if self.mc_metric not in ("acc", "acc_norm"):
            raise ConfigError(f"--mc-metric must be acc or acc_norm, got {self.mc_metric!r}")
        if self.mc_protocol not in MC_PROTOCOLS:
            raise ConfigError(f"--mc-protocol must be one of {', '.join(MC_PROTOCOLS)}, got {self.mc_protocol!r}")
        if not self.benchmarks:
            raise ConfigError("no benchmarks given")
        if not self.conditions:
            raise ConfigError("no conditions given")


def _split_of(task: TaskRecord, split: str) -> tuple[str, list]:
    if split == "auto":
        split = "test" if task.splits.get("test") else "validation"
    exs = task.splits.get(split) or []
    if not exs:
        raise DataError(f"task {task.name} has no {split!r} examples (splits: "
                        f"{', '.join(f'{k}={len(v)}' for k, v in task.splits.items())}); choose another --split")
    return split, exs


def select_examples(task: TaskRecord, split: str, limit: int | None, seed: int) -> tuple[str, list[tuple[int, Any]]]:
    """``(split name, [(index, example), ...])``: all items, or a seeded random subset of ``limit``."""
    split, exs = _split_of(task, split)
    idx = list(range(len(exs)))
    if limit is not None and limit < len(exs):
        idx = sorted(random.Random(f"eval:{seed}:{task.name}:{split}").sample(idx, limit))
    return split, [(i, exs[i]) for i in idx]


def resolve_eval_tasks(entries: Sequence[str]) -> list[TaskRecord]:
    """The task records of evaluation entries: the bare-input suite's entries (:func:`instruct.suite_tasks`),
    everything else through :func:`text2lora.data.resolve_tasks`; de-duplicated, in order."""
    out: dict[str, TaskRecord] = {}
    for entry in entries:
        suite = instruct.suite_tasks(entry)
        for rec in suite if suite is not None else resolve_tasks([entry]):
            out.setdefault(rec.name, rec)
    return list(out.values())


def load_results(path: str | os.PathLike, repair: bool = False) -> list[dict[str, Any]]:
    """Per-example records of a ``results.jsonl`` (a truncated last line is skipped).

    With ``repair`` a half-written last line is cut off the file, so appending can go on after it.
    """
    path = Path(path)
    if not path.is_file():
        return []
    if repair:
        data = path.read_bytes()
        if data and not data.endswith(b"\n"):
            with open(path, "r+b") as f:
                f.truncate(data.rfind(b"\n") + 1)
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # interrupted while writing this line: it will be scored again
    return out


def _append(path: Path | None, records: list[dict[str, Any]]) -> None:
    if path is None or not records:
        return
    with open(path, "a", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
        f.flush()
        os.fsync(f.fileno())


def _check_pinned(out: Path, cfg: EvalConfig) -> None:
    pinned = {k: getattr(cfg, k) for k in _PINNED}
    run_json = out / "run.json"
    if run_json.is_file():
        old = {**_PINNED_BEFORE, **read_json(run_json).get("pinned", {})}
        diff = [k for k in _PINNED if k in old and old[k] != pinned[k]]
        if diff:
            raise ConfigError(f"{out} holds results made with different settings ({', '.join(f'{k}: {old[k]!r} -> {pinned[k]!r}' for k in diff)}); "
                              "use another --out directory or the original settings")
    atomic_write_json(run_json, {"pinned": pinned, "config": asdict(cfg)})


def _check_same_weights(out: Path | None, records: Sequence[dict[str, Any]], conds: Sequence[Condition],
                        fingerprints: dict[str, str | None]) -> None:
    """Refuse to add to a label's cached results when its weights are not the ones that made them.

    Results are reused by label, so a label whose path now holds other files (or that now names
    another path) would mix two models' scores in one row. Records written before fingerprints
    were kept are checked by their condition spec alone.
    """
    before: dict[str, set[tuple[str, str | None]]] = {}
    for r in records:
        before.setdefault(r["condition"], set()).add((r.get("spec", ""), r.get("weights")))
    for cond in conds:
        for spec, weights in before.get(cond.label, ()):
            same = spec == cond.spec if weights is None else weights == fingerprints[cond.label]
            if not same:
                change = ("the files at that path have changed since" if spec == cond.spec
                          else f"they were made with {spec!r}, not {cond.spec!r}")
                raise ConfigError(f"{out} holds results for condition {cond.label!r} from other weights ({change}); "
                                  f"name this condition differently (LABEL=KIND:PATH) or use another --out directory")


def _score_mc(base, batch: list[PreparedExample], adapters, cfg: EvalConfig) -> list[dict]:
    items = [encode_mc(base.tokenizer, p.prompt, p.example.choices) for p in batch]
    scores = score_choices(base, items, adapters, batch_size=cfg.batch_size, shared_context=cfg.shared_context)
    out = []
    for p, s in zip(batch, scores):
        acc_pred, norm_pred = metrics.choice_predictions(s, p.example.choices)
        out.append({"gold": p.example.gold, "pred": acc_pred, "pred_norm": norm_pred,
                    "acc": float(acc_pred == p.example.gold), "acc_norm": float(norm_pred == p.example.gold),
                    "logprobs": [round(x, 5) for x in s]})
    return out


def _score_labelled(base, batch: list[PreparedExample], adapters, cfg: EvalConfig) -> list[dict]:
    outs = generate(base, [p.prompt for p in batch], adapters, max_new_tokens=cfg.max_new_tokens or LABEL_TOKENS,
                    batch_size=cfg.gen_batch_size, stop=mc_labels.answer_done)
    recs = []
    for p, o in zip(batch, outs):
        ex = p.example
        labels = ex.meta["labels"]
        pred = mc_labels.read_label(o, labels)
        pred_text = mc_labels.read_choice_text(o, ex.choices, labels)
        recs.append({"completion": o, "gold": ex.gold, "pred": pred, "pred_text": pred_text,
                     "correct": float(pred == ex.gold), "correct_text": float(pred_text == ex.gold)})
    return recs


def _score_instruct(base, batch: list[PreparedExample], adapters, task: TaskRecord, cfg: EvalConfig) -> list[dict]:
    outs = generate(base, [p.prompt for p in batch], adapters, max_new_tokens=cfg.max_new_tokens or GEN_TOKENS["instruct"],
                    batch_size=cfg.gen_batch_size)
    return [instruct.score(o, p.example, task) for p, o in zip(batch, outs)]


def _score_gen(base, batch: list[PreparedExample], adapters, metric: str, cfg: EvalConfig) -> list[dict]:
    n_tok = cfg.max_new_tokens or GEN_TOKENS.get(metric, 256)
    outs = generate(base, [p.prompt for p in batch], adapters, max_new_tokens=n_tok, batch_size=cfg.gen_batch_size,
                    stop=metrics.code_done if metric == "pass@1" else None)
    recs: list[dict] = []
    if metric == "gsm8k":
        for p, o in zip(batch, outs):
            ok, pred = metrics.gsm8k_correct(o, str(p.example.meta.get("answer", "")))
            recs.append({"completion": o, "pred": pred, "gold": p.example.meta.get("answer"), "correct": float(ok)})
    elif metric == "pass@1":
        programs = [metrics.code_program(o, p.example) for p, o in zip(batch, outs)]
        results = run_many(programs, timeout=cfg.code_timeout, memory_mb=cfg.code_memory_mb)
        for o, r in zip(outs, results):
            recs.append({"completion": o, "correct": float(r.passed), "sandbox": r.to_dict()})
    else:
        for p, o in zip(batch, outs):
            recs.append({"completion": o, "correct": float(metrics.exact_match(o, p.example))})
    return recs


def run_eval(cfg: EvalConfig, base: BaseModel, tasks: Sequence[TaskRecord] | None = None) -> list[dict[str, Any]]:
    """Evaluate every (condition, task) pair; returns every per-example record (old and new).

    ``tasks`` overrides ``cfg.benchmarks`` with in-memory records (tests, custom tasks). A run that fails
    (or is interrupted) before its first scored example removes the ``cfg.out`` (or the ``run.json`` in it)
    it created, so a corrected retry with other settings is not refused.
    """
    scored = lambda out: bool(load_results(out / "results.jsonl"))  # noqa: E731
    with undo_on_failure(cfg.out, scored) if cfg.out else contextlib.nullcontext():
        return _run_eval(cfg, base, tasks)


def _run_eval(cfg: EvalConfig, base: BaseModel, tasks: Sequence[TaskRecord] | None) -> list[dict[str, Any]]:
    from tqdm.auto import tqdm

    conds: list[Condition] = [parse_condition(c) for c in cfg.conditions]
    labels = [c.label for c in conds]
    if len(set(labels)) != len(labels):
        raise ConfigError(f"two conditions have the same label ({labels}); name them with LABEL=KIND[:PATH]")
    tasks = list(tasks) if tasks is not None else resolve_eval_tasks(cfg.benchmarks)
    if cfg.mc_protocol == "labels":
        tasks = [mc_labels.labelled_task(t) for t in tasks]
    if any(t.metric == "pass@1" for t in tasks):
        require_sandbox()  # refuse before any generation rather than after it
    out = Path(cfg.out) if cfg.out else None
    jsonl = None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        _check_pinned(out, cfg)
        jsonl = out / "results.jsonl"
    records = load_results(jsonl, repair=True) if jsonl else []
    # only a results directory reuses results by label, so only it needs the weights' fingerprints
    fingerprints = {c.label: weights_fingerprint(c) if jsonl else None for c in conds}
    _check_same_weights(out, records, conds, fingerprints)
    done = {(r["condition"], r["task"], r["split"], r["index"]) for r in records}
    resolver = ConditionResolver(base, shots=cfg.shots, seed=cfg.seed)
    torch.manual_seed(cfg.seed)

    plan = []
    for task in tasks:
        split, indexed = select_examples(task, cfg.split, cfg.limit, cfg.seed)
        for cond in conds:
            todo = [(i, e) for i, e in indexed if (cond.label, task.name, split, i) not in done]
            plan.append((cond, task, split, todo))
    total = sum(len(t) for *_, t in plan)
    bar = tqdm(total=total, desc="eval", unit="ex", disable=cfg.quiet, dynamic_ncols=True)
    try:
        for cond, task, split, todo in plan:
            if not todo:
                continue
            bar.set_postfix_str(f"{cond.label} | {task.name}", refresh=False)
            prepared = resolver.prepare(cond, task, todo)
            prepared.sort(key=lambda p: len(p.prompt))  # similar lengths together: less padding
            by_label = task.is_multiple_choice and cfg.mc_protocol == "labels"
            loglik = task.is_multiple_choice and not by_label
            suite = instruct.is_instruct(task)
            metric = "choice_label" if by_label else instruct.PREFIX if suite else task.metric
            chunk = cfg.batch_size * 4 if loglik else cfg.gen_batch_size
            for s in range(0, len(prepared), chunk):
                batch = prepared[s: s + chunk]
                adapters = resolver.adapters([p.adapter_key for p in batch])
                if suite:
                    scored = _score_instruct(base, batch, adapters, task, cfg)
                elif by_label:
                    scored = _score_labelled(base, batch, adapters, cfg)
                elif loglik:
                    scored = _score_mc(base, batch, adapters, cfg)
                else:
                    scored = _score_gen(base, batch, adapters, task.metric, cfg)
                new = [{"condition": cond.label, "spec": cond.spec, "weights": fingerprints[cond.label],
                        "task": task.name, "split": split,
                        "index": p.index, "metric": metric,
                        **({"description": p.description[:300]} if p.description else {}), **r}
                       for p, r in zip(batch, scored)]
                _append(jsonl, new)
                records.extend(new)
                bar.update(len(batch))
    finally:
        bar.close()
    return records
