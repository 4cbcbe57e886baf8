"""The one function that turns an example into model input, in each evaluation condition.

Conditions:

- ``zero_shot``: the example's prompt as the user turn.
- ``icl``: ``k`` solved examples from the task's train split (fixed seed) as earlier user/assistant
  turns, then the example. Shots that would be missing raise an error; they are never dropped.
- ``description``: the task description, then a blank line, then the example, in the user turn.

Every condition ends with the assistant turn opened by the tokenizer's chat template, followed by
the example's prefill if it has one (GSM8K always gets "Let's think step by step.", as in the
paper). For multiple-choice examples the returned string is what the choices continue.
"""

from __future__ import annotations

import random
from typing import Sequence

from ..errors import DataError
from .records import Example, TaskRecord

__all__ = ["CONDITIONS", "COT_PREFILL", "format_prompt", "icl_shots", "chat_messages"]

CONDITIONS = ("zero_shot", "icl", "description")

#: The chain-of-thought prefill that opens the answer of GSM8K items, as in the paper (and of
#: long-answer training examples under the recipe option ``cot_prefill``).
COT_PREFILL = "Let's think step by step."

#: Default number of in-context examples (the paper's 3-shot baseline).
DEFAULT_SHOTS = 3


def icl_shots(task: TaskRecord, k: int = DEFAULT_SHOTS, seed: int = 0, exclude: Example | None = None) -> list[Example]:
    """``k`` examples of ``task``'s train split chosen by a fixed seed (the same for every example).

    Falls back to the validation split when there is no train split. Raises :class:`DataError` when
    the task has fewer than ``k`` usable examples.
    """
    pool = task.splits.get("train") or task.splits.get("validation") or []
    pool = [e for e in pool if e is not exclude and (exclude is None or e.prompt != exclude.prompt)]
    if len(pool) < k:
        raise DataError(f"task {task.name} has {len(pool)} train examples, fewer than the {k} in-context shots "
                        "asked for; lower the number of shots")
    rng = random.Random(f"icl:{seed}:{task.name}")
    return [pool[i] for i in sorted(rng.sample(range(len(pool)), k))]


def _assistant_text(ex: Example) -> str:
    prefill = ex.meta.get("prefill")
    return f"{prefill} {ex.target}" if prefill else ex.target


def chat_messages(example: Example, condition: str = "zero_shot", *, description: str | None = None,
                  shots: Sequence[Example] = ()) -> list[dict[str, str]]:
    """The chat messages (without the final assistant turn) for ``example`` in ``condition``."""
    if condition not in CONDITIONS:
        raise DataError(f"unknown prompt condition {condition!r}; use one of {', '.join(CONDITIONS)}")
    messages: list[dict[str, str]] = []
    user = example.prompt
    if condition == "icl":
        if not shots:
            raise DataError("the 'icl' condition needs in-context examples: pass shots=... or task=...")
        for shot in shots:
            messages.append({"role": "user", "content": shot.prompt})
            messages.append({"role": "assistant", "content": _assistant_text(shot)})
    elif condition == "description":
        if not description or not description.strip():
            raise DataError("the 'description' condition needs a task description: pass description=... or a "
                            "task with descriptions")
        user = f"{description.strip()}\n\n{example.prompt}"
    messages.append({"role": "user", "content": user})
    return messages


def _plain_template(messages: list[dict[str, str]]) -> str:
    parts = [f"{'User' if m['role'] == 'user' else 'Assistant'}: {m['content']}\n" for m in messages]
    return "".join(parts) + "Assistant:"


def format_prompt(example: Example, tokenizer, condition: str = "zero_shot", *, description: str | None = None,
                  shots: Sequence[Example] = (), task: TaskRecord | None = None, k: int = DEFAULT_SHOTS,
                  seed: int = 0) -> str:
    """The model input for ``example`` in ``condition``, ending where the model's answer begins.

    ``tokenizer`` supplies the chat template (a tokenizer without one gets a plain
    ``User:``/``Assistant:`` layout). With ``task`` given, ``icl`` draws ``k`` shots from its train
    split (seeded) unless ``shots`` is given, and ``description`` defaults to the task's first
    held-out (else training) description.
    """
    if condition == "icl" and not shots and task is not None:
        shots = icl_shots(task, k, seed, exclude=example)
    if condition == "description" and description is None and task is not None:
        pool = task.heldout_descriptions or task.train_descriptions
        description = pool[0] if pool else None
    messages = chat_messages(example, condition, description=description, shots=shots)
    if getattr(tokenizer, "chat_template", None):
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    else:
        text = _plain_template(messages)
    prefill = example.meta.get("prefill")
    if prefill:
        text += prefill
    return text
