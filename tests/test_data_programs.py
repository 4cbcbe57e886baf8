"""The generated programming tasks (collection ``programs``): every written solution passes its tests,
whose expected values come from a second, independent implementation of each function; the prompts
ask for the function the answer defines; the build is deterministic."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from text2lora.data.descriptions import programs_descriptions
from text2lora.data.sources.programs import HELDOUT_TASKS, KINDS, build_programs
from text2lora.eval.metrics import code_program, extract_code

N = 60


@pytest.fixture(scope="module")
def records():
    kept, dropped = build_programs(programs_descriptions(), seed=0, max_examples=N)
    assert not dropped
    return {r.name: r for r in kept}


def _examples(rec):
    return rec.splits["train"] + rec.splits["validation"]


# Runs each program in a fresh namespace of one child interpreter and reports which raised.
_RUNNER = """
import json, sys
failed = []
for i, program in enumerate(json.load(sys.stdin)):
    try:
        exec(compile(program, f"program{i}", "exec"), {})
    except BaseException as e:
        failed.append([i, repr(e)])
print(json.dumps(failed))
"""


def _failures(programs: list[str]) -> list[list]:
    out = subprocess.run([sys.executable, "-c", _RUNNER], input=json.dumps(programs), capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_every_kind_is_built_with_descriptions_and_held_out_tasks_marked(records):
    assert set(records) == {f"programs/{k}" for k in KINDS}
    for name, rec in records.items():
        assert rec.metric == "pass@1"
        assert len(rec.train_descriptions) >= 8 and rec.heldout_descriptions
        assert not set(rec.train_descriptions) & set(rec.heldout_descriptions)
        assert rec.info["heldout_task"] == (name in HELDOUT_TASKS)
        prompts = [ex.prompt for ex in _examples(rec)]
        assert len(prompts) == N and len(set(prompts)) == N


def test_every_solution_passes_its_tests_through_the_eval_harness(records):
    programs, where = [], []
    for rec in records.values():
        for ex in _examples(rec):
            assert len(ex.meta["test_list"]) == 3
            programs.append(code_program(ex.response, ex).script)  # the program `t2l eval` runs for a pass@1 task
            where.append(ex.prompt)
    failed = _failures(programs)
    assert not failed, [(where[i], err) for i, err in failed[:3]]


def test_the_tests_reject_a_function_that_returns_the_wrong_thing(records):
    # the expected values are not whatever any function returns: a function that returns None fails them all
    programs = []
    for rec in records.values():
        for ex in _examples(rec):
            name = re.search(r"^def (\w+)\(", extract_code(ex.response), re.M).group(1)
            programs.append(code_program(f"```python\ndef {name}(*args):\n    return None\n```", ex).script)
    assert len(_failures(programs)) == len(programs)


def test_answers_are_one_fenced_function_named_as_the_prompt_asks(records):
    for rec in records.values():
        for ex in _examples(rec):
            assert ex.response.startswith("```python\ndef ") and ex.response.endswith("\n```")
            code = extract_code(ex.response)
            header = code.splitlines()[0]
            name = re.match(r"def (\w+)\(", header).group(1)
            if ex.prompt.startswith("Complete the following Python function."):
                assert header in ex.prompt  # the signature to complete is the one answered
            else:
                assert f"`{name}" in ex.prompt
            if "Your code should pass this test:" in ex.prompt:
                assert ex.prompt.endswith(ex.meta["test_list"][0])
