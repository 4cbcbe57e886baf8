"""Bare training prompts and answer forms: what the sampler shows a generator under the recipe knobs."""

from __future__ import annotations

import json
import random

import pytest

from text2lora.data import Example, TaskRecord, TaskSampler
from text2lora.data import forms
from text2lora.data.sampler import form_variant, task_labels
from text2lora.errors import ConfigError

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


def test_resume_refuses_other_form_knobs():
    tasks = [_task(i) for i in range(4)]
    a = TaskSampler(tasks, tasks_per_batch=2, seed=0, answer_forms=0.5)
    a.next_batch()
    state = json.loads(json.dumps(a.state_dict()))
    b = TaskSampler(tasks, tasks_per_batch=2, seed=0, answer_forms=0.5)
    b.load_state_dict(state)
    assert [(t.name, e.target, d) for t, e, d in b.next_batch()] == [(t.name, e.target, d) for t, e, d in a.next_batch()]
    with pytest.raises(Exception, match="answer_forms"):
        TaskSampler(tasks, tasks_per_batch=2, seed=0, answer_forms=0.2).load_state_dict(state)
