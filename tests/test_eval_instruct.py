"""The bare-input suite: its file loads with enough tasks and inputs, inputs carry no instruction, gold answers
are right (recomputed here), bad suite files are refused naming the task, scoring, the five conditions' prompts,
and a tiny-model run end to end through `t2l eval run -b instruct`."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from conftest import make_base, random_adapter
from text2lora.data import forms
from text2lora.errors import ConfigError, DataError
from text2lora.eval import instruct
from text2lora.eval.conditions import ConditionResolver, parse_condition
from text2lora.eval.runner import EvalConfig, resolve_eval_tasks, run_eval


@pytest.fixture(scope="module")
def suite():
    return instruct.load_suite()


def test_suite_size_kinds_descriptions_and_checkers(suite):
    assert len(suite) >= 30
    kinds = {}
    for t in suite:
        spec = t.info["instruct"]
        kinds.setdefault(spec["kind"], []).append(t.name)
        assert spec["form"] in forms.FORMS, t.name                      # every task has a checker
        assert len(t.heldout_descriptions) == 1 and len(t.heldout_descriptions[0].split()) >= 6, t.name
        inputs = [e.prompt for e in t.splits["test"]]
        assert len(inputs) >= 50 and len(set(inputs)) == len(inputs), t.name
        if spec["kind"] == "label":                                     # the description names every label
            for label in spec["params"]["labels"]:
                assert re.search(rf"\b{re.escape(label)}\b", t.heldout_descriptions[0], re.I), (t.name, label)
            golds = [e.meta["targets"][0] for e in t.splits["test"]]
            assert set(golds) <= set(spec["params"]["labels"]) and len(set(golds)) >= 2, t.name
        if spec["kind"] == "short":
            assert all(e.meta["targets"] for e in t.splits["test"]), t.name
    assert {k: len(v) >= 8 for k, v in kinds.items()} == {"label": True, "form": True, "short": True}


# words that instruct a model or state an answer form; an input of the suite must hold none of them
_INSTRUCTION = re.compile(
    r"\b(answer|reply|respond|classify|decide|translate|convert|output|json|bullet(ed)?|capital letters|upper[- ]case|"
    r"one word|single word|at most|or fewer|number only|python|yes or no|true or false|label)\b", re.I)


def test_inputs_never_hold_the_instruction(suite):
    for t in suite:
        desc = t.heldout_descriptions[0].lower()
        spec = t.info["instruct"]
        for e in t.splits["test"]:
            text = e.prompt.lower()
            assert desc not in text, (t.name, e.prompt)
            assert not _INSTRUCTION.search(e.prompt), (t.name, e.prompt)
            if spec["kind"] == "label":  # the list of labels is the description's, not the input's
                labels = [x.lower() for x in spec["params"]["labels"]]
                assert sum(bool(re.search(rf"\b{re.escape(x)}\b", text)) for x in labels) <= 1, (t.name, e.prompt)
            # no phrasing of the answer form's clause appears either
            assert not any(c.lower().rstrip(".") in text for c in forms.clauses(spec["form"], spec["params"])), t.name


def _gold(task: str, text: str) -> str | None:
    """The answer of a short-answer or arithmetic label input, recomputed from the input alone."""
    nums = [int(x) for x in re.findall(r"-?\d+", text)]
    if task == "add":
        return str(nums[0] + nums[1])
    if task == "multiply":
        return str(nums[0] * nums[1])
    if task == "difference":
        return str(abs(nums[0] - nums[1]))
    if task == "km_to_m":
        return str(round(float(text.split()[0]) * 1000))
    if task == "hours_to_minutes":
        return str(round(float(text.split()[0]) * 60))
    if task == "kg_to_g":
        return str(round(float(text.split()[0]) * 1000))
    if task == "reverse_word":
        return "".join(reversed(text))
    if task == "count_letters":
        return str(len(text))
    if task == "drop_vowels":
        return "".join(c for c in text if c not in "aeiou")
    if task == "next_term":
        return str(nums[-1] + (nums[-1] - nums[-2]))
    if task == "digit_sum":
        return str(sum(int(c) for c in text))
    if task == "roman_numeral":
        values = {"I": 1, "V": 5, "X": 10, "L": 50, "C": 100}
        total = sum(-values[a] if values[a] < values[b] else values[a] for a, b in zip(text, text[1:]))
        return str(total + values[text[-1]])
    if task == "divisible":
        return "yes" if nums[0] % nums[1] == 0 else "no"
    if task == "prime":
        return "yes" if all(nums[0] % d for d in range(2, nums[0])) else "no"
    if task == "arithmetic_claims":
        a, op, b, _, c = text.split()
        value = eval(f"{a} {'*' if op == 'x' else op} {b}")  # noqa: S307 - our own two-number input
        return "true" if value == int(c) else "false"
    if task == "sign":
        value = eval(text.replace("x", "*"))  # noqa: S307 - our own two-number input
        return "positive" if value > 0 else "negative" if value < 0 else "zero"
    return None


def test_gold_answers_recomputed(suite):
    checked = 0
    for t in suite:
        name = t.name.split("/", 1)[1]
        for e in t.splits["test"]:
            want = _gold(name, e.prompt)
            if want is not None:
                assert forms.matches(want, e.meta["targets"]), (t.name, e.prompt, e.meta["targets"], want)
                checked += 1
    assert checked >= 15 * 50


def test_scoring_by_kind(suite):
    by = {t.name: t for t in suite}
    sent = by["instruct/sentiment"]
    ex = sent.splits["test"][0]
    gold = ex.meta["targets"][0]
    other = next(x for x in ("positive", "negative", "neutral") if x != gold)
    r = instruct.score(f"{gold.capitalize()}.", ex, sent)
    assert (r["correct"], r["form_ok"]) == (1.0, 1.0)
    r = instruct.score(other, ex, sent)
    assert (r["correct"], r["form_ok"]) == (0.0, 1.0)
    r = instruct.score(f"The review is {gold}.", ex, sent)
    assert (r["correct"], r["form_ok"]) == (0.0, 0.0)
    add = by["instruct/add"]
    ex = add.splits["test"][0]
    a, b = (int(x) for x in ex.prompt.split(" and "))
    r = instruct.score(f"{a + b:,}", ex, add)
    assert (r["correct"], r["form_ok"]) == (1.0, 1.0)
    r = instruct.score(f"The sum is {a + b}.", ex, add)
    assert (r["correct"], r["form_ok"]) == (0.0, 0.0)
    js = by["instruct/city_json"]
    ex = js.splits["test"][0]
    assert instruct.score('{"city": "Oslo"}', ex, js)["correct"] == 1.0
    assert instruct.score("Oslo", ex, js)["correct"] == 0.0
    assert instruct.score('{"city": ', ex, js)["correct"] == 0.0    # broken JSON scores wrong, never raises


def _suite_file(tmp_path: Path, task: dict) -> Path:
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump({"inputs_per_task": 2, "tasks": [
        {"name": "fine", "kind": "short", "form": "number", "description": "Add the numbers; reply with digits.",
         "inputs": [{"input": "1 and 2", "gold": 3}, {"input": "2 and 2", "gold": 4}]}, task]}))
    return path


@pytest.mark.parametrize("task,needle", [
    ({"name": "no_desc", "kind": "form", "form": "one_word", "inputs": ["x"]}, "task 'no_desc' has no description"),
    ({"name": "no_check", "kind": "form", "description": "Say something.", "inputs": ["x"]},
     "task 'no_check' has no checker"),
    ({"name": "bad_form", "kind": "form", "form": "haiku", "description": "Say it.", "inputs": ["x"]},
     "task 'bad_form': unknown answer form 'haiku'"),
    ({"name": "bad_params", "kind": "form", "form": "bullets", "description": "List.", "inputs": ["x"]},
     "task 'bad_params': answer form 'bullets' takes n"),
    ({"name": "gold_off", "kind": "label", "form": "label", "params": {"labels": ["yes", "no"]},
      "description": "Yes or no.", "inputs": [{"input": "x", "gold": "maybe"}]}, "gold 'maybe' .* not one of its labels"),
    ({"name": "no_gold", "kind": "short", "form": "number", "description": "Count.", "inputs": ["x"]},
     "no gold answer"),
    ({"name": "both", "kind": "form", "form": "number", "description": "Count.", "inputs": ["x"], "generator": "prime"},
     "exactly one of 'generator'"),
    ({"name": "gen", "kind": "form", "form": "number", "description": "Count.", "generator": "nope"},
     "unknown generator 'nope'"),
    ({"name": "fine", "kind": "form", "form": "number", "description": "Count.", "inputs": ["x"]}, "more than once"),
])
def test_bad_suite_file_refused_naming_the_task(tmp_path, task, needle):
    with pytest.raises(DataError, match=needle):
        instruct.load_suite(_suite_file(tmp_path, task))


def test_entries_resolve(tmp_path):
    names = [t.name for t in resolve_eval_tasks(["instruct/add", "instruct/s*", "instruct/add"])]
    assert names[0] == "instruct/add" and len(names) == len(set(names)) and "instruct/sentiment" in names
    with pytest.raises(DataError, match="no task of the bare-input suite is named 'instruct/nope'"):
        resolve_eval_tasks(["instruct/nope"])
    own = _suite_file(tmp_path, {"name": "two", "kind": "form", "form": "one_word", "description": "One word.",
                                 "inputs": ["a", "b"]})
    assert [t.name for t in resolve_eval_tasks([f"instruct:{own}"])] == ["instruct/fine", "instruct/two"]


@pytest.fixture(scope="module")
def base():
    return make_base("llama", seed=3)


def test_condition_prompts(base, suite):
    task = next(t for t in suite if t.name == "instruct/sentiment")
    desc = task.heldout_descriptions[0]
    ex = task.splits["test"][0]
    resolver = ConditionResolver(base)
    bare = resolver.prepare(parse_condition("base"), task, [(0, ex)])[0].prompt
    user = resolver.prepare(parse_condition("description"), task, [(0, ex)])[0].prompt
    system = resolver.prepare(parse_condition("description-system"), task, [(0, ex)])[0].prompt
    assert desc not in bare and ex.prompt in bare
    assert f"{desc}\n\n{ex.prompt}" in user
    sys_at, user_at = system.index(desc), system.index(ex.prompt)
    assert sys_at < user_at and "system" in system[:sys_at] and f"{desc}\n\n" not in system
    from text2lora.eval.conditions import system_prompt
    from text2lora.testing import tiny_tokenizer

    refusing = tiny_tokenizer()  # a template that, like Gemma's, has no system role
    refusing.chat_template = ("{% for m in messages %}{% if m['role'] == 'system' %}"
                              "{{ raise_exception('System role not supported') }}{% endif %}{{ m['content'] }}{% endfor %}")
    with pytest.raises(ConfigError, match="does not take a system message .*System role not supported"):
        system_prompt(ex, refusing, desc)


def test_tiny_model_run_end_to_end(base, tmp_path):
    from conftest import perturbed_generator

    perturbed_generator(base).save_pretrained(tmp_path / "gen")
    random_adapter(base.spec, seed=5).save(tmp_path / "mt")
    conds = ["base", "description", "description-system", f"T2L=t2l:{tmp_path / 'gen'}",
             f"T2L+d=t2l-description:{tmp_path / 'gen'}", f"MT=adapter:{tmp_path / 'mt'}"]
    names = ["instruct/sentiment", "instruct/divisible", "instruct/slogan_caps", "instruct/add"]
    cfg = EvalConfig(benchmarks=names, conditions=conds, limit=2, out=str(tmp_path / "out"), max_new_tokens=4,
                     quiet=True)
    records = run_eval(cfg, base)
    assert len(records) == len(conds) * len(names) * 2
    for r in records:
        assert r["metric"] == "instruct" and r["kind"] in instruct.KINDS
        task = next(t for t in resolve_eval_tasks([r["task"]]))
        spec = task.info["instruct"]
        assert r["form_ok"] == float(forms.check(spec["form"], r["completion"], spec["params"]))
    t2l = [r for r in records if r["condition"] == "T2L"]
    assert all(r["description"] for r in t2l)
    from text2lora.eval.report import write_reports

    summary = write_reports(records, cfg.out, conditions=[parse_condition(c).label for c in conds])
    suite = json.loads((Path(cfg.out) / "instruct.json").read_text())
    assert suite["conditions"][0] == "base" and set(suite["table"]) == {parse_condition(c).label for c in conds}
    base_row = suite["table"]["base"]
    mine = [r for r in records if r["condition"] == "base" and r["kind"] == "label"]
    by_task = {}
    for r in mine:
        by_task.setdefault(r["task"], []).append(r["correct"])
    assert base_row["label_accuracy"] == pytest.approx(100 * sum(sum(v) / len(v) for v in by_task.values()) / 2)
    assert suite["best_base_description"] in ("base + description", "base + description (system)")
    pairs = {(p["a"], p["b"]) for p in suite["paired"]}
    assert ("base", "T2L") in pairs and ("MT", "T2L") in pairs and ("T2L", "T2L+d") in pairs
    assert "| base |" in summary["instruct"] and "label accuracy" in summary["instruct"]
