"""Prompt formatting in every condition, for every benchmark, and the task sampler."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from text2lora.data.sampler import mean_answer_words
from text2lora.data import (BENCHMARKS, GSM8K_PREFILL, Example, TaskRecord, TaskSampler, format_prompt,
                            icl_shots)
from text2lora.data.descriptions import (ALIGNMENT_KINDS, alignment_set, benchmark_descriptions,
                                         bigbench_descriptions, random_strings)
from text2lora.data.sources.benchmarks import build_benchmarks
from text2lora.errors import DataError
from text2lora.testing import tiny_tokenizer

OLMO = Path(__file__).parent / "fixtures" / "data" / "olmo"


@pytest.fixture(scope="module")
def bench():
    pytest.importorskip("pyarrow")
    return {r.name: r for r in build_benchmarks(OLMO, OLMO, OLMO)}


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer()


@pytest.mark.parametrize("name", BENCHMARKS)
def test_every_condition_changes_the_prompt(bench, tok, name):
    task = bench[name]
    ex = task.splits["test"][0]
    zero = format_prompt(ex, tok, "zero_shot", task=task)
    icl = format_prompt(ex, tok, "icl", task=task, k=2)
    desc = format_prompt(ex, tok, "description", task=task)
    assert len({zero, icl, desc}) == 3
    assert zero.endswith("<|im_start|>assistant\n" + (GSM8K_PREFILL if name == "gsm8k" else ""))
    # the shots really are in the ICL prompt, with their answers, before the question
    shots = icl_shots(task, 2)
    for shot in shots:
        assert shot.prompt in icl and shot.target in icl
    assert icl.index(shots[-1].target) < icl.rindex(ex.prompt)
    assert task.heldout_descriptions[0] in desc and desc.index(task.heldout_descriptions[0]) < desc.index(ex.prompt)
    # every condition keeps the example and (for GSM8K) the chain-of-thought prefill
    for p in (zero, icl, desc):
        assert ex.prompt in p
        assert p.endswith(GSM8K_PREFILL) == (name == "gsm8k")


def test_icl_shots_fixed_seed_and_errors(bench, tok):
    task = bench["arc_easy"]
    a, b = icl_shots(task, 3, seed=0), icl_shots(task, 3, seed=0)
    assert a == b and len({s.prompt for s in a}) == 3
    assert [s.prompt for s in icl_shots(task, 3, seed=1)] != [s.prompt for s in a] or len(task.splits["train"]) <= 3
    ex = task.splits["test"][0]
    with pytest.raises(DataError, match="needs in-context examples"):
        format_prompt(ex, tok, "icl")  # never silently zero-shot
    with pytest.raises(DataError, match="fewer than the 9"):
        icl_shots(bench["gsm8k"], 9)
    with pytest.raises(DataError, match="needs a task description"):
        format_prompt(ex, tok, "description")
    with pytest.raises(DataError, match="unknown prompt condition"):
        format_prompt(ex, tok, "few_shot")
    explicit = [Example("What is 1+1?", "2")]
    assert "What is 1+1?" in format_prompt(ex, tok, "icl", shots=explicit)


def test_gsm8k_shots_carry_prefill(bench, tok):
    task = bench["gsm8k"]
    p = format_prompt(task.splits["test"][0], tok, "icl", task=task, k=2)
    assert p.count(GSM8K_PREFILL) == 3  # two shot answers + the final prefill


def test_plain_layout_without_chat_template(bench):
    class NoTemplate:
        chat_template = None

    ex = bench["boolq"].splits["test"][0]
    out = format_prompt(ex, NoTemplate(), "description", description="Answer yes or no.")
    assert out == f"User: Answer yes or no.\n\n{ex.prompt}\nAssistant:"


@pytest.mark.slow
def test_real_tokenizer_prompts():
    from text2lora.base import load_base
    from text2lora.data import get_task

    tok = load_base().tokenizer
    for name in BENCHMARKS:
        task = get_task(name)
        ex = task.splits["test"][0]
        outs = {c: format_prompt(ex, tok, c, task=task) for c in ("zero_shot", "icl", "description")}
        assert len(set(outs.values())) == 3, name
        assert all(o.endswith(GSM8K_PREFILL) == (name == "gsm8k") for o in outs.values())


# ----------------------------------------------------------------------------- descriptions

def test_benchmark_description_sets():
    data = benchmark_descriptions()
    assert list(data) == list(BENCHMARKS)
    with_train = {"arc_challenge", "arc_easy", "boolq", "hellaswag", "openbookqa", "piqa", "winogrande"}
    for i, (name, sets) in enumerate(data.items()):
        assert len(set(sets["heldout"])) >= 5, name
        if name in with_train:
            assert len(set(sets["train"])) >= 8, name
        assert not set(sets["heldout"]) & set(sets["train"]), name
        assert len(sets["other_tasks"]) >= 5 and len(sets["random_strings"]) == 5
        assert sets["random_strings"] == random_strings(seed=1000 + i, n=5), name  # file matches generator
    for kind in ALIGNMENT_KINDS:
        assert alignment_set("gsm8k", kind) == data["gsm8k"][kind]
    with pytest.raises(DataError, match="no descriptions for benchmark"):
        alignment_set("nope", "heldout")


def test_heldout_descriptions_unused_by_training_tasks():
    heldout = {d.lower() for sets in benchmark_descriptions().values() for d in sets["heldout"]}
    training = {d.lower() for descs in bigbench_descriptions().values() for d in descs}
    assert not heldout & training


def test_shipped_bigbench_description_files_are_valid():
    for task, descs in bigbench_descriptions().items():
        assert len(descs) >= 8, task


# ----------------------------------------------------------------------------- sampler

def _tasks(n: int = 12) -> list[TaskRecord]:
    return [TaskRecord(name=f"t{i}", source="user", license="-", citation="", metric="exact_match",
                       train_descriptions=[f"desc {i}.{j}" for j in range(3)], heldout_descriptions=[],
                       splits={"train": [Example(f"q{i}.{k}", f"a{i}.{k}") for k in range(5 + i)]})
            for i in range(n)]


def test_sampler_batches_distinct_balanced_deterministic():
    tasks = _tasks()
    s = TaskSampler(tasks, tasks_per_batch=8, seed=3)
    batches = [next(iter(s)) for _ in range(300)]
    counts = {t.name: 0 for t in tasks}
    for b in batches:
        assert len(b) == 8 and len({t.name for t, _, _ in b}) == 8
        for t, ex, d in b:
            assert ex in t.splits["train"] and d in t.train_descriptions
            counts[t.name] += 1
    assert min(counts.values()) > 0.8 * 300 * 8 / 12 and max(counts.values()) < 1.2 * 300 * 8 / 12
    again = TaskSampler(tasks, tasks_per_batch=8, seed=3)
    assert [[(t.name, e.prompt, d) for t, e, d in again.next_batch()] for _ in range(5)] == \
           [[(t.name, e.prompt, d) for t, e, d in b] for b in batches[:5]]
    other = TaskSampler(tasks, tasks_per_batch=8, seed=4).next_batch()
    assert [(t.name, e.prompt) for t, e, _ in other] != [(t.name, e.prompt) for t, e, _ in batches[0]]


def _assert_resumes_exactly(make, skip: int) -> dict:
    """Draw ``skip`` batches and save the state through JSON; a fresh sampler resumed from it draws the
    same next five batches. Returns the state."""
    s = make()
    for _ in range(skip):
        s.next_batch()
    state = json.loads(json.dumps(s.state_dict()))
    expected = [[(t.name, e.prompt, d) for t, e, d in s.next_batch()] for _ in range(5)]
    resumed = make()
    resumed.load_state_dict(state)
    assert [[(t.name, e.prompt, d) for t, e, d in resumed.next_batch()] for _ in range(5)] == expected
    return state


def test_sampler_resume_exactly():
    tasks = _tasks()
    state = _assert_resumes_exactly(lambda: TaskSampler(tasks, tasks_per_batch=4, seed=0), skip=7)
    with pytest.raises(DataError, match="different task list"):
        TaskSampler(tasks[:-1], tasks_per_batch=4).load_state_dict(state)


def test_sampler_rejects_bad_tasks():
    tasks = _tasks(3)
    with pytest.raises(DataError, match="at least tasks_per_batch=8"):
        TaskSampler(tasks)
    tasks[0].train_descriptions = []
    with pytest.raises(DataError, match="no training descriptions"):
        TaskSampler(tasks, tasks_per_batch=2)
    with pytest.raises(DataError, match="no examples in split 'validation'"):
        TaskSampler(_tasks(3), tasks_per_batch=2, split="validation")


def _mc_tasks(n: int = 4) -> list[TaskRecord]:
    def ex(i: int, k: int) -> Example:
        listed = f"Q: item {i}.{k}\n  choice: yes\n  choice: no\nA:"
        return Example(listed, choices=["yes", "no"], gold=k % 2, meta={"prompt_unlisted": f"Q: item {i}.{k}\nA:"})
    return [TaskRecord(name=f"mc{i}", source="bigbench", license="-", citation="", metric="choice_acc",
                       train_descriptions=[f"desc {i}"], heldout_descriptions=[],
                       splits={"train": [ex(i, k) for k in range(6)]}) for i in range(n)]


def test_sampler_shows_listed_choices_or_not_as_asked():
    tasks = _mc_tasks() + _tasks(4)
    def unlisted_share(p: float, seed: int = 0) -> tuple[float, list]:
        s = TaskSampler(tasks, tasks_per_batch=4, seed=seed, unlisted_mc=p)
        rows = [r for _ in range(400) for r in s.next_batch()]
        mc = [ex for t, ex, _ in rows if t.name.startswith("mc")]
        for t, ex, _ in rows:
            if t.name.startswith("mc"):  # same example in one of its two formats, same answer
                k = int(ex.prompt.split(".")[1].split("\n")[0])
                assert ex.target == ("yes", "no")[k % 2]
            else:  # generative examples are never touched
                assert "\n" not in ex.prompt
        return sum("choice:" not in ex.prompt for ex in mc) / len(mc), [(t.name, ex.prompt) for t, ex, _ in rows[:40]]
    share0, first0 = unlisted_share(0.0)
    assert share0 == 0.0
    assert unlisted_share(1.0)[0] == 1.0
    share, first = unlisted_share(0.5)
    assert 0.45 < share < 0.55
    assert unlisted_share(0.5)[1] == first  # deterministic
    # 0 draws no extra random numbers: the stream is the one of a sampler without the option
    plain = TaskSampler(tasks, tasks_per_batch=4, seed=0)
    assert [(t.name, e.prompt) for _ in range(10) for t, e, _ in plain.next_batch()] == first0
    assert first != first0


def test_sampler_unlisted_resumes_and_needs_unlisted_prompts():
    tasks = _mc_tasks()
    state = _assert_resumes_exactly(lambda: TaskSampler(tasks, tasks_per_batch=2, seed=1, unlisted_mc=0.5), skip=5)
    with pytest.raises(DataError, match="unlisted_mc"):
        TaskSampler(tasks, tasks_per_batch=2, seed=1, unlisted_mc=0.25).load_state_dict(state)
    with pytest.raises(DataError, match="rebuild it with `t2l data fetch bigbench`"):
        TaskSampler(_tasks(4), tasks_per_batch=2, unlisted_mc=0.5)
    with pytest.raises(ValueError, match=r"unlisted_mc must be in \[0, 1\]"):
        TaskSampler(tasks, tasks_per_batch=2, unlisted_mc=1.5)
    ex = tasks[0].splits["train"][3]
    alt = ex.without_listed_choices()
    assert alt.prompt == "Q: item 0.3\nA:" and alt.choices == ex.choices and alt.gold == ex.gold
    assert ex.prompt.startswith("Q: item 0.3\n  choice:")  # the stored example is unchanged
    plain = Example("q", "a")
    assert plain.without_listed_choices() is plain


def _length_tasks() -> list[TaskRecord]:
    """Ten tasks: t0-t1 answer in 12 words, the rest in one."""
    def answer(i: int, k: int) -> str:
        return " ".join(f"w{i}.{k}.{j}" for j in range(12)) if i < 2 else f"a{i}.{k}"
    return [TaskRecord(name=f"t{i}", source="user", license="-", citation="", metric="exact_match",
                       train_descriptions=[f"desc {i}"], heldout_descriptions=[],
                       splits={"train": [Example(f"q{i}.{k}", answer(i, k)) for k in range(4)]})
            for i in range(10)]


def test_sampler_draws_long_answer_tasks_as_often_as_weighted():
    tasks = _length_tasks()
    assert mean_answer_words(tasks[0]) == 12.0 and mean_answer_words(tasks[5]) == 1.0
    assert mean_answer_words(tasks[0], "validation") == 0.0

    def shares(weight: float, seed: int = 0) -> tuple[float, list]:
        s = TaskSampler(tasks, tasks_per_batch=3, seed=seed, long_answer_weight=weight, long_answer_words=10)
        rows = [[t.name for t, _, _ in s.next_batch()] for _ in range(3000)]
        assert all(len(set(r)) == 3 for r in rows)  # still distinct tasks in a batch
        flat = [n for r in rows for n in r]
        return sum(n in ("t0", "t1") for n in flat) / len(flat), rows[:20]

    even, first_even = shares(1.0)
    assert abs(even - 0.2) < 0.02  # 2 of 10 tasks
    up, first_up = shares(4.0)
    assert up > 0.38  # drawn much more often (without replacement a batch holds at most both of them)
    assert up < 2 / 3
    down, _ = shares(0.25)
    assert down < 0.08
    assert shares(4.0)[1] == first_up and first_up != first_even  # deterministic, and a different stream
    # the default draws exactly the stream of a sampler built without the option
    plain = TaskSampler(tasks, tasks_per_batch=3, seed=0)
    assert [[t.name for t, _, _ in plain.next_batch()] for _ in range(20)] == first_even
    s = TaskSampler(tasks, tasks_per_batch=3, long_answer_weight=4.0)
    assert s.long_tasks == ["t0", "t1"] and TaskSampler(tasks, tasks_per_batch=3).long_tasks == []


def test_sampler_long_answer_weight_resumes_and_refuses_a_no_op():
    tasks = _length_tasks()
    state = _assert_resumes_exactly(lambda: TaskSampler(tasks, tasks_per_batch=3, seed=2, long_answer_weight=3.0),
                                    skip=6)
    with pytest.raises(DataError, match="long_answer_weight"):
        TaskSampler(tasks, tasks_per_batch=3, seed=2, long_answer_weight=2.0).load_state_dict(state)
    with pytest.raises(DataError, match="none of the 10 training tasks have answers of 50\\+ words"):
        TaskSampler(tasks, tasks_per_batch=3, long_answer_weight=4.0, long_answer_words=50)
    with pytest.raises(DataError, match="all of the 10 training tasks"):
        TaskSampler(tasks, tasks_per_batch=3, long_answer_weight=4.0, long_answer_words=1)
    with pytest.raises(ValueError, match="long_answer_weight must be positive"):
        TaskSampler(tasks, tasks_per_batch=3, long_answer_weight=0.0)


def test_sampler_cot_prefill_opens_long_answers_only():
    tasks = _length_tasks()
    s = TaskSampler(tasks, tasks_per_batch=3, seed=4, cot_prefill=0.5, long_answer_words=10)
    rows = [row for _ in range(2000) for row in s.next_batch()]
    long_rows = [ex for t, ex, _ in rows if t.name in ("t0", "t1")]
    short_rows = [ex for t, ex, _ in rows if t.name not in ("t0", "t1")]
    assert short_rows and all("prefill" not in ex.meta for ex in short_rows)
    with_prefill = [ex for ex in long_rows if ex.meta.get("prefill") == GSM8K_PREFILL]
    # binomial(n ~ 1200, 0.5): the share lies far inside 0.4-0.6 unless the probability is ignored
    assert 0.4 < len(with_prefill) / len(long_rows) < 0.6
    # the stored examples are untouched, and the prefill is prompt, not target
    assert all("prefill" not in ex.meta for t in tasks for ex in t.splits["train"])
    assert all(ex.target in [e.target for e in tasks[int(ex.prompt[1])].splits["train"]] for ex in with_prefill)
    state = _assert_resumes_exactly(lambda: TaskSampler(tasks, tasks_per_batch=3, seed=2, cot_prefill=0.5), skip=4)
    with pytest.raises(DataError, match="cot_prefill"):
        TaskSampler(tasks, tasks_per_batch=3, seed=2, cot_prefill=0.25).load_state_dict(state)
    with pytest.raises(DataError, match="none of the 10 training tasks has answers of 50\\+ words"):
        TaskSampler(tasks, tasks_per_batch=3, cot_prefill=0.5, long_answer_words=50)
    with pytest.raises(ValueError, match="cot_prefill must be in"):
        TaskSampler(tasks, tasks_per_batch=3, cot_prefill=1.5)


def test_prefilled_training_example_trains_only_the_answer():
    from text2lora.train.batches import encode_examples
    tok = tiny_tokenizer()
    ex = Example("What is 2 + 3?", "2 plus 3 is 5. The answer is 5.")
    plain = encode_examples(tok, [ex], eos=False)
    pre = encode_examples(tok, [ex.with_prefill(GSM8K_PREFILL)], eos=False)
    def trained(b):
        return [int(t) for t, lab in zip(b.input_ids[0], b.labels[0]) if lab != -100]
    # the prefill's tokens are in the input but carry no label; the trained tokens are the answer's
    assert pre.input_ids.shape[1] > plain.input_ids.shape[1]
    assert tok.decode(trained(pre)).strip() == ex.target
    assert ex.with_prefill("x").with_prefill("y").meta["prefill"] == "x"


def test_sampler_format_contrast_matches_the_clause_to_the_answer():
    from text2lora.data.sampler import LONG_FORMAT_CLAUSES, SHORT_FORMAT_CLAUSES
    tasks = _length_tasks()
    for t in tasks[:2]:  # the long-answer tasks store their final answer, as MATH does
        t.splits["train"] = [Example(e.prompt, e.target, meta={"answer": f"final {e.prompt}"})
                             for e in t.splits["train"]]
    s = TaskSampler(tasks, tasks_per_batch=3, seed=1, format_contrast=0.5, cot_prefill=1.0, long_answer_words=10)
    rows = [row for _ in range(2000) for row in s.next_batch()]
    base_desc = {t.name: t.train_descriptions[0] for t in tasks}
    counts = {"short": 0, "long": 0, "plain": 0}
    for t, ex, d in rows:
        clause = d[len(base_desc[t.name]):].strip()
        assert d.startswith(base_desc[t.name])
        assert clause in ("", *SHORT_FORMAT_CLAUSES, *LONG_FORMAT_CLAUSES)
        if t.name in ("t0", "t1"):
            if clause in SHORT_FORMAT_CLAUSES:  # the final answer alone, and never the reasoning prefill
                assert ex.target == f"final {ex.prompt}" and "prefill" not in ex.meta
                counts["short"] += 1
            else:  # the worked answer (12 words), prefilled (cot_prefill=1)
                assert len(ex.target.split()) == 12 and ex.meta["prefill"] == GSM8K_PREFILL
                counts["long" if clause else "plain"] += 1
        else:  # a short task's answer is never paired with a reasoning clause
            assert clause not in LONG_FORMAT_CLAUSES and ex.target.startswith("a")
    n = sum(counts.values())
    # P(short) = 0.5, P(long clause) = 0.5 * 0.5, P(no clause) = 0.25; n ~ 1200 draws
    assert abs(counts["short"] / n - 0.5) < 0.07 and abs(counts["long"] / n - 0.25) < 0.07
    _assert_resumes_exactly(lambda: TaskSampler(tasks, tasks_per_batch=3, seed=2, format_contrast=0.5), skip=3)
    with pytest.raises(DataError, match="stores its final answer"):
        TaskSampler(_length_tasks(), tasks_per_batch=3, format_contrast=0.5)
