"""The generated word-label tasks (collection ``labels``): every label is right by an independent reading of
its input, every description names the labels, and none of it touches the bare-input suite."""

from __future__ import annotations

import calendar
import re
from collections import Counter
from fractions import Fraction
from pathlib import Path

import pytest
import yaml

from text2lora.data.descriptions import labels_descriptions
from text2lora.data.sources.labels import HELDOUT_TASKS, KINDS, build_labels, vocabulary

SUITE_DIR = Path(__file__).resolve().parents[1] / "src" / "text2lora" / "resources" / "instruct"


@pytest.fixture(scope="module")
def records():
    kept, dropped = build_labels(labels_descriptions(), seed=0, max_examples=120)
    assert not dropped
    return {r.name: r for r in kept}


def _nums(text: str) -> list[int]:
    return [int(x) for x in re.findall(r"-?\d+", text)]


def _balanced(s: str) -> bool:
    while "()" in s:
        s = s.replace("()", "")
    return s == ""


def _heading(text: str) -> str:
    start, turns = re.fullmatch(r"facing (\w+); turn (.+)", text).groups()
    z = {"north": 1j, "east": 1, "south": -1j, "west": -1}[start]
    for t in turns.split(", then "):
        z *= {"left": 1j, "right": -1j, "around": -1}[t]
    return {1j: "north", 1: "east", -1j: "south", -1: "west"}[z]


def _rps(text: str) -> str:
    wins = Counter()
    for a, b in (r.split(" vs ") for r in text.split("; ")):
        if a != b:
            wins["first" if (a, b) in {("rock", "scissors"), ("scissors", "paper"), ("paper", "rock")} else "second"] += 1
    return "draw" if wins["first"] == wins["second"] else max(wins, key=wins.get)


def _sequence(text: str) -> str:
    xs = _nums(text)
    if len({b - a for a, b in zip(xs, xs[1:])}) == 1:
        return "arithmetic"
    return "geometric" if len({Fraction(b, a) for a, b in zip(xs, xs[1:])}) == 1 else "neither"


def _minutes(t: str) -> int:
    h, m = map(int, t.split(":"))
    return 60 * h + m


def _bands(x: int, edges: list[int], labels: list[str]) -> str:
    """The label of the first band whose upper edge (exclusive) is above ``x``."""
    return next((lab for edge, lab in zip(edges, labels) if x < edge), labels[-1])


_EXT = {"png": "image", "jpg": "image", "gif": "image", "bmp": "image", "mp3": "audio", "wav": "audio",
        "flac": "audio", "ogg": "audio", "mp4": "video", "mkv": "video", "avi": "video", "mov": "video",
        "pdf": "document", "docx": "document", "txt": "document", "odt": "document", "py": "code", "js": "code",
        "c": "code", "java": "code"}
_MONTH = {name: i for i, name in enumerate(calendar.month_name) if name}

# The label of an input, read from the input alone by other means than the generator's.
ORACLES = {
    "parity": lambda x: ["even", "odd"][int(x) & 1],
    "compare_pair": lambda x: (lambda a, b: "equal" if a == b else max((a, "greater"), (b, "smaller"))[1])(*_nums(x)),
    "first_letter": lambda x: "vowel" if x[:1] in set("aeiou") else "consonant",
    "palindrome": lambda x: "palindrome" if list(x) == list(reversed(x)) else "ordinary",
    "list_order": lambda x: (lambda xs: "ascending" if all(a < b for a, b in zip(xs, xs[1:])) else "descending"
                             if all(a > b for a, b in zip(xs, xs[1:])) else "unsorted")(_nums(x)),
    "digit_count": lambda x: {1: "single", 2: "double", 3: "triple", 4: "quadruple"}[len(x)],
    "letter_case": lambda x: "upper" if x == x.upper() else "lower" if x == x.lower() else "mixed",
    "day_part": lambda x: _bands(_minutes(x), [300, 720, 1020, 1320], ["night", "morning", "afternoon", "evening",
                                                                       "night"]),
    "season": lambda x: ["winter", "spring", "summer", "autumn"][(_MONTH[x.split()[0]] % 12) // 3],
    "temperature": lambda x: _bands(_nums(x)[0], [0, 10, 20, 30], ["freezing", "cold", "mild", "warm", "hot"]),
    "triangle": lambda x: ["equilateral", "isosceles", "scalene"][len(set(_nums(x))) - 1],
    "angle": lambda x: _bands(_nums(x)[0], [90, 91, 180, 181], ["acute", "right", "obtuse", "straight", "reflex"]),
    "exam": lambda x: "fail" if Fraction(x) < Fraction(1, 2) else "pass",
    "brackets": lambda x: "balanced" if _balanced(x) else "unbalanced",
    "quadrant": lambda x: {(1, 1): "first", (-1, 1): "second", (-1, -1): "third", (1, -1): "fourth"}[
        tuple((n > 0) - (n < 0) for n in _nums(x))],
    "alphabetical": lambda x: "before" if sorted(x.split(" / "))[0] == x.split(" / ")[0] else "after",
    "leap_year": lambda x: "leap" if calendar.isleap(int(x)) else "common",
    "compass": _heading,
    "rock_paper_scissors": _rps,
    "sequence_kind": _sequence,
    "repeated_letters": lambda x: "repeated" if Counter(x).most_common(1)[0][1] > 1 else "unique",
    "dominant_colour": lambda x: (lambda v: ["red", "green", "blue"][v.index(max(v))])(_nums(x)),
    "file_kind": lambda x: _EXT[x.rsplit(".", 1)[1]],
    "magnitude": lambda x: _bands(int(x), [100, 10000], ["small", "medium", "large"]),
    "char_kind": lambda x: "letter" if x[1].isalpha() else "digit" if x[1].isdigit() else "punctuation",
    "http_status": lambda x: {"1": "informational", "2": "success", "3": "redirect", "4": "client",
                              "5": "server"}[x[0]],
    "word_length": lambda x: _bands(len(x), [5, 8], ["short", "medium", "long"]),
    "time_order": lambda x: (lambda a, b: "earlier" if a < b else "later" if a > b else "same")(
        *map(_minutes, x.split(" and "))),
    "chessboard": lambda x: "light" if (ord(x[0]) - ord("a") + int(x[1])) % 2 == 0 else "dark",
}


def test_every_kind_is_built_with_ten_training_and_three_held_out_descriptions(records):
    assert set(records) == {f"labels/{k}" for k in KINDS} == {f"labels/{k}" for k in ORACLES}
    assert set(HELDOUT_TASKS) <= set(records)
    for name, rec in records.items():
        assert len(rec.train_descriptions) >= 10 and len(rec.heldout_descriptions) >= 3
        assert not set(rec.train_descriptions) & set(rec.heldout_descriptions)
        assert rec.info["heldout_task"] == (name in HELDOUT_TASKS)
        assert rec.metric == "exact_match" and rec.splits["train"] and rec.splits["validation"]


def test_every_label_is_right_by_an_independent_reading_of_the_input(records):
    for name, rec in records.items():
        oracle = ORACLES[name.split("/", 1)[1]]
        for ex in rec.splits["train"] + rec.splits["validation"]:
            assert ex.response == oracle(ex.prompt), (name, ex.prompt, ex.response)


def test_answers_are_the_task_labels_every_label_occurs_and_descriptions_name_them_all(records):
    for name, rec in records.items():
        labels = rec.info["labels"]
        answers = Counter(ex.response for ex in rec.splits["train"] + rec.splits["validation"])
        assert set(answers) == set(labels), name
        assert max(answers.values()) < 0.9 * sum(answers.values()), (name, answers)  # no task is one label
        for d in rec.train_descriptions + rec.heldout_descriptions:
            assert all(re.search(rf"\b{re.escape(lab)}\b", d) for lab in labels), (name, d)


def test_inputs_are_distinct_and_bare(records):
    for name, rec in records.items():
        prompts = [ex.prompt for exs in rec.splits.values() for ex in exs]
        assert len(prompts) == len(set(prompts)), name
        for ex in rec.splits["train"]:
            assert len(ex.prompt.split()) <= 12 and not any(d in ex.prompt for d in rec.train_descriptions)


def test_nothing_is_shared_with_the_bare_input_suite(records):
    suite = yaml.safe_load((SUITE_DIR / "suite.yaml").read_text(encoding="utf-8"))
    tasks = suite["tasks"] if isinstance(suite, dict) else suite
    suite_labels = {lab.lower() for t in tasks for lab in (t.get("params") or {}).get("labels", [])}
    suite_words = {w.lower() for w in re.findall(r"[A-Za-z]+", (SUITE_DIR / "words.yaml").read_text(encoding="utf-8"))}
    assert suite_labels and suite_words
    assert not {n.split("/", 1)[1] for n in records} & {t["name"] for t in tasks}
    ours = {lab.lower() for rec in records.values() for lab in rec.info["labels"]}
    assert not ours & suite_labels, ours & suite_labels
    assert not set(vocabulary()) & suite_words and len(vocabulary()) > 5000
    for name in ("labels/first_letter", "labels/word_length", "labels/repeated_letters", "labels/alphabetical"):
        for ex in records[name].splits["train"]:
            assert not set(re.findall(r"[a-z]+", ex.prompt.lower())) & suite_words, ex.prompt
