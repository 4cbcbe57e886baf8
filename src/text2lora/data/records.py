"""Task records and the compact on-disk store of a built collection.

A collection is stored in one folder of the cache::

    <cache>/collections/<name>/
        manifest.json   format version, build info, per-task counts, dropped and
                        decontaminated tasks with their reasons
        tasks.json      per-task metadata and descriptions, and where its examples are
        examples.bin    one gzip member per task: its splits stored column-wise

Splits are stored as columns (``{"prompt": [...], "response": [...], ...}``)
rather than one object per example, which keeps the file small; a task's
examples are only decoded when first used, so loading a collection is fast. A folder written by another format version is treated as absent (it is
rebuilt, never crashed on). Writes go through :func:`text2lora._io.atomic_dir`,
so a failed build leaves the previous collection intact.
"""

from __future__ import annotations

import gzip
import json
import re
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from collections.abc import MutableMapping
from typing import Any, Iterable

from .._io import atomic_dir, atomic_write_bytes, cache_dir
from ..errors import DataError

__all__ = ["Example", "TaskRecord", "FORMAT_VERSION", "collection_dir", "save_collection",
           "load_cached", "read_manifest", "task_slug", "content_digest"]

#: Version of the on-disk collection format; bump when the layout or the meaning of a field changes.
FORMAT_VERSION = 1

METRICS = ("choice_acc", "gsm8k", "pass@1", "exact_match")


@dataclass
class Example:
    """One example of a task, generative or multiple-choice."""

    prompt: str
    """The input text (question, context), with the task's own prefixes already applied."""
    response: str | None = None
    """Generative target; for multiple-choice examples the gold choice text (used for SFT)."""
    choices: list[str] | None = None
    """Multiple-choice continuations, or ``None`` for a generative example."""
    gold: int | None = None
    """Index of the correct choice in ``choices``."""
    meta: dict = field(default_factory=dict)
    """Extra fields: ``test``/``entry_point`` for code, ``answer`` for GSM8K, ``targets`` (all accepted
    answers) for BIG-bench generative tasks."""

    def __post_init__(self) -> None:
        if self.choices is not None:
            if not self.choices:
                raise DataError("Example.choices is empty; give at least one choice or None")
            if self.gold is None or not 0 <= self.gold < len(self.choices):
                raise DataError(f"Example.gold={self.gold!r} is not an index into {len(self.choices)} choices")
        elif self.response is None:
            raise DataError("Example needs a response (generative) or choices + gold (multiple choice)")

    def without_listed_choices(self) -> "Example":
        """This example with the prompt that does not list its choices (``meta["prompt_unlisted"]``,
        kept for BIG-bench multiple-choice prompts), or the example itself when there is none."""
        alt = self.meta.get("prompt_unlisted") if self.meta else None
        return replace(self, prompt=alt) if alt else self

    def with_prefill(self, prefill: str) -> "Example":
        """This example with ``prefill`` opening its answer (``meta["prefill"]``: part of the prompt, not
        of the target), or the example itself when it already has a prefill."""
        if self.meta.get("prefill"):
            return self
        return replace(self, meta={**self.meta, "prefill": prefill})

    @property
    def target(self) -> str:
        """The text a model should produce: the response, or the gold choice."""
        if self.response is not None:
            return self.response
        assert self.choices is not None and self.gold is not None
        return self.choices[self.gold]


@dataclass
class TaskRecord:
    """Everything known about one task: provenance, descriptions, examples and metric."""

    name: str
    """Unique name: ``arc_easy`` for benchmarks, ``bigbench/<task path>``, ``sni/<task>``, ``user/<name>``."""
    source: str
    """Collection it belongs to: ``benchmarks``, ``bigbench``, ``sni`` or ``user``."""
    license: str
    """License of the task data (SPDX-like string)."""
    citation: str
    """Where the data comes from (paper or dataset reference)."""
    metric: str
    """How to score it: ``choice_acc``, ``gsm8k``, ``pass@1`` or ``exact_match``."""
    train_descriptions: list[str]
    """Descriptions used in training (sampled per example by :class:`TaskSampler`)."""
    heldout_descriptions: list[str]
    """Descriptions never used in training (evaluation of benchmarks)."""
    splits: dict[str, list[Example]]
    """``train`` / ``validation`` / ``test``. For benchmarks ``test`` holds the paper's evaluation items
    (the original split name is in ``eval_split``)."""
    eval_split: str = "test"
    """Original name of the split stored under ``splits['test']`` (``validation`` for BoolQ etc.)."""
    info: dict = field(default_factory=dict)
    """Free-form provenance: original size before capping, keywords, package file."""

    def __post_init__(self) -> None:
        if not self.name:
            raise DataError("TaskRecord.name is empty")
        if self.metric not in METRICS:
            raise DataError(f"TaskRecord.metric={self.metric!r} for {self.name}; expected one of {METRICS}")
        unknown = set(self.splits) - {"train", "validation", "test"}
        if unknown:
            raise DataError(f"TaskRecord.splits of {self.name} has unknown split(s) {sorted(unknown)}")

    @property
    def is_multiple_choice(self) -> bool:
        """True if the task's examples carry choices."""
        for exs in self.splits.values():
            if exs:
                return exs[0].choices is not None
        return False

    def num_examples(self) -> int:
        """Total number of examples over all splits."""
        return sum(len(v) for v in self.splits.values())


# ----------------------------------------------------------------------------- serialisation

def _split_to_columns(examples: list[Example]) -> dict[str, list]:
    cols: dict[str, list] = {"prompt": [e.prompt for e in examples]}
    if any(e.response is not None for e in examples):
        cols["response"] = [e.response for e in examples]
    if any(e.choices is not None for e in examples):
        cols["choices"] = [e.choices for e in examples]
        cols["gold"] = [e.gold for e in examples]
    if any(e.meta for e in examples):
        cols["meta"] = [e.meta or None for e in examples]
    return cols


def _columns_to_split(cols: dict[str, list]) -> list[Example]:
    prompts = cols["prompt"]
    n = len(prompts)
    none = [None] * n
    responses, choices, golds = cols.get("response", none), cols.get("choices", none), cols.get("gold", none)
    metas = cols.get("meta", none)
    new = object.__new__
    out = []
    for i in range(n):  # bypass __post_init__: the data was validated when the collection was built
        ex = new(Example)
        ex.prompt, ex.response, ex.choices, ex.gold = prompts[i], responses[i], choices[i], golds[i]
        ex.meta = metas[i] or {}
        out.append(ex)
    return out


def record_to_dict(rec: TaskRecord) -> dict[str, Any]:
    """A JSON-ready dict of ``rec`` with column-wise splits."""
    return {"name": rec.name, "source": rec.source, "license": rec.license, "citation": rec.citation,
            "metric": rec.metric, "eval_split": rec.eval_split, "info": rec.info,
            "train_descriptions": rec.train_descriptions, "heldout_descriptions": rec.heldout_descriptions,
            "splits": {k: _split_to_columns(v) for k, v in rec.splits.items()}}


# ----------------------------------------------------------------------------- store

class LazySplits(MutableMapping):
    """The splits of one cached task, decoded from disk on first access.

    Split names are known without reading; the examples are read (one gzip member of
    ``examples.bin``) the first time a split's content is touched. Assigning a split first loads
    the others, then behaves like a dict.
    """

    def __init__(self, path: Path, offset: int, length: int, names: list[str]):
        self._path, self._offset, self._length = path, offset, length
        self._names = list(names)
        self._data: dict[str, list[Example]] | None = None

    def _load(self) -> dict[str, list[Example]]:
        if self._data is None:
            try:
                with open(self._path, "rb") as f:
                    f.seek(self._offset)
                    blob = f.read(self._length)
                cols = json.loads(gzip.decompress(blob))
            except (OSError, EOFError, ValueError) as e:
                raise DataError(f"cached collection {self._path.parent} is corrupt ({e}); rebuild it with "
                                f"`t2l data fetch {self._path.parent.name}`") from None
            self._data = {k: _columns_to_split(cols[k]) for k in self._names}
        return self._data

    def __getitem__(self, key: str) -> list[Example]:
        if key not in self._names:
            raise KeyError(key)
        return self._load()[key]

    def __setitem__(self, key: str, value: list[Example]) -> None:
        data = self._load()
        data[key] = value
        if key not in self._names:
            self._names.append(key)

    def __delitem__(self, key: str) -> None:
        data = self._load()
        del data[key]
        self._names.remove(key)

    def __iter__(self):
        return iter(list(self._names))

    def __len__(self) -> int:
        return len(self._names)

    def __contains__(self, key: object) -> bool:
        return key in self._names

    def __repr__(self) -> str:
        state = "loaded" if self._data is not None else "not loaded"
        return f"LazySplits({self._names}, {state})"


def collection_dir(name: str) -> Path:
    """Folder of the built collection ``name`` in the cache (may not exist yet)."""
    return cache_dir("collections") / name


def save_collection(name: str, records: Iterable[TaskRecord], *, dropped: dict[str, str] | None = None,
                    decontaminated: dict[str, str] | None = None, build: dict[str, Any] | None = None,
                    removed_examples: dict[str, dict[str, int]] | None = None, root: Path | None = None) -> Path:
    """Write a collection atomically and return its folder.

    Layout: ``manifest.json`` (format version, counts, dropped and decontaminated tasks),
    ``tasks.json`` (per-task metadata and descriptions, plus where its examples are),
    ``examples.bin`` (one gzip member of column-wise splits per task), and a readable
    ``decontaminated.txt``. ``dropped`` maps task name -> why it was not kept;
    ``decontaminated`` maps task name -> why it overlaps an evaluation benchmark;
    ``removed_examples`` maps task name -> {evaluation set: examples removed for overlapping it}.
    """
    records = list(records)
    path = root or collection_dir(name)
    metas, blobs, offset = [], [], 0
    for r in records:
        d = record_to_dict(r)
        blob = gzip.compress(json.dumps(d.pop("splits"), ensure_ascii=False, separators=(",", ":")).encode(), 6,
                             mtime=0)  # no time stamp: the same data gives the same bytes on every machine
        d.update(split_names=list(r.splits), split_sizes={k: len(v) for k, v in r.splits.items()},
                 offset=offset, length=len(blob))
        metas.append(d)
        blobs.append(blob)
        offset += len(blob)
    manifest = {
        "format_version": FORMAT_VERSION, "collection": name, "built_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "build": build or {},
        "tasks": {r.name: {"metric": r.metric, **{k: len(v) for k, v in r.splits.items()}} for r in records},
        "num_tasks": len(records), "num_examples": sum(r.num_examples() for r in records),
        "dropped": dict(sorted((dropped or {}).items())),
        "decontaminated": dict(sorted((decontaminated or {}).items())),
        "removed_examples": dict(sorted((removed_examples or {}).items())),
    }
    with atomic_dir(path, force=True) as tmp:
        atomic_write_bytes(tmp / "examples.bin", b"".join(blobs))
        atomic_write_bytes(tmp / "tasks.json", json.dumps(metas, ensure_ascii=False).encode())
        deco = "".join(f"{k}\t{v}\n" for k, v in manifest["decontaminated"].items())
        atomic_write_bytes(tmp / "decontaminated.txt", deco.encode())
        atomic_write_bytes(tmp / "manifest.json", (json.dumps(manifest, indent=1) + "\n").encode())
    return path


def content_digest(path: Path) -> str:
    """SHA-256 of a built collection's data (``tasks.json`` and ``examples.bin``, not the manifest, whose build
    time and duration differ between two builds of the same data): the same on every machine that builds it."""
    import hashlib

    h = hashlib.sha256()
    for name in ("tasks.json", "examples.bin"):
        with open(path / name, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def read_manifest(path: Path) -> dict[str, Any] | None:
    """The manifest of the collection folder ``path``, or ``None`` if absent, unreadable or outdated."""
    try:
        manifest = json.loads((path / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(manifest, dict) or manifest.get("format_version") != FORMAT_VERSION:
        return None
    return manifest


def load_cached(path: Path) -> list[TaskRecord] | None:
    """Load the collection stored at ``path`` (examples decoded lazily, per task, on first use).

    Returns ``None`` if it is missing or was written by another format version.
    """
    if read_manifest(path) is None:
        return None
    try:
        metas = json.loads((path / "tasks.json").read_bytes())
    except (OSError, ValueError) as e:
        raise DataError(f"cached collection {path} is corrupt ({e}); rebuild it with `t2l data fetch "
                        f"{path.name}`") from None
    blob_path = path / "examples.bin"
    out = []
    for d in metas:
        splits = LazySplits(blob_path, d["offset"], d["length"], d["split_names"])
        rec = object.__new__(TaskRecord)  # validated when built; skip __post_init__ for speed
        rec.name, rec.source, rec.license, rec.citation = d["name"], d["source"], d["license"], d["citation"]
        rec.metric, rec.eval_split, rec.info = d["metric"], d.get("eval_split", "test"), d.get("info") or {}
        rec.train_descriptions, rec.heldout_descriptions = d["train_descriptions"], d["heldout_descriptions"]
        rec.splits = splits
        out.append(rec)
    return out


def task_slug(name: str) -> str:
    """A flat directory name for a task (``bigbench/a/b`` -> ``bigbench__a__b``): how adapter libraries
    name their per-task sub-directories."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name.replace("/", "__"))
