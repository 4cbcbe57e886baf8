"""Metrics (multiple choice, GSM8K, code pass@1, exact match) and sandbox containment."""

from __future__ import annotations

import pytest

from text2lora.data import Example
from text2lora.eval import metrics
from text2lora.eval.sandbox import run_code, run_many


def test_choice_predictions_sum_vs_length_normalised():
    # the long choice has the lower sum but the higher per-character log-likelihood
    acc, norm = metrics.choice_predictions([-2.0, -6.0], ["cat", "a very long answer"])
    assert (acc, norm) == (0, 1)
    assert metrics.choice_predictions([-1.0, -1.0], ["x", "y"]) == (0, 0)  # ties: first choice
    with pytest.raises(ValueError):
        metrics.choice_predictions([-1.0], ["a", "b"])


@pytest.mark.parametrize("text,gold,ok,pred", [
    ("Step 1: 3 + 4 = 7. So the answer is 1,234.", "1234", True, "1234"),
    ("He pays $18 in total.", "18", True, "18"),
    ("The result is 72.0", "72", True, "72.0"),
    ("First 5 apples, then 3, so 8 apples remain. Later 2.", "8", False, "2"),  # last number counts
    ("It is -3 degrees.", "-3", True, "-3"),
    ("no numbers here", "5", False, None),
])
def test_gsm8k_last_number(text, gold, ok, pred):
    assert metrics.gsm8k_correct(text, gold) == (ok, pred)


def test_exact_match_first_line_and_targets():
    ex = Example("Capital of France?", "Paris", meta={"targets": ["Paris", "paris, france"]})
    assert metrics.exact_match("  paris.\nmore text", ex)
    assert metrics.exact_match("Paris, France", ex)
    assert not metrics.exact_match("Lyon", ex)


def test_extract_code_variants():
    assert metrics.extract_code("Sure:\n```python\ndef f():\n    return 1\n```\nExplanation") == "def f():\n    return 1\n"
    assert metrics.extract_code("def f():\n    return 2\n```\nThis returns 2.") == "def f():\n    return 2\n"
    assert metrics.extract_code("    return 3\n") == "    return 3\n"
    assert metrics.code_done("```python\nx = 1\n```") and not metrics.code_done("```python\nx = 1\n")
    assert metrics.code_done("x = 1\n```") and not metrics.code_done("x = 1")


HE = Example(prompt="Complete add", response="", meta={
    "code_prompt": "import math\n\ndef add(a, b):\n    \"\"\"Add two numbers.\"\"\"\n",
    "entry_point": "add",
    "test": "def check(candidate):\n    assert candidate(2, 3) == 5\n    assert candidate(-1, 1) == 0\n"})
MBPP = Example(prompt="Write mul", response="", meta={
    "test_list": ["assert mul(2, 3) == 6", "assert mul(0, 5) == 0"], "test_setup_code": ""})


@pytest.mark.parametrize("completion,passed", [
    ("    return a + b\n", True),                                                    # body continuing the prompt
    ("```python\ndef add(a, b):\n    return math.fsum([a, b])\n```\nDone.", True),   # full function, prompt imports
    ("```python\ndef add(a, b):\n    return a - b\n```", False),
    ("I cannot do that.", False),
])
def test_humaneval_pass_at_1(completion, passed):
    assert run_code(metrics.humaneval_program(completion, HE), timeout=10).passed is passed


def test_mbpp_pass_at_1():
    good = "```python\ndef mul(a, b):\n    return a * b\n```"
    bad = "def mul(a, b):\n    return a + b\n"
    res = run_many([metrics.code_program(good, MBPP), metrics.code_program(bad, MBPP)], timeout=10)
    assert [r.passed for r in res] == [True, False]


def _reference_solutions(name: str, sample):
    """The reference solutions of ``name``'s test items: the miniature fixture packages' (``sample``
    ``"fixture"``), else the built benchmarks collection's (``t2l data fetch benchmarks``), every item
    or about ``sample`` of them."""
    if sample == "fixture":
        from pathlib import Path

        from text2lora.data.sources.benchmarks import build_benchmarks

        olmo = Path(__file__).parent / "fixtures" / "data" / "olmo"
        return {r.name: r for r in build_benchmarks(olmo, olmo, olmo)}[name].splits["test"]
    from text2lora.data import get_task

    exs = get_task(name).splits["test"]
    always = {"HumanEval/53", 367}  # tests that `import random` (os.register_at_fork); setup code using the solution
    if sample is not None:
        exs = [e for i, e in enumerate(exs) if i % (len(exs) // sample) == 0 or e.meta["task_id"] in always]
    return exs


@pytest.mark.parametrize("name,sample", [
    ("humaneval", "fixture"), ("mbpp", "fixture"),
    pytest.param("humaneval", 30, marks=pytest.mark.slow), pytest.param("mbpp", 30, marks=pytest.mark.slow),
    pytest.param("humaneval", None, marks=pytest.mark.slow), pytest.param("mbpp", None, marks=pytest.mark.slow),
])
def test_reference_solutions_pass_in_the_sandbox(name, sample):
    """The benchmarks' own solutions pass: neither the sandbox nor the program assembly rejects correct code."""
    exs = _reference_solutions(name, sample)
    res = run_many([metrics.code_program(f"```python\n{e.response}\n```", e) for e in exs], timeout=20)
    failed = [(e.meta["task_id"], r.status, r.stderr[-200:]) for e, r in zip(exs, res) if not r.passed]
    assert not failed, failed


# Sandbox containment (every escape, against the real sandbox) is in tests/test_sandbox.py.

def test_sandbox_kills_process_group_on_timeout():
    # a program that sleeps forever is killed by the wall-clock limit (not by CPU time)
    r = run_code("import time\ntime.sleep(60)\n", timeout=1)
    assert r.status == "timeout" and r.seconds < 5 and not r.passed
