"""The task builder shared by the collections this project generates (``worked``, ``programs``).

Each kind of generated example is one task ``<collection>/<kind>``: a maker draws one prompt from a
seeded :class:`random.Random` and returns it with a function that completes the example (called only
for a prompt not drawn before, so a repeated prompt consumes no more of the random stream), or None
for a draw to skip. The builder collects distinct prompts,
splits them like the BIG-bench tasks, and attaches the kind's descriptions. A kind with fewer than
``min_descriptions`` training descriptions is dropped, with the reason.
"""

from __future__ import annotations

import random
from typing import Callable

from ..records import Example, TaskRecord
from .bigbench import split_examples

__all__ = ["EXAMPLES_PER_TASK", "Maker", "build_generated", "pick"]

#: Distinct prompts a generated task has unless ``max_examples`` says otherwise.
EXAMPLES_PER_TASK = 400

#: Draws (prompt, completes the example) from the random stream, or None for a draw to skip.
Maker = Callable[[random.Random], "tuple[str, Callable[[], Example]] | None"]


def build_generated(collection: str, makers: dict[str, Maker],
                    descriptions: dict[str, dict[str, list[str]]], *, heldout: tuple[str, ...], metric: str,
                    citation: str, info: dict[str, dict], seed: int, max_examples: int | None,
                    min_descriptions: int) -> tuple[list[TaskRecord], dict[str, str]]:
    """Task records of ``makers``, ``max_examples`` distinct prompts each (None: :data:`EXAMPLES_PER_TASK`);
    returns (kept, {dropped: reason}). Deterministic for a ``seed``; ``info[kind]`` is added to the record's
    ``info``."""
    max_examples = EXAMPLES_PER_TASK if max_examples is None else max_examples
    kept: list[TaskRecord] = []
    dropped: dict[str, str] = {}
    for kind, make in makers.items():
        name = f"{collection}/{kind}"
        descs = descriptions.get(kind, {})
        train_d, held_d = list(descs.get("train", [])), list(descs.get("heldout", []))
        if len(train_d) < min_descriptions:
            dropped[name] = f"only {len(train_d)} descriptions (< {min_descriptions})"
            continue
        rng = random.Random(f"{seed}:{name}")
        examples: list[Example] = []
        seen: set[str] = set()
        for _ in range(max_examples * 20):
            if len(examples) == max_examples:
                break
            drawn = make(rng)
            if drawn is None or drawn[0] in seen:
                continue
            seen.add(drawn[0])
            examples.append(drawn[1]())
        train, val = split_examples(examples, name, None, seed)
        kept.append(TaskRecord(
            name=name, source=collection, license="Apache-2.0", citation=citation, metric=metric,
            train_descriptions=train_d, heldout_descriptions=held_d, splits={"train": train, "validation": val},
            info={"num_examples_total": len(examples), "heldout_task": name in heldout, **info.get(kind, {})}))
    return kept, dropped


def pick(rng: random.Random, seq):
    """One element of ``seq``, drawn from ``rng``."""
    return seq[rng.randrange(len(seq))]
