"""Exact-answer tasks of OpenAI's evals registry, read from the ``evals==3.0.1.post1`` wheel (never installed).

The wheel holds the task data under ``evals/registry/data/<folder>/*.jsonl`` (one sample a line:
``{"input": [chat messages], "ideal": answer}``) and the evals that use it under
``evals/registry/evals/*.yaml`` (each names its class and its ``samples_jsonl``). A samples file becomes a
task when an eval of an exact-answer class (:data:`EXACT_CLASSES`: Match, Includes, FuzzyMatch,
JsonMatch) reads it; files only model-graded or custom evals read, few-shot files and files no eval reads
are dropped with the reason. Task names are ``evals/<folder>`` (the samples file's folder under
``registry/data``), or ``evals/<folder>/<file stem>`` when several exact-answer samples files share a
folder.

An example keeps the instruction beside the input, not in it (:func:`convert_sample`):

- ``Example.meta["instruction"]``: the task's instruction, the plain system message that opens the
  conversation (and any plain system message after the last user turn), absent when there is none;
  a task whose opening system message differs in most samples carries its data there, not an
  instruction, and keeps it in the prompt (``info["instruction"]`` says which: ``separate``,
  ``in_prompt`` or ``none``);
- ``Example.prompt``: the bare input, the last user message, after the other turns as plain text
  (a user turn answered by an assistant turn, the registry's few-shot form, as ``Example input:`` /
  ``Example answer:`` lines; other user or system messages as they are); an input that repeats the
  instruction word for word loses the repetition;
- ``Example.response``: the reference answer ``ideal``; a list of accepted answers keeps its first as
  the target and all of them in ``meta["targets"]``.

Every task records its licence: MIT (the repository's) unless the wheel's ``LICENSE.md`` lists the
folder with licences of its own; a task whose licences forbid commercial use (``NonCommercial``,
``NC``) or that the list names in words not recognised is dropped. Reserved tasks
(:mod:`text2lora.data.reserved`) are dropped before their data is read. A samples file with a broken
line (invalid JSON, no input, no answer, a message that is not text) is dropped with the line and the
reason; exact duplicate samples are removed. A task whose most common answer is the answer of at least
:data:`MAX_ANSWER_SHARE` of its examples (the registry's lexicon tasks answer ``Y`` to every word) is
dropped: its input does not decide its answer, so it would teach a generator one constant reply. Each
kept task keeps at most ``max_examples`` examples (seeded subset, original order) split 90% train / 10%
validation (at least 10, at most 100), as the other collections do; metric ``exact_match``.
"""

from __future__ import annotations

import json
import posixpath
import re
from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import Any, Iterable

from ...errors import DataError
from ..records import Example, TaskRecord
from ..reserved import REASON as RESERVED_REASON
from ..reserved import is_reserved
from .archive import Tree, open_tree
from .bigbench import split_examples

__all__ = ["EXACT_CLASSES", "MIN_EXAMPLES", "MAX_ANSWER_SHARE", "MAX_EXAMPLES", "MIN_DESCRIPTIONS", "MIN_HELDOUT",
           "EvalSpec", "BrokenSample", "read_registry", "read_licences", "licence_of", "convert_sample", "instruction_varies",
           "read_samples", "english_share", "task_names", "one_answer", "build_evals"]

#: Eval classes whose score compares the answer with the reference answer (``ideal``).
EXACT_CLASSES = ("Match", "Includes", "FuzzyMatch", "JsonMatch")
MIN_EXAMPLES = 100
#: A task whose most common answer (case and surrounding space ignored) is this share of its examples is dropped.
MAX_ANSWER_SHARE = 0.9
MAX_EXAMPLES = 500
MIN_DESCRIPTIONS = 10
MIN_HELDOUT = 3
REPO_LICENSE = "MIT"
_DATA = "evals/registry/data"
_EVALS = "evals/registry/evals"
_LICENSE_FILE = "evals-3.0.1.post1.dist-info/LICENSE.md"
_CITATION = "OpenAI Evals (evals==3.0.1.post1), "
_SHOT_NAMES = {"example_user": "user", "example_assistant": "assistant"}


@dataclass(frozen=True)
class EvalSpec:
    """One eval of the registry: its name, class, the samples file it reads and its description."""

    name: str
    """The eval's id, e.g. ``2d_movement.dev.v0``."""
    cls: str
    """The class name without its module, e.g. ``Match``."""
    samples: str
    """The samples file, relative to ``evals/registry/data``."""
    description: str = ""
    """The description the registry gives the eval (or its alias), if any."""
    few_shot: str = ""
    """The few-shot file the eval reads, relative to ``evals/registry/data``, if any."""
    yaml_file: str = ""
    """The registry file that defines it, relative to ``evals/registry/evals``."""


class BrokenSample(DataError):
    """A line of a samples file that cannot become an example (the message says why)."""


# ----------------------------------------------------------------------------- registry

def read_registry(tree: Tree) -> list[EvalSpec]:
    """Every eval of the registry's YAML files that reads a samples file (``args.samples_jsonl``)."""
    import yaml

    specs = []
    for rel in tree.listdir(_EVALS):
        if not rel.endswith((".yaml", ".yml")):
            continue
        where = f"{tree.path}!{_EVALS}/{rel}"
        try:
            doc = yaml.safe_load(tree.read(f"{_EVALS}/{rel}"))
        except yaml.YAMLError as e:
            raise DataError(f"{where} is not valid YAML ({e}); is it the right package version?") from None
        if not isinstance(doc, dict):
            continue
        described = {v["id"]: str(v.get("description") or "") for v in doc.values()
                     if isinstance(v, dict) and isinstance(v.get("id"), str)}
        for key, val in doc.items():
            if not isinstance(val, dict) or not isinstance(val.get("class"), str):
                continue
            args = val.get("args") if isinstance(val.get("args"), dict) else {}
            samples = args.get("samples_jsonl")
            if not isinstance(samples, str):
                continue
            few = args.get("few_shot_jsonl")
            specs.append(EvalSpec(name=str(key), cls=val["class"].rsplit(":", 1)[-1].rsplit(".", 1)[-1],
                                  samples=samples.strip("/"),
                                  description=str(val.get("description") or described.get(str(key), "")),
                                  few_shot=few.strip("/") if isinstance(few, str) else "", yaml_file=rel))
    return specs


def _stem(path: str) -> str:
    return posixpath.splitext(posixpath.basename(path))[0]


def task_names(samples_files: Iterable[str]) -> dict[str, str]:
    """Task name of each samples file: ``evals/<folder>``, or ``evals/<folder>/<stem>`` when the folder
    holds several of the files."""
    files = sorted(set(samples_files))
    per_folder: dict[str, int] = defaultdict(int)
    for f in files:
        per_folder[posixpath.dirname(f)] += 1
    return {f: f"evals/{posixpath.dirname(f)}" + (f"/{_stem(f)}" if per_folder[posixpath.dirname(f)] > 1 else "")
            for f in files}


# ----------------------------------------------------------------------------- licences

_LICENCE_NAMES = (  # (pattern in the licence's words, short name); first match wins
    (r"Open Data Commons Attribution", "ODC-By-1.0"),
    (r"\bCC0\b", "CC0-1.0"),
    (r"Attribution-ShareAlike 3\.0|CC BY-SA", "CC-BY-SA-3.0 AND GFDL"),
    (r"Creative Commons Attribution 4\.0", "CC-BY-4.0"),
    (r"\bMIT License\b", "MIT"),
    (r"Apache License 2\.0", "Apache-2.0"),
    (r"\bPublic Domain\b", "public domain"),
    (r"\bWordNet License\b", "WordNet"),
)


def _licence_name(words: str) -> str | None:
    """The short name of a licence written in words, ``"NC"`` for a non-commercial one, ``None`` if unknown."""
    if re.search(r"non-?commercial", words, re.IGNORECASE) or re.search(r"\bNC\b", words):
        return "NC"
    return next((short for pattern, short in _LICENCE_NAMES if re.search(pattern, words, re.IGNORECASE)), None)


def read_licences(text: str) -> dict[str, list[tuple[str, str]]]:
    """``{folder: [(component, licence in words), ...]}`` for each ``Location`` of the wheel's LICENSE.md."""
    out: dict[str, list[tuple[str, str]]] = {}
    folder = component = None
    for line in text.splitlines():
        loc = re.search(r"\*\*Location\*\*:\s*(\S+)", line)
        if loc:
            folder = loc.group(1).strip("/").removeprefix(_DATA + "/").split("/")[0]
            out[folder] = []
            continue
        comp = re.match(r"\s*- \*\*(.+?)\*\*:\s*$", line)
        if comp and folder is not None:
            component = comp.group(1)
            continue
        lic = re.search(r"\*\*License\*\*:\s*(.+)", line)
        if lic and folder is not None:
            out[folder].append((component or folder, lic.group(1).strip()))
        if line.startswith("#### "):
            folder = component = None
    return out


def licence_of(folder: str, licences: dict[str, list[tuple[str, str]]]) -> tuple[str | None, str]:
    """(licence, why not usable): the licence of a data folder, or ``None`` with the reason it is dropped."""
    listed = licences.get(folder.split("/")[0])
    if listed is None:
        return REPO_LICENSE, ""
    if not listed:
        return None, "LICENSE.md lists the folder without a licence (licence unknown)"
    names = []
    for component, words in listed:
        short = _licence_name(words)
        words = re.sub(r"\s*https?://\S+", "", words).strip(" :")[:80]  # the licence's name, not its address
        if short == "NC":
            return None, f"licence forbids commercial use ({component}: {words})"
        if short is None:
            return None, f"licence unknown ({component}: {words})"
        names.append(short)
    return " AND ".join(dict.fromkeys(names)), ""


# ----------------------------------------------------------------------------- samples

def _messages(raw: Any) -> list[tuple[str, str, bool]]:
    """(role, text, plain system message) for each message of an ``input``; shots named as system messages
    (``name: example_user``) become user and assistant turns."""
    if isinstance(raw, str):
        return [("user", raw, False)]
    if not isinstance(raw, list) or not raw:
        raise BrokenSample("'input' is neither a message list nor text")
    out = []
    for i, msg in enumerate(raw):
        if not isinstance(msg, dict) or not isinstance(msg.get("content"), str):
            raise BrokenSample(f"message {i + 1} of 'input' has no text content")
        role = str(msg.get("role", ""))
        if role not in ("system", "user", "assistant"):
            raise BrokenSample(f"message {i + 1} of 'input' has the unknown role {role!r}")
        name = msg.get("name")
        role = _SHOT_NAMES.get(name, role) if role == "system" and name else role
        out.append((role, msg["content"], role == "system" and not name))
    return out


def _answers(ideal: Any) -> list[str]:
    """The accepted answers of ``ideal``: text as is, numbers as digits, JSON values as JSON text."""
    items = ideal if isinstance(ideal, list) else [] if ideal is None else [ideal]
    answers = []
    for a in items:
        if isinstance(a, str):
            answers.append(a.strip())
        elif isinstance(a, (int, float)) and not isinstance(a, bool):
            answers.append(str(a))
        elif isinstance(a, (dict, list)):
            answers.append(json.dumps(a, ensure_ascii=False))
    answers = list(dict.fromkeys(a for a in answers if a))
    if not answers:
        raise BrokenSample("no answer ('ideal' is missing or empty)")
    return answers


def _join(parts: list[str]) -> str:
    out = ""
    for i, part in enumerate(parts):
        if i:
            out += "\n" if "\n" not in parts[i - 1] and "\n" not in part else "\n\n"
        out += part
    return out


def convert_sample(obj: Any, *, separate_instruction: bool = True) -> Example:
    """One samples line as an :class:`Example`: bare input as the prompt, the instruction in
    ``meta["instruction"]`` (with ``separate_instruction``; otherwise it opens the prompt), ``ideal`` as
    the target. Raises :class:`BrokenSample` saying what is wrong with the line."""
    if not isinstance(obj, dict):
        raise BrokenSample("the line is not a JSON object")
    if "input" not in obj:
        raise BrokenSample("no 'input'")
    answers = _answers(obj.get("ideal"))
    msgs = _messages(obj["input"])
    users = [i for i, (role, _, _) in enumerate(msgs) if role == "user"]
    last = users[-1] if users else len(msgs) - 1  # system messages only: the last one asks
    if any(role == "assistant" for role, _, _ in msgs[last:]):
        raise BrokenSample("'input' ends with an assistant turn, not a question")
    instr_idx = [i for i, (_, text, plain) in enumerate(msgs) if plain and (i == 0 and last > 0 or i > last)]
    instruction = "\n\n".join(msgs[i][1].strip() for i in instr_idx if msgs[i][1].strip())
    parts: list[str] = []
    body = [i for i in range(len(msgs)) if i not in instr_idx]
    for pos, i in enumerate(body):
        role, text, _ = msgs[i]
        text = text.strip()
        nxt = msgs[body[pos + 1]] if pos + 1 < len(body) else None
        if role == "user" and i != last and nxt is not None and nxt[0] == "assistant":
            parts.append(f"Example input: {text}\nExample answer: {nxt[1].strip()}")
        elif role == "assistant" and pos > 0 and msgs[body[pos - 1]][0] == "user" and body[pos - 1] != last:
            continue  # rendered with its user turn
        elif role == "assistant":
            parts.append(f"Example answer: {text}")
        elif text:
            parts.append(text)
    prompt = _join(parts)
    for i in instr_idx:  # some samples repeat the instruction inside the input: it stays beside it only
        repeated = msgs[i][1].strip()
        if repeated and repeated in prompt:
            prompt = re.sub(r"\n{3,}", "\n\n", prompt.replace(repeated, "")).strip()
    if not prompt.strip():
        raise BrokenSample("the input is empty once the instruction is set apart")
    if instruction and not separate_instruction:
        prompt = f"{instruction}\n\n{prompt}"
    meta: dict[str, Any] = {}
    if instruction and separate_instruction:
        meta["instruction"] = instruction
    if len(answers) > 1:
        meta["targets"] = answers
    return Example(prompt=prompt, response=answers[0], meta=meta)


def _opening_system(obj: Any) -> str | None:
    raw = obj.get("input") if isinstance(obj, dict) else None
    if isinstance(raw, list) and raw and isinstance(raw[0], dict) and raw[0].get("role") == "system" \
            and not raw[0].get("name"):
        return str(raw[0].get("content"))
    return None


def instruction_varies(objs: list[Any]) -> bool:
    """True when the opening system message differs in most samples: it carries each sample's data."""
    texts = [_opening_system(o) for o in objs]
    distinct = len({t for t in texts if t is not None})
    return distinct > max(10, len(objs) // 5)


_ENGLISH = frozenset("the a an of to and in is are what which that this for with on be it you your".split())


def _looks_english(text: str) -> bool:
    letters = [c for c in text if c.isalpha()]
    if not letters or sum(c.isascii() for c in letters) < 0.9 * len(letters):
        return False
    words = re.findall(r"[a-z]+", text.lower())
    return sum(w in _ENGLISH for w in words) >= max(1, len(words) // 20)


def english_share(examples: list[Example], n: int = 50) -> float:
    """Share of (up to ``n`` evenly spread) examples whose input reads as English (ASCII letters and common
    English words): a cheap language check, recorded as ``info["english_share"]``."""
    if not examples:
        return 0.0
    step = max(1, len(examples) // n)
    picked = examples[::step][:n]
    return round(sum(_looks_english(e.prompt + " " + e.meta.get("instruction", "")) for e in picked) / len(picked), 2)


def read_samples(tree: Tree, rel: str) -> tuple[list[Example], dict[str, Any]]:
    """Examples of one samples file (relative to ``evals/registry/data``) and facts for ``info``.

    Raises :class:`DataError` naming the first broken line, its number and the count of broken lines.
    """
    where = f"{_DATA}/{rel}"
    try:
        text = tree.read(where).decode("utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"{where} is not UTF-8 text ({e.reason} at byte {e.start})") from None
    objs, broken = [], []
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            objs.append((lineno, json.loads(line)))
        except json.JSONDecodeError as e:
            broken.append((lineno, f"invalid JSON ({e.msg})"))
    varies = instruction_varies([o for _, o in objs])
    examples = []
    for lineno, obj in objs:
        try:
            examples.append(convert_sample(obj, separate_instruction=not varies))
        except BrokenSample as e:
            broken.append((lineno, str(e)))
    if broken:
        broken.sort()
        lineno, why = broken[0]
        raise DataError(f"{len(broken)} broken line(s) in {rel}, the first at line {lineno}: {why}")
    seen: set[str] = set()
    unique = []
    for ex in examples:
        key = json.dumps([ex.prompt, ex.meta.get("instruction"), ex.response], ensure_ascii=False)
        if key not in seen:
            seen.add(key)
            unique.append(ex)
    mode = "in_prompt" if varies else ("separate" if any("instruction" in e.meta for e in unique) else "none")
    return unique, {"instruction": mode, "duplicates_removed": len(examples) - len(unique)}


# ----------------------------------------------------------------------------- build

def _dropped_files(tree: Tree, specs: list[EvalSpec], candidates: dict[str, list[EvalSpec]]) -> dict[str, str]:
    """Why each data file (or whole folder) of the registry that is not a candidate is not a task."""
    used_by: dict[str, set[str]] = defaultdict(set)
    few_shot_of: dict[str, set[str]] = defaultdict(set)
    for s in specs:
        used_by[s.samples].add(s.cls)
        if s.few_shot:
            few_shot_of[s.few_shot].add(s.name)
    files = [f for f in tree.listdir(_DATA) if f.endswith(".jsonl") and f not in candidates]
    folders_with_tasks = {f.split("/")[0] for f in candidates}
    by_folder: dict[str, list[str]] = defaultdict(list)
    for f in files:
        by_folder[f.split("/")[0]].append(f)
    dropped: dict[str, str] = {}
    for folder, fs in sorted(by_folder.items()):
        if is_reserved(f"evals/{folder}"):
            dropped[f"evals/{folder}"] = RESERVED_REASON
            continue
        if folder not in folders_with_tasks:
            classes = sorted({c for f in fs for c in used_by.get(f, ())})
            dropped[f"evals/{folder}"] = (f"no exact-answer eval reads its files (read by: {', '.join(classes)})"
                                          if classes else "no exact-answer eval reads its files")
            continue
        for f in fs:
            name = f"evals/{posixpath.dirname(f)}/{_stem(f)}"
            if f in few_shot_of:
                dropped[name] = f"few-shot examples of {', '.join(sorted(few_shot_of[f]))}"
            elif f in used_by:
                dropped[name] = f"not read by an exact-answer eval (read by: {', '.join(sorted(used_by[f]))})"
            else:
                dropped[name] = "no eval reads it"
    return dropped


def one_answer(examples: list[Example], max_share: float = MAX_ANSWER_SHARE) -> str | None:
    """Why a task is dropped for answering (nearly) every input alike, or ``None`` when its answers vary."""
    counts = Counter(e.response.strip().casefold() for e in examples)
    answer, n = counts.most_common(1)[0]
    if n < max_share * len(examples):
        return None
    shown = next(e.response.strip() for e in examples if e.response.strip().casefold() == answer)
    return (f"one answer ({shown!r}) for {n} of {len(examples)} examples (at least {max_share:.0%}): the input "
            "does not decide the answer")


def build_evals(wheel: str, descriptions: dict[str, dict[str, list[str]]], *, min_examples: int = MIN_EXAMPLES,
                max_examples: int | None = MAX_EXAMPLES, min_descriptions: int = MIN_DESCRIPTIONS,
                min_heldout: int = MIN_HELDOUT, seed: int = 0, only: Iterable[str] | None = None,
                quiet: bool = True) -> tuple[list[TaskRecord], dict[str, str]]:
    """Task records of the exact-answer samples files of the evals wheel; returns (kept, {dropped: reason}).

    ``descriptions`` maps a bare task name (``afrikaans-lexicon``, ``music-theory/triads-samples``) to
    ``{"train": [...], "heldout": [...]}``; a task with fewer than ``min_descriptions`` training or
    ``min_heldout`` held-out descriptions is dropped. ``only`` restricts the build to the named tasks (with
    or without the ``evals/`` prefix); a name that is not a task of the wheel raises :class:`DataError`.
    """
    from tqdm.auto import tqdm

    tree = open_tree(wheel)
    if not tree.exists(_LICENSE_FILE):
        raise DataError(f"{tree.path} has no {_LICENSE_FILE}; is it the evals==3.0.1.post1 wheel? Delete it and "
                        "run `t2l data fetch evals` again")
    licences = read_licences(tree.read(_LICENSE_FILE).decode("utf-8", errors="replace"))
    specs = read_registry(tree)
    exact: dict[str, list[EvalSpec]] = defaultdict(list)
    for s in specs:
        if s.cls in EXACT_CLASSES:
            exact[s.samples].append(s)
    names = task_names(exact)
    dropped = _dropped_files(tree, specs, {f: v for f, v in exact.items() if tree.exists(f"{_DATA}/{f}")})
    wanted = sorted(exact, key=lambda f: names[f])
    if only is not None:
        asked = {n if n.startswith("evals/") else f"evals/{n}" for n in only}
        unknown = asked - set(names.values())
        if unknown:
            raise DataError(f"not a task of the evals wheel: {', '.join(sorted(unknown))}; task names are "
                            "evals/<folder> or evals/<folder>/<file stem> of the exact-answer samples files")
        wanted = [f for f in wanted if names[f] in asked]
    kept: list[TaskRecord] = []
    for rel in tqdm(wanted, desc="evals tasks", unit="task", disable=quiet):
        name, evals_ = names[rel], exact[rel]
        if is_reserved(name):
            dropped[name] = RESERVED_REASON
            continue
        licence, why = licence_of(posixpath.dirname(rel), licences)
        if licence is None:
            dropped[name] = why
            continue
        if not tree.exists(f"{_DATA}/{rel}"):
            dropped[name] = f"samples file {rel} named by {evals_[0].name} is missing from the wheel"
            continue
        try:
            examples, facts = read_samples(tree, rel)
        except DataError as e:
            dropped[name] = str(e)
            continue
        if len(examples) < min_examples:
            dups = facts["duplicates_removed"]
            dropped[name] = f"only {len(examples)} examples (< {min_examples})" + (
                f" once {dups} exact duplicate(s) are removed" if dups else "")
            continue
        why = one_answer(examples)
        if why:
            dropped[name] = why
            continue
        descs = descriptions.get(name.removeprefix("evals/"), {})
        train_d, held_d = list(descs.get("train", [])), list(descs.get("heldout", []))
        if len(train_d) < min_descriptions or len(held_d) < min_heldout:
            dropped[name] = (f"only {len(train_d)} training and {len(held_d)} held-out descriptions "
                             f"(needs {min_descriptions} and {min_heldout})")
            continue
        train, val = split_examples(examples, name, max_examples, seed)
        described = next((s.description for s in evals_ if s.description), "")
        kept.append(TaskRecord(
            name=name, source="evals", license=licence, citation=_CITATION + f"{_DATA}/{rel}",
            metric="exact_match", train_descriptions=train_d, heldout_descriptions=held_d,
            splits={"train": train, "validation": val},
            info={"num_examples_total": len(examples), "package_path": f"{_DATA}/{rel}",
                  "eval_class": sorted({s.cls for s in evals_}), "evals": sorted(s.name for s in evals_),
                  "eval_files": sorted({f"{_EVALS}/{s.yaml_file}" for s in evals_}),
                  "original_description": described, "license": licence, "english_share": english_share(examples),
                  **facts}))
    kept.sort(key=lambda r: r.name)
    return kept, dropped
