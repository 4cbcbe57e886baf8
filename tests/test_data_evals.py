"""The evals collection (OpenAI's evals registry), on a miniature wheel in the real layout
(tests/fixtures/data/evals/wheel, made by make_fixture.py there); the slow test reads the real wheel."""

from __future__ import annotations

import json
import re
import zipfile
from pathlib import Path

import pytest

from text2lora.data.descriptions import evals_descriptions
from text2lora.data.reserved import is_reserved
from text2lora.data.sources.evals import (BrokenSample, build_evals, convert_sample, licence_of, read_licences,
                                          task_names)
from text2lora.encoders import check_descriptions
from text2lora.errors import DataError

TREE = Path(__file__).parent / "fixtures" / "data" / "evals" / "wheel"
DATA = TREE / "evals" / "registry" / "data"
KEPT = ["arith", "capitals", "cc_data", "multi/lower", "multi/upper", "varying"]


def _descriptions(names) -> dict[str, dict[str, list[str]]]:
    return {n: {"train": [f"{n} train {i}" for i in range(10)], "heldout": [f"{n} held {i}" for i in range(3)]}
            for n in names}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The fixture tree zipped into a wheel, as pip downloads it."""
    path = tmp_path_factory.mktemp("evals") / "evals-3.0.1.post1-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as z:
        for f in sorted(TREE.rglob("*")):
            if f.is_file():
                z.write(f, f.relative_to(TREE).as_posix())
    return path


@pytest.fixture(scope="module")
def built(wheel):
    return build_evals(str(wheel), _descriptions(KEPT + ["graded", "small", "nc_data", "quartz", "broken", "lexicon"]))


def _raw(rel: str) -> list[dict]:
    return [json.loads(line) for line in (DATA / rel).read_text(encoding="utf-8").splitlines()]


def test_kept_tasks_and_their_names(built):
    kept, dropped = built
    assert [r.name for r in kept] == [f"evals/{n}" for n in KEPT]
    # one task per samples file; a folder with two files names each by its stem
    assert task_names(["multi/upper.jsonl", "multi/lower.jsonl", "arith/samples.jsonl"]) == {
        "arith/samples.jsonl": "evals/arith", "multi/lower.jsonl": "evals/multi/lower",
        "multi/upper.jsonl": "evals/multi/upper"}
    assert not set(r.name for r in kept) & set(dropped)
    for r in kept:
        assert r.source == "evals" and r.metric == "exact_match"
        assert len(r.train_descriptions) == 10 and len(r.heldout_descriptions) == 3


def test_only_exact_answer_classes_become_tasks(built):
    kept, dropped = built
    assert "evals/graded" not in {r.name for r in kept}
    assert dropped["evals/graded"] == "no exact-answer eval reads its files (read by: ModelBasedClassify)"
    assert dropped["evals/orphan"] == "no exact-answer eval reads its files"
    by_name = {r.name: r for r in kept}
    assert by_name["evals/arith"].info["eval_class"] == ["Match"]
    assert by_name["evals/capitals"].info["eval_class"] == ["Includes"]
    assert by_name["evals/arith"].info["original_description"] == "Test adding two numbers."


def test_at_least_100_examples_after_duplicates(built):
    kept, dropped = built
    assert dropped["evals/small"] == "only 99 examples (< 100)"
    arith = next(r for r in kept if r.name == "evals/arith")
    raw = _raw("arith/samples.jsonl")
    distinct = {json.dumps(r, sort_keys=True) for r in raw}
    assert len(raw) == 122 and arith.num_examples() == len(distinct) == 120
    assert arith.info["duplicates_removed"] == 2
    assert len(arith.splits["validation"]) == 12 and len(arith.splits["train"]) == 108


def test_a_task_answering_almost_every_input_alike_is_dropped(built):
    kept, dropped = built
    answers = [str(r["ideal"]).strip().upper() for r in _raw("lexicon/samples.jsonl")]
    assert answers.count("Y") == 91 and len(answers) == 100  # counted here, not by the code under test
    assert dropped["evals/lexicon"] == ("one answer ('y') for 91 of 100 examples (at least 90%): the input does "
                                        "not decide the answer")
    # the kept tasks: no answer is given to 90% of the inputs
    for r in kept:
        texts = [e.response.strip().casefold() for e in r.splits["train"] + r.splits["validation"]]
        assert max(texts.count(t) for t in set(texts)) < 0.9 * len(texts)


def test_licences_recorded_and_non_commercial_or_unknown_dropped(built):
    kept, dropped = built
    by_name = {r.name: r for r in kept}
    assert by_name["evals/arith"].license == "MIT"  # not listed: the repository's licence
    assert by_name["evals/cc_data"].license == by_name["evals/cc_data"].info["license"] == "CC-BY-4.0"
    assert dropped["evals/nc_data"] == ("licence forbids commercial use (phrases: Creative Commons NonCommercial "
                                        "(CC BY-NC 4.0))")
    assert dropped["evals/odd_licence"].startswith("licence unknown (odd: The Frobnicator Licence")
    licences = read_licences((TREE / "evals-3.0.1.post1.dist-info" / "LICENSE.md").read_text())
    assert [c for c, _ in licences["nc_data"]] == ["quotes", "phrases"]
    assert licence_of("nc_data/sub", licences)[0] is None  # a sub-folder has its folder's licence
    assert licence_of("anything_else", licences) == ("MIT", "")


def test_instruction_beside_the_bare_input(built):
    kept, _ = built
    arith = next(r for r in kept if r.name == "evals/arith")
    raw = {r["input"][1]["content"]: r for r in _raw("arith/samples.jsonl")}
    for ex in arith.splits["train"] + arith.splits["validation"]:
        row = raw[ex.prompt]  # the prompt is exactly the user message
        assert ex.meta["instruction"] == row["input"][0]["content"]
        assert ex.meta["instruction"] not in ex.prompt
        a, b = map(int, re.fullmatch(r"(\d+) \+ (\d+)", ex.prompt).groups())
        assert ex.response == str(a + b)
    assert arith.info["instruction"] == "separate"
    # a system message that differs in every sample carries its data: it stays in the prompt
    varying = next(r for r in kept if r.name == "evals/varying")
    assert varying.info["instruction"] == "in_prompt"
    ex = varying.splits["train"][0]
    assert "instruction" not in ex.meta and ex.prompt.startswith("Count the letters of 'w") \
        and ex.prompt.endswith("\n\nHow many letters?")


def test_few_shot_turns_before_the_input_and_accepted_answers(built):
    kept, _ = built
    caps = next(r for r in kept if r.name == "evals/capitals")
    ex = caps.splits["train"][0]
    i = int(ex.prompt.rsplit(" ", 1)[1])
    assert ex.prompt == f"Example input: Peru\nExample answer: Lima\n\nCountry {i}"
    assert ex.meta == {"instruction": "Name the capital city of the country.", "targets": [f"City {i}", f"city{i}"]}
    assert ex.response == f"City {i}"


@pytest.mark.parametrize("sample, prompt, meta", [
    ({"input": [{"role": "user", "content": "Who?"}, {"role": "system", "content": "Answer with a name."}],
      "ideal": "Ann"}, "Who?", {"instruction": "Answer with a name."}),
    ({"input": [{"role": "system", "content": "Rules."}, {"role": "user", "content": "a", "name": "example_user"},
                {"role": "assistant", "content": "b", "name": "example_assistant"}, {"role": "user", "content": "c"}],
      "ideal": "d"}, "Example input: a\nExample answer: b\n\nc", {"instruction": "Rules."}),
    ({"input": [{"role": "system", "content": "Continue."}, {"role": "user", "content": "1. x"},
                {"role": "user", "content": "2."}], "ideal": "y"}, "1. x\n2.", {"instruction": "Continue."}),
    ({"input": [{"role": "system", "content": "Everything in one message."}], "ideal": "z"},
     "Everything in one message.", {}),
    ({"input": "plain text", "ideal": 3}, "plain text", {}),
    ({"input": [{"role": "system", "content": "Sort them."}, {"role": "user", "content": "B, A\n\nSort them."}],
      "ideal": "A, B"}, "B, A", {"instruction": "Sort them."}),
    ({"input": [{"role": "system", "content": "JSON."}, {"role": "user", "content": "v"}], "ideal": {"k": 1}},
     "v", {"instruction": "JSON."}),
])
def test_convert_sample_shapes(sample, prompt, meta):
    ex = convert_sample(sample)
    assert (ex.prompt, ex.meta) == (prompt, meta)
    assert ex.response == (json.dumps(sample["ideal"]) if isinstance(sample["ideal"], dict) else str(sample["ideal"]))


@pytest.mark.parametrize("sample, why", [
    ({"input": [{"role": "user", "content": "q"}], "ideal": ""}, "no answer"),
    ({"input": [{"role": "user", "content": "q"}], "ideal": []}, "no answer"),
    ({"input": [{"role": "user", "content": "q"}]}, "no answer"),
    ({"ideal": "a"}, "no 'input'"),
    ({"input": [{"role": "user", "content": ["image"]}], "ideal": "a"}, "no text content"),
    ({"input": [{"role": "system", "content": "Say it."}, {"role": "user", "content": " "}], "ideal": "a"}, "empty"),
    ({"input": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}], "ideal": "a"}, "assistant"),
])
def test_convert_sample_refuses_broken_lines(sample, why):
    with pytest.raises(BrokenSample, match=why):
        convert_sample(sample)


def test_broken_lines_drop_the_task_with_the_reason(built):
    _, dropped = built
    assert dropped["evals/broken"] == "1 broken line(s) in broken/samples.jsonl, the first at line 51: invalid JSON " \
                                      "(Expecting value)"
    assert dropped["evals/noanswer"].startswith("1 broken line(s) in noanswer/samples.jsonl, the first at line 12: "
                                                "no answer")


def test_reserved_folders_dropped(built):
    kept, dropped = built
    for name in ("evals/quartz", "evals/theory_of_mind/tomi"):
        assert is_reserved(name)
        assert dropped[name].startswith("reserved for evaluation")
    assert not any(is_reserved(r.name) for r in kept)


def test_missing_descriptions_drop_the_task(built, wheel):
    _, dropped = built
    assert dropped["evals/nodesc"] == "only 0 training and 0 held-out descriptions (needs 10 and 3)"
    descs = _descriptions(["arith"])
    descs["arith"]["heldout"] = descs["arith"]["heldout"][:2]
    kept, dropped = build_evals(str(wheel), descs, only=["arith"])
    assert kept == [] and dropped["evals/arith"] == "only 10 training and 2 held-out descriptions (needs 10 and 3)"


def test_folder_and_wheel_agree_and_only(built, wheel):
    kept, dropped = built
    kept2, dropped2 = build_evals(str(TREE), _descriptions(KEPT + ["graded", "small", "nc_data", "quartz", "broken"]))
    assert dropped2 == dropped
    assert [(r.name, r.splits["train"], r.splits["validation"]) for r in kept2] == \
        [(r.name, r.splits["train"], r.splits["validation"]) for r in kept]
    only, _ = build_evals(str(wheel), _descriptions(KEPT), only=["evals/multi/upper", "arith"])
    assert [r.name for r in only] == ["evals/arith", "evals/multi/upper"]
    with pytest.raises(DataError, match="not a task of the evals wheel: evals/nope"):
        build_evals(str(wheel), {}, only=["nope"])


def test_a_wheel_without_its_licence_file_is_refused(tmp_path):
    path = tmp_path / "other.whl"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("evals/registry/evals/x.yaml", "x: {}\n")
    with pytest.raises(DataError, match="has no evals-3.0.1.post1.dist-info/LICENSE.md"):
        build_evals(str(path), {})


def test_shipped_description_files_are_valid():
    descs = evals_descriptions()
    for task, sets in descs.items():
        assert len(sets["train"]) >= 10 and len(sets["heldout"]) >= 3, task
        assert not set(sets["train"]) & set(sets["heldout"]), task
        for d in check_descriptions(sets["train"] + sets["heldout"], max_chars=400):
            letters = [c for c in d if c.isalpha()]
            assert sum(c.isascii() for c in letters) >= 0.9 * len(letters), (task, d)
        assert not is_reserved(f"evals/{task}"), task
    # a held-out description is never a training description of another task
    train = {d for sets in descs.values() for d in sets["train"]}
    assert not train & {d for sets in descs.values() for d in sets["heldout"]}


@pytest.mark.slow
def test_real_wheel_builds_and_every_task_that_passes_the_filters_has_descriptions():
    from text2lora.data.fetch import ensure_package

    try:
        wheel = ensure_package("evals", quiet=True)
    except DataError as e:
        pytest.skip(f"the evals wheel cannot be had here: {e}")
    everything, _ = build_evals(str(wheel), {}, min_descriptions=0, min_heldout=0)
    kept, dropped = build_evals(str(wheel), evals_descriptions())
    assert [r.name for r in kept] == [r.name for r in everything]  # no task lacks descriptions
    assert 250 <= len(kept) <= 300
    assert not [r.name for r in kept if is_reserved(r.name)]
    reasons = list(dropped.values())
    assert sum(v.startswith("reserved for evaluation") for v in reasons) == 7  # theory_of_mind has no exact eval
    for r in kept:
        assert r.num_examples() >= 100 and len(r.splits["validation"]) >= 10
        assert r.license == "MIT" and set(r.info["eval_class"]) <= {"Match", "Includes", "FuzzyMatch", "JsonMatch"}
        assert all(e.response.strip() for e in r.splits["train"])
        assert all(e.meta["instruction"] not in e.prompt for e in r.splits["train"] if "instruction" in e.meta)
