"""The paper's multiple-choice protocol: the choices listed with labels, the greedy answer read for one.

The default protocol (``--mc-protocol loglik``) scores each choice by its log-likelihood after the
question, which measures what the model knows whatever format it would answer in. The paper's
evaluator instead lists the labelled choices in the prompt, asks for the label only, decodes greedily
and counts the answer right when it starts with the gold label (``--mc-protocol labels``). That also
measures whether the model follows the answer format, which is where adapters trained on many tasks
gain most over an instruction-tuned base.

Labels are letters (``A``, ``B``, ...), except for yes/no (and true/false) questions such as BoolQ,
whose answers are their own labels. :func:`read_label` is the paper's rule made strict about
word boundaries ("Because ..." is not the label ``B``); :func:`read_choice_text` is a lenient second
reading that also accepts the text of a choice, kept in the results as ``correct_text``.
"""

from __future__ import annotations

import re
from dataclasses import replace
from typing import Sequence

from ..data import Example, TaskRecord
from ..errors import DataError

__all__ = ["choice_labels", "labelled_example", "labelled_task", "read_label", "read_choice_text", "answer_done"]

_LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
_LEAD = re.compile(r"^[\s\"'`*(\[]*(?:(?:the\s+)?(?:correct\s+)?(?:answer|choice|option|label)(?:\s+is)?\s*[:\-]?\s*)?"
                   r"[\s\"'`*(\[]*", re.I)
_WORD_ANSWERS = {"yes", "no", "true", "false"}


def choice_labels(choices: Sequence[str]) -> list[str]:
    """The label of each choice: the choice itself for yes/no (or true/false) questions, else a letter."""
    words = [c.strip().lower() for c in choices]
    if set(words) <= _WORD_ANSWERS and len(set(words)) == len(words):
        return words
    if len(choices) > len(_LETTERS):
        raise DataError(f"{len(choices)} choices: at most {len(_LETTERS)} can be labelled with letters; evaluate this "
                        "task with --mc-protocol loglik")
    return list(_LETTERS[: len(choices)])


def _or_list(labels: Sequence[str]) -> str:
    return ", ".join(labels[:-1]) + f" or {labels[-1]}" if len(labels) > 1 else labels[0]


def labelled_example(ex: Example) -> Example:
    """``ex`` with its choices listed under the question and the gold label as the response."""
    if ex.choices is None:
        return ex
    labels = choice_labels(ex.choices)
    if labels[0] in _WORD_ANSWERS:  # yes/no: the answers are the labels, nothing to list
        prompt = f"{ex.prompt}\n\nAnswer with one word, {_or_list(labels)}, and nothing else."
    else:
        listed = "\n".join(f"{lab}: {c}" for lab, c in zip(labels, ex.choices))
        prompt = (f"{ex.prompt}\n\n{listed}\n\n"
                  f"Answer with the label of the correct choice ({_or_list(labels)}) and nothing else.")
    return replace(ex, prompt=prompt, response=labels[ex.gold], meta={**(ex.meta or {}), "labels": labels})


def labelled_task(task: TaskRecord) -> TaskRecord:
    """``task`` with every multiple-choice example in the labelled format (in-context shots included)."""
    if not task.is_multiple_choice:
        return task
    return replace(task, splits={k: [labelled_example(e) for e in v] for k, v in task.splits.items()})


def _norm(text: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"[^\w\s]", " ", text.lower())).strip()


def read_label(completion: str, labels: Sequence[str]) -> int | None:
    """Index of the label the answer starts with (after an optional "Answer:"-like lead-in), else None."""
    text = _LEAD.sub("", completion, count=1)
    for i in sorted(range(len(labels)), key=lambda j: -len(labels[j])):
        lab = labels[i]
        if text[: len(lab)].lower() == lab.lower() and (len(text) == len(lab) or not text[len(lab)].isalnum()):
            return i
    return None


def read_choice_text(completion: str, choices: Sequence[str], labels: Sequence[str]) -> int | None:
    """The label reading, else the choice whose text the answer is or starts with (longest wins, ties: None)."""
    i = read_label(completion, labels)
    if i is not None:
        return i
    answer = _norm(completion)
    if not answer:
        return None
    texts = [_norm(c) for c in choices]
    exact = [j for j, t in enumerate(texts) if t and t == answer]
    if len(exact) == 1:
        return exact[0]
    starts = [j for j, t in enumerate(texts) if t and (answer + " ").startswith(t + " ")]
    if not starts:
        return None
    best = max(len(texts[j]) for j in starts)
    longest = [j for j in starts if len(texts[j]) == best]
    return longest[0] if len(longest) == 1 else None


def answer_done(completion: str) -> bool:
    """Stop rule for labelled answers: the first line of the answer is complete."""
    return "\n" in completion.lstrip()
