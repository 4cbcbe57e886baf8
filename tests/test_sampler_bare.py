"""Bare training prompts and answer forms: what the sampler shows a generator under the recipe knobs."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

import pytest

from text2lora.data import Example, TaskRecord, TaskSampler
from text2lora.data import forms
from text2lora.data.sampler import form_variant, relabel_variant, task_labels
from text2lora.errors import ConfigError, DataError

INSTRUCTION = "Classify the sentiment of the review as positive or negative."


def _task(i: int, labels=("positive", "negative"), instruction: str | None = INSTRUCTION) -> TaskRecord:
    meta = {"instruction": instruction} if instruction else {}
    exs = [Example(f"review {i}.{k}: it was {'great' if k % 2 else 'dull'}", labels[k % len(labels)], meta=dict(meta))
           for k in range(6)]
    return TaskRecord(name=f"t{i}", source="user", license="-", citation="", metric="exact_match",
                      train_descriptions=[f"Task {i}: say how the review feels."], heldout_descriptions=[],
                      splits={"train": exs})


def _draw(sampler: TaskSampler, n: int = 60):
    return [row for _ in range(n) for row in sampler.next_batch()]


def _named_task(i: int, labels=("positive", "negative")) -> TaskRecord:
    """A label task whose every description names its labels."""
    t = _task(i, labels=labels, instruction=None)
    t.train_descriptions = [f"Label review {i} {labels[0]} or {labels[1]}.",
                            f"Is review {i} {labels[0].capitalize()} or {labels[1]}? Say which."]
    return t


def test_default_training_prompt_shows_no_instruction():
    rows = _draw(TaskSampler([_task(i) for i in range(4)], tasks_per_batch=2, seed=0))
    assert rows and all(INSTRUCTION not in ex.prompt for _, ex, _ in rows)
    assert all(ex.prompt.startswith("review ") for _, ex, _ in rows)


def test_instruction_prob_one_always_shows_it_before_the_input():
    rows = _draw(TaskSampler([_task(i) for i in range(4)], tasks_per_batch=2, seed=0, instruction_prob=1.0))
    assert all(ex.prompt.startswith(INSTRUCTION + "\n\nreview ") for _, ex, _ in rows)


def test_instruction_prob_shows_it_about_as_often_as_asked():
    rows = _draw(TaskSampler([_task(i) for i in range(4)], tasks_per_batch=2, seed=1, instruction_prob=0.25), 800)
    shown = sum(ex.prompt.startswith(INSTRUCTION) for _, ex, _ in rows) / len(rows)
    assert 0.2 < shown < 0.3  # 1,600 draws: the binomial sd is 0.011


def test_answer_forms_targets_take_the_form_the_description_states():
    heldout = ("all_caps", "bullets")
    s = TaskSampler([_task(i) for i in range(4)], tasks_per_batch=2, seed=2, answer_forms=1.0, heldout_forms=heldout)
    rows = _draw(s, 200)
    seen = set()
    for task, ex, desc in rows:
        form = ex.meta.get("form")
        assert form is not None and form not in heldout
        seen.add(form)
        stated = [c for f in [form] for c in _all_clauses(f, ex.target, task) if desc.endswith(c)]
        assert stated, (form, desc)
        # the checker of the stated form, with the parameters the clause states, accepts the target
        assert any(forms.check(form, ex.target, p) for p in _params(form, ex.target, task))
        # the first phrasing is kept for validation and evaluation
        assert not any(desc.endswith(forms.clause(form, p, 0)) for p in _params(form, ex.target, task))
    assert {"label", "one_word", "json_key", "max_words", "python_function"} <= seen


def _params(form: str, target: str, task: TaskRecord) -> list[dict]:
    if form == "label":
        return [{"labels": task_labels(task)}]
    if form == "max_words":
        return [{"n": n} for n in (3, 5, 8, 10, 15)]
    if form == "json_key":
        return [{"key": k} for k in json.loads(target)]
    if form == "python_function":
        return [{"name": n} for n in ("solve", "answer", "compute", "result")]
    return [{}]


def _all_clauses(form: str, target: str, task: TaskRecord) -> list[str]:
    return [c for p in _params(form, target, task) for c in forms.clauses(form, p)]


def test_task_labels_of_a_label_task_and_of_an_open_task():
    assert sorted(task_labels(_task(0))) == ["negative", "positive"]
    open_task = _task(0)
    open_task.splits["train"] = [Example(f"q{k}", f"answer number {k} is long") for k in range(20)]
    assert task_labels(open_task) is None


def test_form_variant_refuses_an_answer_that_cannot_take_the_form():
    ex = Example("q", "three small words")
    assert form_variant(ex, "d", "one_word", random.Random(0)) is None
    assert form_variant(ex, "d", "number", random.Random(0)) is None
    got = form_variant(ex, "Describe.", "all_caps", random.Random(0), variant=0)
    assert got is not None and got[0].target == "THREE SMALL WORDS" and got[1].endswith(forms.clause("all_caps", {}, 0))


def test_unknown_heldout_form_is_refused_by_name():
    with pytest.raises(ConfigError, match="shouting"):
        TaskSampler([_task(i) for i in range(4)], tasks_per_batch=2, heldout_forms=("shouting",))
    from text2lora.train.config import load_config

    with pytest.raises(ConfigError, match="shouting"):
        load_config("sft", overrides={"heldout_forms": ["shouting"]})


def _swap(text: str, rename: dict[str, str]) -> str:
    """``text`` with each whole word that is a key of ``rename`` (any case) replaced by its value."""
    return " ".join(rename.get(w.lower().strip(".?"), w.lower().strip(".?")) + w[len(w.rstrip(".?")):]
                    for w in text.split())


def test_relabel_renames_the_labels_in_the_description_and_the_target_alike():
    tasks = [_named_task(i) for i in range(4)]
    rows = _draw(TaskSampler(tasks, tasks_per_batch=2, seed=3, relabel=1.0), 100)
    suite_words = {w.lower() for w in re.findall(r"[A-Za-z]+", (Path(forms.__file__).parents[1] / "resources" /
                                                                 "instruct" / "words.yaml").read_text())}
    words_seen = set()
    for task, ex, desc in rows:
        rename = ex.meta["relabel"]
        assert sorted(rename) == ["negative", "positive"] and len(set(rename.values())) == 2
        original = next(e for e in task.splits["train"] if e.prompt == ex.prompt)
        # the target is the new name of the example's own label, capitalised as it was
        assert ex.target.lower() == rename[original.target.lower()]
        # put the old labels back and the description is one of the task's own
        back = {new: old for old, new in rename.items()}
        assert _swap(desc, back) in {_swap(d, {}) for d in task.train_descriptions}
        # the new words: whole words of the description, not in the input, not labels the task had, not the suite's
        for w in rename.values():
            assert re.search(rf"\b{w}\b", desc, re.I) and w not in ex.prompt.lower()
            assert w not in {"positive", "negative"} and w not in suite_words
        assert not re.search(r"\b(positive|negative)\b", desc, re.I)
        assert "form" not in ex.meta  # a renamed example gets no answer form
        words_seen.update(rename.values())
    assert len(words_seen) > 50  # drawn per example, not fixed per task


def test_relabel_leaves_what_it_cannot_rename():
    rng = random.Random(0)
    pool = ["alpha", "bravo", "charlie"]
    ex = Example("review: fine", "positive")
    labels = ["positive", "negative"]
    assert relabel_variant(ex, "Say how the review feels.", labels, rng, pool) is None  # no label named
    assert relabel_variant(ex, "Label it positive.", labels, rng, pool) is None  # one label not named
    assert relabel_variant(Example("earlier: negative. now: fine", "positive"), "positive or negative", labels,
                           rng, pool) is None  # the input names a label (a few-shot answer)
    assert relabel_variant(Example("q", "very good"), "very good or bad", ["very good", "bad"], rng, pool) is None
    assert relabel_variant(Example("q", "maybe"), "positive or negative", labels, rng, pool) is None
    assert relabel_variant(ex, "positive or negative", labels, rng, ["alpha"]) is None  # too few new words
    # one-letter labels: only as the answers write them, never the article "a"; lower-case ones are left
    got = relabel_variant(Example("q", "B"), "Pick a letter: A, B or C.", ["A", "B", "C"], rng, pool)
    assert got is not None and got[1].startswith("Pick a letter: ")
    assert got[0].target == got[0].meta["relabel"]["b"].capitalize()
    assert "A" not in got[1].split() and got[1].count(" a ") == 1
    assert relabel_variant(Example("q", "b"), "Pick a, b or c.", ["a", "b", "c"], rng, pool) is None
    assert relabel_variant(Example("q: A) x B) y", "B"), "A, B or C.", ["A", "B", "C"], rng, pool) is None
    got = relabel_variant(Example("review: fine", "Positive"), "Positive or negative, never positively.", labels,
                          rng, pool)
    assert got is not None
    new, desc = got
    p, n = new.meta["relabel"]["positive"], new.meta["relabel"]["negative"]
    # whole words only, each keeping the capital of the word it replaces
    assert desc == f"{p.capitalize()} or {n}, never positively." and new.target == p.capitalize()


def test_relabel_zero_draws_the_stream_it_drew_before():
    tasks = [_named_task(i) for i in range(4)]
    plain = _draw(TaskSampler(tasks, tasks_per_batch=2, seed=5, answer_forms=0.5), 50)
    zero = _draw(TaskSampler(tasks, tasks_per_batch=2, seed=5, answer_forms=0.5, relabel=0.0), 50)
    assert [(t.name, e.prompt, e.target, d) for t, e, d in plain] == [(t.name, e.prompt, e.target, d) for t, e, d in zero]


def test_relabel_needs_a_probability_and_descriptions():
    with pytest.raises(ConfigError, match="relabel"):
        TaskSampler([_named_task(i) for i in range(4)], tasks_per_batch=2, relabel=1.5)
    from text2lora.train.config import load_config

    with pytest.raises(ConfigError, match="conditioning is 'task-id'"):
        load_config("sft", relabel=0.5, conditioning="task-id")


@pytest.mark.parametrize("knob, make", [("answer_forms", _task), ("relabel", _named_task)])
def test_resume_continues_the_stream_and_refuses_another_knob_value(knob, make):
    tasks = [make(i) for i in range(4)]
    a = TaskSampler(tasks, tasks_per_batch=2, seed=0, **{knob: 0.5})
    a.next_batch()
    state = json.loads(json.dumps(a.state_dict()))
    b = TaskSampler(tasks, tasks_per_batch=2, seed=0, **{knob: 0.5})
    b.load_state_dict(state)
    assert [(t.name, e.target, d) for t, e, d in b.next_batch()] == [(t.name, e.target, d) for t, e, d in a.next_batch()]
    with pytest.raises(DataError, match=knob):
        TaskSampler(tasks, tasks_per_batch=2, seed=0, **{knob: 0.2}).load_state_dict(state)
