"""The labels protocol for multiple choice (the paper's): prompts, reading answers, the runner, reports."""

from __future__ import annotations

import json

import pytest

from conftest import make_base
from text2lora.data import Example, TaskRecord
from text2lora.errors import ConfigError
from text2lora.eval import mc_labels
from text2lora.eval.conditions import ConditionResolver, parse_condition
from text2lora.eval.report import markdown_table, paired_difference, summarize
from text2lora.eval.runner import EvalConfig, run_eval


@pytest.fixture(scope="module")
def base():
    return make_base("llama", seed=1)


def _arc(i: int) -> Example:
    return Example(f"Which planet is number {i}?", choices=["Mercury", "Venus", "Earth", "Mars"], gold=i % 4)


def _task() -> TaskRecord:
    return TaskRecord("toy_arc", "user", "MIT", "test", "choice_acc", ["Answer science questions."],
                      ["Pick the right planet."],
                      {"train": [_arc(i) for i in range(6)], "test": [_arc(i) for i in range(10, 22)]})


def test_labels_are_letters_except_for_yes_no_questions():
    assert mc_labels.choice_labels(["Mercury", "Venus", "Earth"]) == ["A", "B", "C"]
    assert mc_labels.choice_labels(["eggplant", "toaster"]) == ["A", "B"]  # WinoGrande's one-word options
    assert mc_labels.choice_labels(["yes", "No"]) == ["yes", "no"]
    assert mc_labels.choice_labels(["True", "False"]) == ["true", "false"]
    assert mc_labels.choice_labels(["yes", "Yes"]) == ["A", "B"]  # not distinct as labels


def test_labelled_example_lists_the_choices_and_answers_with_the_gold_label():
    ex = mc_labels.labelled_example(_arc(2))
    assert ex.prompt.startswith("Which planet is number 2?\n\nA: Mercury\nB: Venus\nC: Earth\nD: Mars\n\n")
    assert "(A, B, C or D)" in ex.prompt and ex.response == "C" and ex.meta["labels"] == ["A", "B", "C", "D"]
    assert ex.choices == _arc(2).choices and ex.gold == 2  # kept, for the lenient reading
    yn = mc_labels.labelled_example(Example("Passage.\nQuestion: is it?", choices=["yes", "no"], gold=1))
    assert yn.response == "no" and "yes or no" in yn.prompt and "A:" not in yn.prompt
    gen = Example("What is 2 + 2?", "4")
    assert mc_labels.labelled_example(gen) is gen


@pytest.mark.parametrize("answer, want", [
    ("B", 1), ("B: Venus", 1), (" (c).", 2), ("Answer: D", 3), ("The answer is A.", 0), ("**C**", 2),
    ("d", 3), ("Because Venus is hot", None), ("Venus", None), ("", None), ("E", None)])
def test_read_label(answer, want):
    assert mc_labels.read_label(answer, ["A", "B", "C", "D"]) == want


def test_read_label_of_word_labels():
    assert mc_labels.read_label("Yes, it is.", ["yes", "no"]) == 0
    assert mc_labels.read_label("no", ["yes", "no"]) == 1
    assert mc_labels.read_label("Nothing says so", ["yes", "no"]) is None


def test_read_choice_text_also_accepts_the_text_of_a_choice():
    choices, labels = ["the sun", "the sun and moon", "stars"], ["A", "B", "C"]
    assert mc_labels.read_choice_text("C", choices, labels) == 2
    assert mc_labels.read_choice_text("Stars.", choices, labels) == 2
    assert mc_labels.read_choice_text("The sun and moon, because", choices, labels) == 1  # longest prefix
    assert mc_labels.read_choice_text("the sun", choices, labels) == 0  # exact
    assert mc_labels.read_choice_text("planets", choices, labels) is None
    assert mc_labels.read_choice_text("x", ["same", "same"], ["A", "B"]) is None


def test_in_context_shots_answer_with_labels(base):
    task = mc_labels.labelled_task(_task())
    resolver = ConditionResolver(base, shots=2, seed=0)
    [p] = resolver.prepare(parse_condition("icl"), task, [(0, task.splits["test"][0])])
    assert p.prompt.count("A: Mercury") == 3  # two shots and the question
    shot_answers = [task.splits["train"][i].response for i in range(6)]
    assert set(shot_answers) == {"A", "B", "C", "D"}
    assert any(f"assistant\n{a}" in p.prompt for a in shot_answers)


def test_runner_scores_labelled_answers_and_keeps_protocols_apart(base, tmp_path):
    cfg = dict(benchmarks=["toy"], conditions=["base", "icl"], limit=8, gen_batch_size=4, quiet=True)
    recs = run_eval(EvalConfig(out=str(tmp_path / "l"), mc_protocol="labels", **cfg), base, [_task()])
    assert len(recs) == 16 and {r["metric"] for r in recs} == {"choice_label"}
    for r in recs:
        assert r["pred"] == mc_labels.read_label(r["completion"], ["A", "B", "C", "D"])
        assert r["correct"] == float(r["pred"] == r["gold"])
        assert r["correct_text"] >= r["correct"]  # the lenient reading accepts every label answer
    s = summarize(recs)
    base_recs = [r for r in recs if r["condition"] == "base"]
    assert s["scores"]["base"]["toy_arc"]["score"] == pytest.approx(100 * sum(r["correct"] for r in base_recs) / 8)
    md = markdown_table(s)
    assert "labels protocol" in md and "log-likelihood" not in md
    assert [r["n"] for r in paired_difference(recs, "base", "base + ICL")["tasks"]] == [8]
    # a directory holds one protocol: no labelled results in a log-likelihood directory, or the reverse
    run_eval(EvalConfig(out=str(tmp_path / "m"), **cfg), base, [_task()])
    with pytest.raises(ConfigError, match="mc_protocol: 'loglik' -> 'labels'"):
        run_eval(EvalConfig(out=str(tmp_path / "m"), mc_protocol="labels", **cfg), base, [_task()])
    # a directory written before the setting existed counts as log-likelihood
    run_json = tmp_path / "m" / "run.json"
    data = json.loads(run_json.read_text())
    del data["pinned"]["mc_protocol"]
    run_json.write_text(json.dumps(data))
    with pytest.raises(ConfigError, match="mc_protocol"):
        run_eval(EvalConfig(out=str(tmp_path / "m"), mc_protocol="labels", **cfg), base, [_task()])
    with pytest.raises(ConfigError, match="--mc-protocol must be one of loglik, labels"):
        EvalConfig(mc_protocol="letters")


def _records(preds, gold=0):
    return [{"condition": "base", "task": "arc_easy", "split": "test", "index": i, "metric": "choice_label",
             "pred": p, "gold": gold, "correct": float(p == gold)} for i, p in enumerate(preds)]


def test_report_flags_cells_where_one_answer_position_dominates():
    biased = summarize(_records([0] * 17 + [1, 2, None]))
    cell = biased["scores"]["base"]["arc_easy"]
    assert (cell["top_position"], cell["top_share"], cell["unread"]) == (0, 85.0, 5.0)
    assert "base / ARC-e: 85% choice 1" in markdown_table(biased)
    balanced = summarize(_records([0, 1, 2, 3] * 5))
    assert balanced["scores"]["base"]["arc_easy"]["top_share"] == 25.0
    assert "position preference" not in markdown_table(balanced)
    unread = summarize(_records([None] * 4))["scores"]["base"]["arc_easy"]
    assert (unread["top_position"], unread["unread"]) == (None, 100.0)
