"""Training tasks made by reasoning-gym's procedural generators (``reasoning-gym==0.1.25``, Apache-2.0).

Every generator with a reference answer is one task ``reasoning/<generator>`` (``reasoning/gcd``,
``reasoning/maze``): :data:`EXAMPLES_PER_TASK` examples from a seed of its own (:func:`task_seed`, a hash of
the task name and the build seed), so the collection is the same on every machine. The package and its
pinned dependencies are installed into the cache (:func:`text2lora.data.fetch.ensure_installed`), never into
the project's environment, and the generators run in a subprocess (``PYTHONHASHSEED=0``: five of them
iterate over sets) that writes JSON; see ``_reasoning_worker.py``.

Dropped, with the reason in the manifest: the generators without a reference answer (reasoning-gym
scores them with a verifier only), the reserved ones (:mod:`text2lora.data.reserved`), ``gsm_symbolic``
(:data:`EXCLUDED`: GSM8K's test questions with new numbers), a generator that fails, or one with fewer than
``min_examples`` distinct questions or ``min_descriptions`` descriptions.

The question of a reasoning-gym example states its own task and answer form. Where every question of a
generator opens and/or closes with the same text (:func:`split_instruction`), that text is the task's
instruction: it goes to ``meta["instruction"]`` (opening and closing joined by a blank line) and the
prompt keeps the bare input, so a recipe decides whether to show it. Elsewhere the question stays whole.
The target is the reference answer (metric ``exact_match``; every accepted answer in ``meta["targets"]``
where the generator lists them).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Callable, Iterable

from ...errors import DataError
from ..records import Example, TaskRecord
from ..reserved import REASON as RESERVED_REASON, is_reserved
from .bigbench import split_examples

__all__ = ["EXAMPLES_PER_TASK", "MIN_EXAMPLES", "HELDOUT_TASKS", "EXCLUDED", "NO_ANSWER", "task_seed",
           "split_instruction", "tasks_from_rows", "run_worker", "generate", "build_reasoning"]

#: Examples generated per task (before duplicate questions are removed).
EXAMPLES_PER_TASK = 300
#: Fewer distinct questions than this and the task is dropped.
MIN_EXAMPLES = 50
_CITATION = ("reasoning-gym=={version} (Stojanovski et al. 2025, Reasoning Gym: Reasoning Environments for "
             "Reinforcement Learning with Verifiable Rewards, arXiv:2505.24760); generator {generator}")
_WORKER = Path(__file__).with_name("_reasoning_worker.py")

#: Tasks held out whole (never trained on): validation and the held-out-task table, about a tenth.
HELDOUT_TASKS: tuple[str, ...] = tuple(f"reasoning/{g}" for g in (
    "lcm", "decimal_chain_sum", "spell_backward", "number_sorting", "caesar_cipher", "maze", "base_conversion",
    "simple_equations", "largest_island", "knights_knaves"))

NO_ANSWER = "no reference answer (reasoning-gym scores it with a verifier only)"

#: Generators that are never tasks, with the reason (beside the reserved ones of :mod:`text2lora.data.reserved`).
EXCLUDED = {
    "gsm_symbolic": ("its templates are GSM8K test questions with new names and numbers (GSM-Symbolic, Mirzadeh et "
                     "al. 2024): the gsm8k benchmark's evaluation items"),
    "codeio": ("not the same on every machine: some of the code snippets it runs to make an example read the clock, "
               "so two builds with the same seed differ"),
}


def task_seed(generator: str, seed: int = 0) -> int:
    """The generator's seed: a stable hash (SHA-256, not Python's ``hash``) of its task name and ``seed``."""
    digest = hashlib.sha256(f"reasoning/{generator}:{seed}".encode()).digest()
    return int.from_bytes(digest[:4], "big")


# ----------------------------------------------------------------------------- instruction

_GAP = re.compile(r"[ \t]*\n[ \t\n]*|(?<=[.?!:])[ \t]+")
_LIST_ITEM = re.compile(r"\s*(?:\d+[.)]|[-*•])\s")
_LABEL = re.compile(r"\W*(?:\w+\W*){1,2}:")
_NUMBERING = re.compile(r"\(?[A-Za-z0-9]{1,2}\.")
_ABBREVIATIONS = {"e.g", "i.e", "ex", "etc", "Mr", "Mrs", "Ms", "Dr"}  # as written in prose
_WORD = re.compile(r"[^\W_]+")


def _cuts(text: str) -> set[tuple[int, int]]:
    """The whitespace spans ``(start, end)`` at which ``text`` may be cut into an instruction and an input: a
    line break, or the space after a sentence (``.``, ``?``, ``!``; not after a list number or an
    abbreviation) or after a colon closing three words or more, followed by no lowercase letter. Never inside
    a fenced (`````) block, nor between two list items."""
    fences = [m.start() for m in re.finditer("```", text)]
    inside = list(zip(fences[::2], fences[1::2]))
    out = set()
    for m in _GAP.finditer(text):
        s, e = m.span()
        if s == 0 or e == len(text) or any(a < s < b for a, b in inside):
            continue
        before = text[:s].rsplit("\n", 1)[-1]
        after = text[e:].split("\n", 1)[0]
        if "\n" in m.group():
            if _LIST_ITEM.match(before) and _LIST_ITEM.match(after):
                continue
        else:
            if after[:1].islower():
                continue
            if text[s - 1] == ":":
                if len(_WORD.findall(before)) < 3:
                    continue
            elif text[s - 1] == ".":
                words = before[:-1].split()
                if _NUMBERING.fullmatch(before.strip()) or words and words[-1].strip("(") in _ABBREVIATIONS:
                    continue
        out.add((s, e))
    return out


def _balanced(text: str) -> bool:
    """True when ``text`` closes every bracket it opens and every fenced block: a whole part of a question,
    not a piece of a list or a grid."""
    return all(text.count(a) == text.count(b) for a, b in ("()", "[]", "{}")) and text.count("```") % 2 == 0


def _common(texts: list[str]) -> int:
    return len(os.path.commonprefix(texts))


def split_instruction(questions: list[str]) -> tuple[int, int]:
    """Where the fixed text of a generator's questions ends and starts: ``(lead, tail)`` character counts such
    that every question ``q`` is ``q[:lead]`` (the same opening in all of them) + its input + ``q[len(q) -
    tail:]`` (the same closing); ``(0, 0)`` when there is none.

    Both are cut at a place :func:`_cuts` allows, hold three words or more, close every bracket they open,
    and leave every input non-empty. An opening does not end in a label of one or two words (``Examples:``),
    nor in a short clause introducing a list (``A cube has:``); a closing does not start right after a
    colon. The opening is the longest such text, the closing too. Two questions or more are needed to tell
    what is fixed.
    """
    if len(questions) < 2:
        return 0, 0
    prefix, suffix = _common(questions), _common([q[::-1] for q in questions])
    cuts = [_cuts(q) for q in questions]
    first = questions[0]
    tails = set.intersection(*({len(q) - s for s, _ in c if len(q) - s <= suffix} for q, c in zip(questions, cuts)))
    tail = 0
    for off in sorted(tails, reverse=True):
        text, rest = first[len(first) - off:], first[:len(first) - off]
        if rest.rstrip().endswith(":"):  # what follows a colon belongs to it
            continue
        if len(_WORD.findall(text)) >= 3 and _balanced(text) and all(q[:len(q) - off].strip() for q in questions):
            tail = off
            break
    leads = set.intersection(*({e for _, e in c if e <= prefix} for c in cuts))
    for end in sorted(leads, reverse=True):
        text = first[:end].strip()
        if len(_WORD.findall(text)) < 3 or not _balanced(text) or _LABEL.fullmatch(text.rsplit("\n", 1)[-1]):
            continue
        if (text.endswith(":") and any(_LIST_ITEM.match(q[end:]) for q in questions)
                and len(_WORD.findall(re.split(r"(?<=[.?!])\s+|\n", text)[-1])) < 5):
            continue  # "A cube has:" introduces its list, it does not instruct
        if all(q[end:len(q) - tail].strip() for q in questions):
            return end, tail
    return 0, tail


# ----------------------------------------------------------------------------- records

def tasks_from_rows(generated: dict[str, dict], descriptions: dict[str, dict[str, list[str]]], *, version: str,
                    seed: int = 0, min_examples: int = MIN_EXAMPLES, min_descriptions: int = 10,
                    ) -> tuple[list[TaskRecord], dict[str, str]]:
    """Task records from the worker's output ``{generator: {"category", "rows"} or {"error"}}``; returns (kept,
    {dropped task name: reason}). ``descriptions`` maps a generator name to ``{"train": [...], "heldout": [...]}``."""
    kept: list[TaskRecord] = []
    dropped: dict[str, str] = {}
    for gen, out in generated.items():
        name = f"reasoning/{gen}"
        if "error" in out:
            dropped[name] = f"the generator failed: {out['error']}"
            continue
        rows = out["rows"]
        if rows and all(r.get("answer") is None for r in rows):
            dropped[name] = NO_ANSWER
            continue
        unique: dict[str, dict] = {}
        for r in rows:
            q = str(r["question"]).strip()
            if r.get("answer") is not None and str(r["answer"]).strip() and q:
                unique.setdefault(q, r)
        if len(unique) < min_examples:
            dropped[name] = (f"only {len(unique)} distinct questions with an answer (< {min_examples}) of "
                             f"{len(rows)} generated")
            continue
        descs = descriptions.get(gen, {})
        train_d, held_d = list(descs.get("train", [])), list(descs.get("heldout", []))
        if len(train_d) < min_descriptions:
            dropped[name] = f"only {len(train_d)} descriptions (< {min_descriptions})"
            continue
        questions = list(unique)
        lead, tail = split_instruction(questions)
        first = questions[0]
        instruction = "\n\n".join(p for p in (first[:lead].strip(), first[len(first) - tail:].strip()) if p)
        examples = []
        for q, r in unique.items():
            answer = str(r["answer"]).strip()
            meta: dict = {"instruction": instruction} if instruction else {}
            targets = list(dict.fromkeys([answer, *(str(t).strip() for t in r.get("targets") or ())]))
            if len(targets) > 1:
                meta["targets"] = targets
            examples.append(Example(prompt=q[lead:len(q) - tail].strip(), response=answer, meta=meta))
        train, val = split_examples(examples, name, None, seed)
        kept.append(TaskRecord(
            name=name, source="reasoning", license="Apache-2.0",
            citation=_CITATION.format(version=version, generator=gen), metric="exact_match",
            train_descriptions=train_d, heldout_descriptions=held_d, splits={"train": train, "validation": val},
            info={"num_examples_total": len(examples), "num_generated": len(rows), "category": out.get("category"),
                  "version": version, "generator_seed": task_seed(gen, seed),
                  "instruction": {"lead": bool(lead), "tail": bool(tail)}, "heldout_task": name in HELDOUT_TASKS}))
    return kept, dropped


# ----------------------------------------------------------------------------- generation

def run_worker(pythonpath: str | Path, request: dict, on_line: Callable[[str], None] | None = None) -> dict:
    """Run ``_reasoning_worker.py`` with ``request`` in a fresh interpreter (``PYTHONPATH=pythonpath``,
    ``PYTHONHASHSEED=0``, no user site) and return the JSON it wrote; ``on_line`` gets each line it prints."""
    with tempfile.TemporaryDirectory(prefix="t2l-reasoning-") as tmp:
        out, log = Path(tmp) / "out.json", Path(tmp) / "stderr.txt"
        env = {**os.environ, "PYTHONPATH": str(pythonpath), "PYTHONHASHSEED": "0", "PYTHONNOUSERSITE": "1"}
        source = _WORKER.read_text(encoding="utf-8")
        cmd = [sys.executable, "-s", "-c", source, json.dumps({**request, "out": str(out)})]
        with open(log, "w", encoding="utf-8") as err:
            proc = subprocess.Popen(cmd, cwd=tmp, env=env, stdout=subprocess.PIPE, stderr=err, text=True)
            assert proc.stdout is not None
            for line in proc.stdout:
                if on_line:
                    on_line(line.strip())
            rc = proc.wait()
        if rc != 0 or not out.is_file():
            tail = [ln for ln in log.read_text(encoding="utf-8", errors="replace").splitlines() if ln.strip()][-1:]
            raise DataError(f"reasoning-gym failed to run from {pythonpath} ({tail[0] if tail else f'exit {rc}'}); "
                            f"delete that folder to reinstall it, then retry `t2l data fetch reasoning`")
        return json.loads(out.read_text(encoding="utf-8"))


def generate(pythonpath: str | Path, names: Iterable[str], *, seed: int = 0, size: int = EXAMPLES_PER_TASK,
             quiet: bool = True) -> dict[str, dict]:
    """The worker's output for the generators ``names``: ``size`` examples each, from :func:`task_seed`."""
    from tqdm.auto import tqdm

    tasks = {n: task_seed(n, seed) for n in names}
    with tqdm(total=len(tasks), desc="reasoning generators", unit="task", disable=quiet) as bar:
        return run_worker(pythonpath, {"mode": "generate", "tasks": tasks, "size": size},
                          on_line=lambda line: bar.update(line.startswith("done ")))


def build_reasoning(descriptions: dict[str, dict[str, list[str]]], *, quiet: bool = True, seed: int = 0,
                    max_examples: int | None = None, min_examples: int = MIN_EXAMPLES, min_descriptions: int = 10,
                    only: Iterable[str] | None = None) -> tuple[list[TaskRecord], dict[str, str]]:
    """Install reasoning-gym (once), run its generators and return (kept task records, {dropped: reason}).

    ``max_examples``: examples generated per task (default :data:`EXAMPLES_PER_TASK`); ``only``: these
    generators (``gcd`` or ``reasoning/gcd``). A name in ``only`` that is reserved or not a generator raises
    :class:`DataError` naming it.
    """
    from ..fetch import INSTALLS, ensure_installed

    wanted = None if only is None else [n.removeprefix("reasoning/") for n in only]
    reserved = [n for n in wanted or () if is_reserved(f"reasoning/{n}")]
    if reserved:
        raise DataError(f"reserved for evaluation, never a training task: {', '.join(reserved)}; remove them from "
                        "the list")
    excluded = [f"{n} ({EXCLUDED[n]})" for n in wanted or () if n in EXCLUDED]
    if excluded:
        raise DataError(f"never a training task: {'; '.join(excluded)}; remove it from the list")
    path = ensure_installed("reasoning_gym", quiet=quiet)
    listing = run_worker(path, {"mode": "list"})
    version = INSTALLS["reasoning_gym"].version
    if listing["version"] != version:
        raise DataError(f"{path} holds reasoning-gym {listing['version']}, not the pinned {version}; delete the "
                        "folder and retry")
    names = list(listing["generators"])
    unknown = [n for n in wanted or () if n not in listing["generators"]]
    if unknown:
        raise DataError(f"not a reasoning-gym generator: {', '.join(unknown)}; known: {', '.join(names)}")
    names = names if wanted is None else wanted
    dropped = {f"reasoning/{n}": RESERVED_REASON for n in names if is_reserved(f"reasoning/{n}")}
    dropped.update({f"reasoning/{n}": EXCLUDED[n] for n in names if n in EXCLUDED})
    size = EXAMPLES_PER_TASK if max_examples is None else max_examples
    generated = generate(path, [n for n in names if f"reasoning/{n}" not in dropped], seed=seed, size=size,
                         quiet=quiet)
    kept, more = tasks_from_rows(generated, descriptions, version=version, seed=seed,
                                 min_examples=min(min_examples, max(1, size // 2)), min_descriptions=min_descriptions)
    return kept, {**dropped, **more}
