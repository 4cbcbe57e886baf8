"""Answer forms: each checker on hand-written right and wrong answers, renderers, clauses, parameters."""

from __future__ import annotations

import pytest

from text2lora.data import forms
from text2lora.errors import DataError

# (form, params, answers that take the form, answers that do not) -- all written by hand.
CASES = [
    ("one_word", {}, ["Paris", " paris. ", '"Canberra"', "forty-two", "42", "don't"],
     ["", "   ", "New Delhi", "The answer is Paris", "...", "Paris\nFrance"]),
    ("max_words", {"n": 3}, ["yes", "It is raining", "Blue, green, red."],
     ["", "This has four words", "one two three four five", "!!! ???"]),
    ("all_caps", {}, ["PARIS", "HELLO WORLD 42!", "I"],
     ["Paris", "hello", "123", "", "ALMOST all caps"]),
    ("json_key", {"key": "answer"}, ['{"answer": "Paris"}', '  {"answer": 4, "why": "sum"}  ',
                                    '```json\n{"answer": null}\n```'],
     ['{"Answer": "Paris"}', '["answer"]', '{"answer": "Paris"', "answer: Paris", '"answer"', "",
      'Here it is: {"answer": 1}', '{"result": 1}']),
    ("bullets", {"n": 3}, ["- red\n- green\n- blue", "* a\n* b\n* c\n", "1. x\n2. y\n3. z", "• one\n\n• two\n• three"],
     ["- red\n- green", "- a\n- b\n- c\n- d", "red, green, blue", "Colours:\n- red\n- green\n- blue", "-red\n-green\n-blue",
      "- \n- b\n- c"]),
    ("number", {}, ["42", "-3.5", "1,000", " 7. ", "+12", ".5", '"8"'],
     ["forty-two", "42 apples", "The answer is 42", "", "1,00", "3/4", "4 2", "1.2.3"]),
    ("python_function", {"name": "add"}, ["def add(a, b):\n    return a + b\n",
                                          "```python\ndef add(a, b):\n    return a + b\n```\nThis adds them.",
                                          "import math\n\nasync def add(x):\n    return x",
                                          "Sure:\n```python\ndef add(a, b):\n    return a + b\n"],
     ["def plus(a, b):\n    return a + b", "def add(a, b)\n    return a + b", "add = lambda a, b: a + b",
      "class C:\n    def add(self):\n        pass", "The function add returns a + b.", "",
      "def helper():\n    def add():\n        pass", "```python\ndef add(a, b):\n    return (a +"]),
    ("label", {"labels": ["positive", "negative", "neutral"]}, ["positive", "Negative.", " NEUTRAL ", "'positive'"],
     ["ambivalent", "The sentiment is positive", "positive or negative", "", "pos"]),
]


@pytest.mark.parametrize("name,params,right,wrong", CASES, ids=[c[0] for c in CASES])
def test_checker_on_hand_written_answers(name, params, right, wrong):
    for answer in right:
        assert forms.check(name, answer, params), (name, answer)
    for answer in wrong:
        assert not forms.check(name, answer, params), (name, answer)


def test_every_form_has_cases():
    assert {c[0] for c in CASES} == set(forms.FORMS)


@pytest.mark.parametrize("name,params", [(c[0], c[1]) for c in CASES], ids=[c[0] for c in CASES])
def test_checker_never_raises(name, params):
    for junk in [None, 42, b"bytes", "\x00\x01", "```", "{" * 500, "def " + "(" * 300, "[" * 5000, "\ud800"]:
        assert forms.check(name, junk, params) in (False, True)


@pytest.mark.parametrize("name,params,plain,expected", [
    ("one_word", {}, "Paris.", "Paris"),
    ("one_word", {}, "New Delhi", None),
    ("max_words", {"n": 2}, "New Delhi", "New Delhi"),
    ("max_words", {"n": 2}, "the city of New Delhi", None),
    ("all_caps", {}, "New Delhi", "NEW DELHI"),
    ("all_caps", {}, "1234", None),
    ("json_key", {"key": "capital"}, "Paris", '{"capital": "Paris"}'),
    ("json_key", {"key": "total"}, "1,250", '{"total": 1250}'),
    ("bullets", {"n": 3}, "red, green and blue", "- red\n- green\n- blue"),
    ("bullets", {"n": 3}, "red\ngreen\nblue", "- red\n- green\n- blue"),
    ("bullets", {"n": 2}, "red, green and blue", None),
    ("number", {}, "1,250.0", "1250"),
    ("number", {}, "twelve", None),
    ("python_function", {"name": "answer"}, "12", "def answer():\n    return 12\n"),
    ("python_function", {"name": "answer"}, "Paris", "def answer():\n    return 'Paris'\n"),
    ("label", {"labels": ["yes", "no"]}, "Yes.", "yes"),
    ("label", {"labels": ["yes", "no"]}, "maybe", None),
])
def test_render(name, params, plain, expected):
    assert forms.render(name, plain, params) == expected
    if expected is not None:
        assert forms.check(name, expected, params)


def test_clauses_state_the_parameters():
    assert forms.clause("one_word") == "Answer with one word."
    assert all("5" in c for c in forms.clauses("max_words", {"n": 5}))
    assert all('"city"' in c for c in forms.clauses("json_key", {"key": "city"}))
    assert all("solve" in c for c in forms.clauses("python_function", {"name": "solve"}))
    labelled = forms.clauses("label", {"labels": ["yes", "no", "unsure"]})
    assert all("yes, no or unsure" in c for c in labelled)
    n = len(labelled)
    assert forms.clause("label", {"labels": ["a", "b"]}, variant=n + 1) == forms.clause("label", {"labels": ["a", "b"]}, 1)
    for name, form in forms.FORMS.items():
        assert len(set(form.phrasings)) >= 3, name


@pytest.mark.parametrize("name,params,needle", [
    ("nonsense", {}, "unknown answer form"),
    ("max_words", {}, "takes n"),
    ("max_words", {"n": 0}, "positive whole number"),
    ("max_words", {"n": "3"}, "positive whole number"),
    ("one_word", {"n": 3}, "takes no parameters"),
    ("json_key", {"key": ""}, "non-empty string"),
    ("python_function", {"name": "my func"}, "Python identifier"),
    ("label", {"labels": ["only"]}, "at least two"),
    ("label", {"labels": ["Yes", "yes."]}, "same once normalised"),
])
def test_bad_params_refused(name, params, needle):
    with pytest.raises(DataError, match=needle):
        forms.check_params(name, params)


@pytest.mark.parametrize("answer,golds,ok", [
    ("42", "42", True), ("42.", ["41", "42"], True), ("1,200.0", "1200", True), ("  The Cat ", "the cat", True),
    ('"tac"', "tac", True), ("-0.50", "-.5", True), ("42 apples", "42", False), ("", "", False),
    ("cat", ["dog", "bird"], False), ("7", "70", False),
])
def test_matches(answer, golds, ok):
    assert forms.matches(answer, golds) is ok


def test_split_items():
    assert forms.split_items("a, b; c and d") == ["a", "b", "c", "d"]
    assert forms.split_items("- x.\n\n- y") == ["x", "y"]
