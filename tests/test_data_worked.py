"""The generated word problems (collection ``worked``): every worked solution is right, checked
against an independent reading of the question, and the build (shared with ``programs``) is deterministic."""

from __future__ import annotations

import re
from fractions import Fraction

import pytest

from text2lora.data.decontam import ngram_hashes
from text2lora.data.descriptions import labels_descriptions, programs_descriptions, worked_descriptions
from text2lora.data.prompts import COT_PREFILL
from text2lora.data.sources.labels import build_labels
from text2lora.data.sources.programs import build_programs
from text2lora.data.sources.worked import _NAMES as NAMES
from text2lora.data.sources.worked import HELDOUT_TASKS, KINDS, build_worked
from text2lora.eval.metrics import gsm8k_correct


@pytest.fixture(scope="module")
def records():
    kept, dropped = build_worked(worked_descriptions(), seed=0, max_examples=150)
    assert not dropped
    return {r.name: r for r in kept}


def _ints(text: str) -> list[int]:
    return [int(x) for x in re.findall(r"\d+", text)]


# An independent solver per kind: the answer from the question's numbers alone, in the order they appear,
# in exact arithmetic (a problem whose answer is not a whole number is itself a defect).
F = Fraction
SOLVERS = {
    "shopping": lambda n: n[4] - (n[0] * n[1] + n[2] * n[3]),
    "sharing": lambda n: F(n[0] * n[1] - n[2], n[3]),
    "distance": lambda n: n[0] * n[1] + n[2] * n[3],
    "earnings": lambda n: n[0] * n[1] * n[2] - n[3],
    "savings": lambda n: F(n[0] - n[1], n[2]),
    "recipe": lambda n: F(n[2], n[1]) * n[0],
    "inventory": lambda n: n[0] + n[1] * n[2] - n[3],
    "discount": lambda n: n[2] * (n[0] - F(n[0] * n[1], 100)),
    "area": lambda n: n[0] * n[1] * n[2],
    "comparison": lambda n: n[0] + (n[0] - n[1]) + (n[0] - n[1]) * n[2],
    "reading": lambda n: n[0] - n[1] * n[2],
    "ages": lambda n: n[1] + (n[1] + n[0]) + 2 * n[2],
}

_EQUATION = re.compile(r"((?:\d+ [×÷*/x+\-] )+\d+) = \$?(\d+)")
_TIMES, _DIVIDE = "×*x", "÷/"


def _value(expr: str) -> Fraction:
    tokens = expr.split()
    out = Fraction(int(tokens[0]))
    ops = {**{t: lambda a, b: a * b for t in _TIMES}, **{d: lambda a, b: a / b for d in _DIVIDE},
           "+": lambda a, b: a + b, "-": lambda a, b: a - b}
    # every expression written here uses one precedence level, so left to right is the usual reading
    assert len({("×÷" if t in _TIMES + _DIVIDE else "+-") for t in tokens[1::2]}) == 1, expr
    for op, num in zip(tokens[1::2], tokens[2::2]):
        out = ops[op](out, Fraction(int(num)))
    return out


def test_every_kind_is_built_with_descriptions_and_held_out_tasks_marked(records):
    assert set(records) == {f"worked/{k}" for k in KINDS}
    for name, rec in records.items():
        assert len(rec.train_descriptions) >= 8 and rec.heldout_descriptions
        assert not set(rec.train_descriptions) & set(rec.heldout_descriptions)
        assert rec.info["heldout_task"] == (name in HELDOUT_TASKS)
        prompts = [ex.prompt for exs in rec.splits.values() for ex in exs]
        assert len(prompts) == 150 and len(set(prompts)) == 150


def test_solutions_are_right_by_an_independent_reading_of_the_question(records):
    for name, rec in records.items():
        solve = SOLVERS[name.split("/", 1)[1]]
        for ex in rec.splits["train"] + rec.splits["validation"]:
            answer = F(solve(_ints(ex.prompt)))
            assert answer > 0 and answer.denominator == 1, ex.prompt
            answer = int(answer)
            assert ex.meta["answer"] == str(answer), (ex.prompt, ex.response)
            assert ex.response.endswith(tuple(f"{sep}{closing} {answer}." for sep in " \n"
                                              for closing in ("The answer is", "So the answer is",
                                                              "Therefore, the answer is")))
            assert gsm8k_correct(ex.response, str(answer))[0]  # the benchmark's own reading of the answer


def test_every_written_calculation_is_correct_and_whole(records):
    for rec in records.values():
        for ex in rec.splits["train"]:
            equations = _EQUATION.findall(ex.response)
            assert len(equations) >= 2, ex.response  # a worked solution, not a bare number
            for expr, result in equations:
                value = _value(expr)
                assert value == int(result) and value.denominator == 1, (expr, result)
            assert int(equations[-1][1]) == int(ex.meta["answer"])


# the generated collections share one builder: both are deterministic and drop a kind short of descriptions
GENERATED = [pytest.param(build_worked, worked_descriptions, "area", id="worked"),
             pytest.param(build_programs, programs_descriptions, "dict_ops", id="programs"),
             pytest.param(build_labels, labels_descriptions, "parity", id="labels")]


@pytest.mark.parametrize("build, descriptions, kind", GENERATED)
def test_build_is_deterministic_and_seeded(build, descriptions, kind):
    a, _ = build(descriptions(), seed=0, max_examples=20)
    b, _ = build(descriptions(), seed=0, max_examples=20)
    c, _ = build(descriptions(), seed=1, max_examples=20)
    prompts = lambda recs: [ex.prompt for r in recs for ex in r.splits["train"]]  # noqa: E731
    assert prompts(a) == prompts(b) != prompts(c)


@pytest.mark.parametrize("build, descriptions, kind", GENERATED)
def test_a_kind_without_enough_descriptions_is_dropped_with_the_reason(build, descriptions, kind):
    descs = descriptions()
    descs[kind] = {"train": descs[kind]["train"][:3], "heldout": []}
    kept, dropped = build(descs, max_examples=12)
    collection = kept[0].source
    assert f"{collection}/{kind}" not in {r.name for r in kept} and len(kept) > 1
    assert dropped == {f"{collection}/{kind}": "only 3 descriptions (< 8)"}


def test_no_generated_problem_shares_a_long_word_sequence_with_another_kind(records):
    # the kinds are separate tasks: a held-out kind must not be a copy of a trained one in other words
    held = {h for name in HELDOUT_TASKS for ex in records[name].splits["train"] for h in ngram_hashes(ex.prompt, 8)}
    for name, rec in records.items():
        if name in HELDOUT_TASKS:
            continue
        assert not any(ngram_hashes(ex.prompt, 8) & held for ex in rec.splits["train"]), name


def _opens_with_opener(text: str) -> bool:
    return text.startswith(("Let's work it out step by step.", "Step by step:"))


def test_layouts_vary_and_a_prefilled_solution_has_no_opener_of_its_own(records):
    # adapters should learn to reason, not one layout: about half the solutions are prose, half one step
    # a line; each of the three closings about a third; about a third open with GSM8K's prefill instead of
    # an opener
    exs = [ex for rec in records.values() for ex in rec.splits["train"]]
    n = len(exs)
    bodies = [ex.response.split("\n", 1)[1] if _opens_with_opener(ex.response) else ex.response for ex in exs]
    prose = sum("\n" not in body for body in bodies)
    lines = sum(all(line.endswith(".") for line in body.split("\n")) for body in bodies if "\n" in body)
    assert prose + lines == n
    so = sum(ex.response.endswith(f"So the answer is {ex.meta['answer']}.") for ex in exs)
    therefore = sum(ex.response.endswith(f"Therefore, the answer is {ex.meta['answer']}.") for ex in exs)
    prefilled = [ex for ex in exs if ex.meta.get("prefill")]
    assert 0.4 < prose / n < 0.6 and 0.25 < len(prefilled) / n < 0.42, (prose, len(prefilled), n)
    assert 0.25 < so / n < 0.42 and 0.25 < therefore / n < 0.42, (so, therefore, n)
    assert {ex.meta["prefill"] for ex in prefilled} == {COT_PREFILL}
    assert not any(_opens_with_opener(ex.response) for ex in prefilled)
    assert any(_opens_with_opener(ex.response) for ex in exs if not ex.meta.get("prefill"))


def test_the_problems_do_not_depend_on_the_layout(monkeypatch):
    # the layout has its own generator: forcing every solution into one layout leaves the problems as they were
    import text2lora.data.sources.worked as worked
    varied, _ = build_worked(worked_descriptions(), seed=0, max_examples=40)
    monkeypatch.setattr(worked, "PREFILL_SHARE", 0.0)
    # the same draw of the opener as solve_lines makes, then always one step a line
    monkeypatch.setattr(worked, "solve_lines",
                        lambda lines, answer, rng, style=None: (worked.pick(rng, worked._OPENERS), "\n".join(lines))[1])
    fixed, _ = build_worked(worked_descriptions(), seed=0, max_examples=40)
    split = lambda recs: [(r.name, s, ex.prompt) for r in recs for s, exs in r.splits.items() for ex in exs]  # noqa: E731
    assert split(varied) == split(fixed)
    assert not any(ex.meta.get("prefill") for r in fixed for ex in r.splits["train"])


def test_the_same_steps_come_in_several_wordings(records):
    # one sentence pattern per step teaches adapters the sentences (docs/lab/LOG.md section 23): each sign,
    # the two ways to write money and the connectives all occur, and a reworded solution holds the same
    # numbers in the same order as the kind's own words
    import random

    from text2lora.data.sources.worked import reword

    exs = [ex for rec in records.values() for ex in rec.splits["train"]]
    signs = [ex.response for ex in exs if re.search(r"\d [×*x] \d", ex.response)]
    for sign in _TIMES:
        assert 0.2 < sum(f" {sign} " in r for r in signs) / len(signs) < 0.5, sign
    assert any(re.search(r"\d / \d", ex.response) for ex in exs) and any(" ÷ " in ex.response for ex in exs)
    money = [ex.response for ex in records["worked/shopping"].splits["train"]]
    assert 0.3 < sum("$" in r for r in money) / len(money) < 0.7
    assert any(" dollars" in r for r in money)
    connected = sum(bool(re.search(r"(^|[\n.] ?)(First|To begin), ", ex.response)) for ex in exs) / len(exs)
    assert 0.2 < connected < 0.5, connected
    connectives = ("First, ", "To begin, ", "Then ", "Next, ", "Now ", "Finally, ", "In the end, ")
    for kind, make in KINDS.items():
        q, lines, answer = make(random.Random(kind))
        for seed in range(20):
            words = reword(lines, random.Random(seed))
            assert len(words) == len(lines)
            for line, w in zip(lines, words):
                # back to the kind's own words: the signs, money, and the connective with its lowercased word
                back = re.sub(r"\$(\d+)", r"\1 dollars", re.sub(r" [*x] ", " × ", w.replace(" / ", " ÷ ")))
                lead = next((c for c in connectives if back.startswith(c)), "")
                back = back[len(lead):]
                first = line.split(" ", 1)[0]
                if lead and (first in NAMES or first[0].isdigit()):
                    assert back == line, (line, w)  # a name or a number keeps its form after a connective
                elif lead:
                    assert back == line[0].lower() + line[1:], (line, w)
                else:
                    assert back == line, (line, w)
