"""Task-balanced batches for training a generator: k distinct tasks per batch, one example each.

Every task is equally likely to appear in a batch regardless of its size; each sample gets one of
its task's training descriptions at random. With ``unlisted_mc`` > 0, a multiple-choice example
whose prompt lists its choices (BIG-bench) is shown with that probability without them, the format
of the benchmarks' multiple-choice items. With ``long_answer_weight`` != 1, tasks whose answers are
long (a mean of at least ``long_answer_words`` words) are drawn that many times as often as the
others, still at most once a batch; ``task_weights`` (glob pattern -> weight, multiplied where
several match) weighs tasks by name, e.g. a whole collection. With ``cot_prefill`` > 0, an example
of a long-answer task opens its answer with that probability with the chain-of-thought prefill
(:data:`~text2lora.data.prompts.COT_PREFILL`, the one GSM8K is evaluated with), so adapters learn
to go on reasoning after it rather than end the turn. With ``format_contrast`` > 0, descriptions
say which answer format they want and the answer follows: with that probability an example of a
long-answer task that stores its final answer (``meta["answer"]``, e.g. MATH) is shown with the
final answer alone as target and an "answer only" clause appended to its description, and otherwise
a "show your reasoning" clause is appended (with the same probability) to its full answer; a
short-answer task's description gets the "answer only" clause with that probability. So the format
words of a description, not only its topic, decide how long the adapted model answers. With
``relabel`` > 0, an example of a label task (:func:`task_labels`) whose description names every label
is shown with that probability with the labels renamed: each label becomes a word drawn for this
example (:func:`relabel_variant`), in the description and in the target alike, so the answer's words
can only be read from the description. The stream is infinite and fully determined by the seed;
:meth:`TaskSampler.state_dict` / :meth:`TaskSampler.load_state_dict` resume it exactly.
"""

from __future__ import annotations

import fnmatch
import random
import re
from dataclasses import replace
from typing import Any, Iterator, Sequence

from .._rng import random_state, set_random_state
from ..errors import ConfigError, DataError
from . import forms
from .prompts import COT_PREFILL
from .records import Example, TaskRecord

__all__ = ["TaskSampler", "mean_answer_words", "SHORT_FORMAT_CLAUSES", "LONG_FORMAT_CLAUSES", "form_variant",
           "task_labels", "with_instruction", "relabel_variant", "FORM_ANSWER_WORDS"]

#: Answers of at most this many words can be rewritten into an answer form.
FORM_ANSWER_WORDS = 12
#: Parameter choices of the forms that take one (drawn per example).
_FORM_KEYS = ("answer", "result", "output", "value")
_FORM_NAMES = ("solve", "answer", "compute", "result")
_MAX_WORDS = (3, 5, 8, 10, 15)
#: A task whose answers take at most this many distinct values is a label task (the ``label`` form).
MAX_LABELS = 10


def with_instruction(ex: Example) -> Example:
    """``ex`` with its task's instruction (``meta["instruction"]``) before the input, or ``ex`` when it has none."""
    instruction = ex.meta.get("instruction") if ex.meta else None
    if not instruction:
        return ex
    return replace(ex, prompt=f"{instruction.strip()}\n\n{ex.prompt}")


def task_labels(task: TaskRecord, split: str = "train") -> list[str] | None:
    """The labels of a generative task whose answers take at most :data:`MAX_LABELS` distinct short values
    (sentiment, yes/no, entailment, ...), most frequent first; ``None`` for any other task."""
    examples = task.splits.get(split) or []
    if not examples or task.is_multiple_choice:
        return None
    counts: dict[str, int] = {}
    for ex in examples:
        key = forms.normalize(ex.target)
        if not key or len(key.split()) > 3:
            return None
        counts[key] = counts.get(key, 0) + 1
        if len(counts) > MAX_LABELS:
            return None
    if len(counts) < 2:
        return None
    first = {}
    for ex in examples:
        first.setdefault(forms.normalize(ex.target), ex.target.strip())
    return [first[k] for k, _ in sorted(counts.items(), key=lambda kv: -kv[1])]


def _form_params(name: str, answer: str, labels: list[str] | None, rng: random.Random) -> dict[str, Any] | None:
    if name == "max_words":
        fits = [n for n in _MAX_WORDS if n >= len(answer.split())]
        return {"n": rng.choice(fits)} if fits else None
    if name == "json_key":
        return {"key": rng.choice(_FORM_KEYS)}
    if name == "python_function":
        return {"name": rng.choice(_FORM_NAMES)}
    if name == "bullets":
        n = len(forms.split_items(answer))
        return {"n": n} if n >= 2 else None
    if name == "label":
        return {"labels": labels} if labels else None
    return {}


def form_variant(ex: Example, description: str, form: str, rng: random.Random, *, labels: list[str] | None = None,
                 variant: int | None = None) -> tuple[Example, str] | None:
    """``ex`` with its answer rewritten into ``form`` and ``description`` with the form's clause appended, or
    ``None`` when the answer cannot take the form. ``variant`` picks the clause's phrasing (default: any but
    the first, which validation and evaluation keep); parameters are drawn from ``rng``."""
    answer = ex.target
    if len(answer.split()) > FORM_ANSWER_WORDS:
        return None
    params = _form_params(form, answer, labels, rng)
    if params is None:
        return None
    rendered = forms.render(form, answer, params)
    if rendered is None:
        return None
    phrasings = len(forms.clauses(form, params))
    v = variant if variant is not None else 1 + rng.randrange(phrasings - 1)
    new = replace(ex, response=rendered, choices=None, gold=None, meta={**ex.meta, "form": form})
    return new, f"{description.rstrip()} {forms.clause(form, params, v)}"

#: Clauses appended to a description under ``format_contrast`` when the target is a short answer.
SHORT_FORMAT_CLAUSES = (
    "Reply with the final answer only, without any working.",
    "Give just the answer, nothing else.",
    "Answer briefly: only the result, no explanation.",
    "Output only the answer itself.",
)
#: Clauses appended to a description under ``format_contrast`` when the target is a worked answer.
LONG_FORMAT_CLAUSES = (
    "Show your reasoning step by step before the final answer.",
    "Explain your working in full, then state the answer.",
    "Think it through step by step and write out each step.",
    "Write a complete worked solution, not just the result.",
)


def _word_re(words: Sequence[str]) -> re.Pattern:
    """Any of ``words`` as a whole word (longest first, so no word matches inside another). A word of two or
    more letters matches in any case; a one-letter label only as written (``A``, ``Y``: not the article "a")."""
    alts = "|".join(re.escape(w) if len(w) == 1 else f"(?i:{re.escape(w)})"
                    for w in sorted(words, key=len, reverse=True))
    return re.compile(rf"(?<![\w-])(?:{alts})(?![\w-])")


def relabel_variant(ex: Example, description: str, labels: Sequence[str], rng: random.Random,
                    pool: Sequence[str]) -> tuple[Example, str] | None:
    """``ex`` and ``description`` with each of a label task's ``labels`` renamed to a word drawn from ``pool``
    (distinct words that neither the description nor the input contains), in the description wherever it names
    the label and in the target; ``None`` when the labels are not all single words (one-letter ones upper
    case), the description does not name every one, the input already names one (a few-shot answer, a shown
    instruction) or the target is not one of them. A renamed word keeps the capital first letter of the word
    it replaces."""
    keys = [forms.normalize(label) for label in labels]
    target = forms.normalize(ex.target)
    if len(set(keys)) != len(keys) or not all(k.isalpha() for k in keys) or target not in keys:
        return None
    # how each label is written: one-letter labels as the answers write them, longer ones in any case
    surface = {k: (label.strip(" .!?;:,'\"`") if len(k) == 1 else k) for k, label in zip(keys, labels)}
    if any(len(w) == 1 and not w.isupper() for w in surface.values()):
        return None  # a lower-case one-letter label reads like the article "a" or a variable
    named = _word_re(list(surface.values()))
    if not all(_word_re([w]).search(description) for w in surface.values()) or named.search(ex.prompt):
        return None
    taken = set(re.findall(r"[a-z]+", f"{description} {ex.prompt}".lower()))
    words: list[str] = []
    for _ in range(100 * len(keys)):
        w = pool[rng.randrange(len(pool))]
        if w not in taken and w not in words:
            words.append(w)
            if len(words) == len(keys):
                break
    else:
        return None
    rename = dict(zip(keys, words))

    def cased(old: str, new: str) -> str:
        return new.capitalize() if old[:1].isupper() else new

    new_desc = named.sub(lambda m: cased(m.group(0), rename[m.group(0).lower()]), description)
    answer = cased(ex.target.strip(), rename[target])
    meta = {k: v for k, v in ex.meta.items() if k != "targets"}
    return replace(ex, response=answer, choices=None, gold=None, meta={**meta, "relabel": rename}), new_desc


def mean_answer_words(task: TaskRecord, split: str = "train") -> float:
    """Mean length in words of the targets (:attr:`Example.target`) of a task's ``split``."""
    examples = task.splits.get(split) or []
    return sum(len(ex.target.split()) for ex in examples) / len(examples) if examples else 0.0


class TaskSampler:
    """Infinite iterator of batches ``[(task, example, description), ...]`` with distinct tasks.

    Args:
        tasks: the training tasks; each needs examples in ``split`` and at least one training description.
        tasks_per_batch: distinct tasks per batch (the paper uses 8).
        seed: seed of the whole stream.
        split: split to draw examples from.
        unlisted_mc: probability of showing a multiple-choice example without its listed choices
            (:meth:`Example.without_listed_choices`).
        long_answer_weight: relative chance of drawing a task whose answers are long; 1 draws every
            task equally often (and the same stream as before the option existed).
        long_answer_words: mean answer length, in words, from which a task counts as long.
        task_weights: ``(glob pattern, weight)`` pairs over task names; a task's weight is the product of
            the weights of the patterns it matches (and of ``long_answer_weight`` when it is long).
        cot_prefill: probability of opening the answer of a long-answer task's example with
            :data:`~text2lora.data.prompts.COT_PREFILL`.
        format_contrast: probability of the answer-format clauses above (see the module docstring).
        instruction_prob: probability of showing an example's instruction (``meta["instruction"]``) before its input.
        answer_forms: probability of rewriting a short answer into an answer form its description then states.
        heldout_forms: answer forms never drawn.
        relabel: probability of renaming a label task's labels (:func:`relabel_variant`); an example so
            renamed gets no answer form.
    """

    def __init__(self, tasks: list[TaskRecord], tasks_per_batch: int = 8, seed: int = 0, split: str = "train",
                 unlisted_mc: float = 0.0, long_answer_weight: float = 1.0, long_answer_words: int = 10,
                 task_weights: Sequence[tuple[str, float]] = (), cot_prefill: float = 0.0,
                 format_contrast: float = 0.0, instruction_prob: float = 0.0, answer_forms: float = 0.0,
                 heldout_forms: Sequence[str] = (), relabel: float = 0.0):
        if tasks_per_batch < 1:
            raise ConfigError(f"tasks_per_batch must be >= 1, got {tasks_per_batch}")
        if not 0.0 <= unlisted_mc <= 1.0:
            raise ConfigError(f"unlisted_mc must be in [0, 1], got {unlisted_mc}")
        if not 0.0 <= cot_prefill <= 1.0:
            raise ConfigError(f"cot_prefill must be in [0, 1], got {cot_prefill}")
        for knob, value in (("instruction_prob", instruction_prob), ("answer_forms", answer_forms),
                            ("relabel", relabel)):
            if not 0.0 <= value <= 1.0:
                raise ConfigError(f"{knob} must be in [0, 1], got {value}")
        unknown = [f for f in heldout_forms if f not in forms.FORMS]
        if unknown:
            raise ConfigError(f"heldout_forms names unknown form(s) {', '.join(unknown)}; use {', '.join(forms.FORMS)}")
        if long_answer_weight <= 0:
            raise ConfigError(f"long_answer_weight must be positive, got {long_answer_weight}")
        if long_answer_words < 1:
            raise ConfigError(f"long_answer_words must be >= 1, got {long_answer_words}")
        task_weights = [(str(p), float(w)) for p, w in task_weights]
        for pattern, w in task_weights:
            if w <= 0:
                raise ConfigError(f"task weight of {pattern!r} must be positive, got {w}")
        if len(tasks) < tasks_per_batch:
            raise DataError(f"TaskSampler needs at least tasks_per_batch={tasks_per_batch} tasks, got {len(tasks)}")
        for t in tasks:
            if not t.splits.get(split):
                raise DataError(f"task {t.name} has no examples in split {split!r}")
            if not t.train_descriptions:
                raise DataError(f"task {t.name} has no training descriptions; add some or leave the task out")
        names = [t.name for t in tasks]
        if len(set(names)) != len(names):
            raise DataError("TaskSampler got the same task twice; task names must be unique")
        self.tasks = list(tasks)
        self.tasks_per_batch = tasks_per_batch
        self.seed = seed
        self.split = split
        self.unlisted_mc = unlisted_mc
        if unlisted_mc > 0 and not any("prompt_unlisted" in e.meta for t in tasks for e in t.splits[split]):
            raise DataError("unlisted_mc is set but no multiple-choice example of the training tasks lists its "
                            "choices in its prompt (BIG-bench's do); a BIG-bench collection built by an earlier "
                            "text2lora lacks the unlisted prompts: rebuild it with `t2l data fetch bigbench`")
        self.long_answer_weight = long_answer_weight
        self.long_answer_words = long_answer_words
        self.cot_prefill = cot_prefill
        self.format_contrast = format_contrast
        self.instruction_prob = instruction_prob
        self.answer_forms = answer_forms
        self.heldout_forms = tuple(heldout_forms)
        self.relabel = relabel
        #: the words labels are renamed to: the encoder's vocabulary minus the bare-input suite's words
        self._pool: tuple[str, ...] = ()
        if relabel:
            from .sources.labels import vocabulary

            self._pool = vocabulary()
        #: the forms training draws from
        self._forms = [f for f in forms.FORMS if f not in self.heldout_forms]
        self._labels: dict[int, list[str] | None] = {}
        #: indices of the long-answer tasks (their examples may get the prefill or the contrast)
        long_idx = ({i for i, t in enumerate(tasks) if mean_answer_words(t, split) >= long_answer_words}
                    if cot_prefill > 0 or format_contrast > 0 else set())
        self._cot_tasks = long_idx if cot_prefill > 0 else set()
        self._long_tasks = long_idx
        if format_contrast > 0 and not any("answer" in e.meta for i in long_idx for e in tasks[i].splits[split]):
            raise DataError("format_contrast is set but no example of a long-answer training task stores its final "
                            "answer (meta 'answer', as the MATH tasks of the olmo collection do), so no worked "
                            "answer can be contrasted with its short form; add such tasks or drop the option")
        if cot_prefill > 0 and not self._cot_tasks:
            raise DataError(f"cot_prefill is set but none of the {len(tasks)} training tasks has answers of "
                            f"{long_answer_words}+ words on average, so no example would get the prefill; "
                            "lower long_answer_words or drop the option")
        #: per-task sampling weights, or None when every task is equally likely
        self.weights: list[float] | None = None
        if long_answer_weight != 1.0:
            self.weights = [long_answer_weight if mean_answer_words(t, split) >= long_answer_words else 1.0
                            for t in tasks]
            if len(set(self.weights)) == 1:
                raise DataError(f"long_answer_weight is set but {'all' if self.weights[0] != 1.0 else 'none'} of the "
                                f"{len(tasks)} training tasks have answers of {long_answer_words}+ words on average, "
                                "so the weight changes nothing; change long_answer_words or drop the option")
        self.task_weights = task_weights
        if task_weights:
            weights = list(self.weights or [1.0] * len(tasks))
            for pattern, w in task_weights:
                hit = [i for i, t in enumerate(tasks) if fnmatch.fnmatchcase(t.name, pattern)]
                if not hit:
                    raise DataError(f"task weight pattern {pattern!r} matches none of the {len(tasks)} training tasks; "
                                    "fix the pattern (e.g. 'olmo/*') or drop it")
                for i in hit:
                    weights[i] *= w
            self.weights = weights
        self._rng = random.Random(seed)
        self._batches = 0

    @property
    def long_tasks(self) -> list[str]:
        """Names of the tasks whose answers count as long when ``long_answer_weight`` is set."""
        if self.long_answer_weight == 1.0:
            return []
        return [t.name for t in self.tasks if mean_answer_words(t, self.split) >= self.long_answer_words]

    def _pick_tasks(self) -> list[int]:
        if self.weights is None:
            return self._rng.sample(range(len(self.tasks)), self.tasks_per_batch)
        # weighted sampling without replacement (Efraimidis & Spirakis): the k largest u ** (1 / w)
        keys = [self._rng.random() ** (1.0 / w) for w in self.weights]
        return sorted(range(len(keys)), key=keys.__getitem__, reverse=True)[:self.tasks_per_batch]

    def next_batch(self) -> list[tuple[TaskRecord, Example, str]]:
        """Draw the next batch."""
        picked = self._pick_tasks()
        batch = []
        for i in picked:
            task = self.tasks[i]
            examples = task.splits[self.split]
            ex = examples[self._rng.randrange(len(examples))]
            if self.unlisted_mc and "prompt_unlisted" in ex.meta and self._rng.random() < self.unlisted_mc:
                ex = ex.without_listed_choices()
            desc = task.train_descriptions[self._rng.randrange(len(task.train_descriptions))]
            if self.instruction_prob and "instruction" in ex.meta and self._rng.random() < self.instruction_prob:
                ex = with_instruction(ex)
            short = False
            if self.format_contrast:
                ex, desc, short = self._contrast(i, ex, desc)
            renamed = False
            if self.relabel and i not in self._long_tasks and self._rng.random() < self.relabel:
                ex, desc, renamed = self._relabel(i, ex, desc)
            if (not renamed and self.answer_forms and i not in self._long_tasks
                    and self._rng.random() < self.answer_forms):
                ex, desc = self._form(i, ex, desc)
            if not short and i in self._cot_tasks and self._rng.random() < self.cot_prefill:
                ex = ex.with_prefill(COT_PREFILL)
            batch.append((task, ex, desc))
        self._batches += 1
        return batch

    def _task_labels(self, i: int) -> list[str] | None:
        if i not in self._labels:
            self._labels[i] = task_labels(self.tasks[i], self.split)
        return self._labels[i]

    def _relabel(self, i: int, ex: Example, desc: str) -> tuple[Example, str, bool]:
        """``relabel`` for one example: (example, description, whether its labels were renamed)."""
        labels = self._task_labels(i)
        got = relabel_variant(ex, desc, labels, self._rng, self._pool) if labels else None
        return (*got, True) if got else (ex, desc, False)

    def _form(self, i: int, ex: Example, desc: str) -> tuple[Example, str]:
        """``answer_forms`` for one example: a form drawn among those its answer can take."""
        self._task_labels(i)
        order = self._rng.sample(self._forms, len(self._forms))
        for form in order:
            got = form_variant(ex, desc, form, self._rng, labels=self._labels[i])
            if got is not None:
                return got
        return ex, desc

    def _contrast(self, i: int, ex: Example, desc: str) -> tuple[Example, str, bool]:
        """``format_contrast`` for one example: (example, description, whether the target is now short)."""
        rng, p = self._rng, self.format_contrast
        if i not in self._long_tasks:
            if rng.random() < p:
                desc = f"{desc.rstrip()} {SHORT_FORMAT_CLAUSES[rng.randrange(len(SHORT_FORMAT_CLAUSES))]}"
            return ex, desc, True
        answer = ex.meta.get("answer")
        if answer and rng.random() < p:
            ex = replace(ex, response=str(answer), choices=None, gold=None)
            return ex, f"{desc.rstrip()} {SHORT_FORMAT_CLAUSES[rng.randrange(len(SHORT_FORMAT_CLAUSES))]}", True
        if rng.random() < p:
            desc = f"{desc.rstrip()} {LONG_FORMAT_CLAUSES[rng.randrange(len(LONG_FORMAT_CLAUSES))]}"
        return ex, desc, False

    def __iter__(self) -> Iterator[list[tuple[TaskRecord, Example, str]]]:
        while True:
            yield self.next_batch()

    def state_dict(self) -> dict[str, Any]:
        """JSON-serialisable state: seed, batches drawn, and the generator state."""
        return {"seed": self.seed, "tasks_per_batch": self.tasks_per_batch, "split": self.split,
                "unlisted_mc": self.unlisted_mc, "long_answer_weight": self.long_answer_weight,
                "long_answer_words": self.long_answer_words, "task_names": [t.name for t in self.tasks],
                "task_weights": [list(pw) for pw in self.task_weights], "cot_prefill": self.cot_prefill,
                "format_contrast": self.format_contrast, "instruction_prob": self.instruction_prob,
                "answer_forms": self.answer_forms, "heldout_forms": list(self.heldout_forms),
                "relabel": self.relabel, "batches": self._batches,
                "rng": random_state(self._rng)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume from :meth:`state_dict`; the task list must be the same (same names, same order)."""
        names = [t.name for t in self.tasks]
        if state.get("task_names") != names:
            raise DataError("sampler state was saved for a different task list; resume with the same tasks")
        if (state.get("tasks_per_batch") != self.tasks_per_batch or state.get("split") != self.split
                or state.get("unlisted_mc", 0.0) != self.unlisted_mc
                or state.get("long_answer_weight", 1.0) != self.long_answer_weight
                or (self.long_answer_weight != 1.0 and state.get("long_answer_words", 10) != self.long_answer_words)
                or [tuple(pw) for pw in state.get("task_weights", [])] != self.task_weights
                or state.get("cot_prefill", 0.0) != self.cot_prefill
                or state.get("format_contrast", 0.0) != self.format_contrast
                or state.get("instruction_prob", 0.0) != self.instruction_prob
                or state.get("answer_forms", 0.0) != self.answer_forms
                or tuple(state.get("heldout_forms", ())) != self.heldout_forms
                or state.get("relabel", 0.0) != self.relabel):
            raise DataError("sampler state was saved with different tasks_per_batch/split/unlisted_mc/"
                            "long_answer_weight/long_answer_words/task_weights/cot_prefill/format_contrast/"
                            "instruction_prob/answer_forms/heldout_forms/relabel; resume with the run's own config")
        set_random_state(state["rng"], self._rng)
        self._batches = int(state["batches"])
        self.seed = state["seed"]
