"""The reasoning collection (reasoning-gym generators): the instruction split, the drops and the worker
protocol on hand-made rows and a stand-in package built here; behind ``slow``, the real package, built
twice in two processes."""

from __future__ import annotations

import hashlib
import json
import math
import os
import subprocess
import sys
import textwrap

import pytest

from text2lora.data import fetch
from text2lora.data.descriptions import DESCRIPTIONS_DIR, load_description_sets, reasoning_descriptions
from text2lora.data.records import record_to_dict
from text2lora.data.reserved import REASON as RESERVED_REASON
from text2lora.data.reserved import REASONING_RESERVED
from text2lora.data.sources import reasoning as R
from text2lora.encoders import check_descriptions
from text2lora.errors import DataError, PackageUnavailableError

DESCS = {"train": [f"Training description {i}." for i in range(10)], "heldout": ["A", "B", "C"]}


def _rows(questions, answers=None, **extra):
    answers = answers if answers is not None else [str(i) for i in range(len(questions))]
    return {"category": "arithmetic", "rows": [{"question": q, "answer": a} for q, a in zip(questions, answers)],
            **extra}


# ----------------------------------------------------------------------------- instruction split

def _split(questions):
    lead, tail = R.split_instruction(questions)
    return [(q[:lead].strip(), q[lead:len(q) - tail].strip(), q[len(q) - tail:].strip()) for q in questions]


def test_fixed_opening_and_closing_sentences_are_the_instruction():
    qs = [f"Find the greatest common divisor of these numbers: {a}, {b}. Give only the number as your answer."
          for a, b in ((12, 18), (7, 21), (100, 75))]
    parts = _split(qs)
    assert {p[0] for p in parts} == {"Find the greatest common divisor of these numbers:"}
    assert {p[2] for p in parts} == {"Give only the number as your answer."}
    assert [p[1] for p in parts] == ["12, 18.", "7, 21.", "100, 75."]


def test_questions_without_fixed_text_stay_whole():
    qs = ["Add 3 and 4.", "What is 10 minus 2?", "Multiply 6 by 7."]
    assert R.split_instruction(qs) == (0, 0)
    assert R.split_instruction(["Only one question: 1 + 1."]) == (0, 0)  # nothing tells what is fixed


def test_a_cut_never_splits_a_word_a_list_a_fence_or_brackets():
    # the common opening "Calculate 1" ends inside a number: no cut there
    assert R.split_instruction(["Calculate 12 + 5.", "Calculate 19 * 2."]) == (0, 0)
    # the shared first list item is not cut off from the second
    qs = ["Rules:\n1. Keep the order.\n2. Drop item " + x + ".\n\nList: " + y for x, y in (("a", "p q"), ("b", "r s"))]
    assert all("1. Keep" not in p[0] or "2. Drop" in p[0] for p in _split(qs))
    # the fenced board's shared first rows stay with the board
    qs = [f"Solve the puzzle below.\n```\n+---+\n| {c} |\n+---+\n```" for c in "xyz"]
    assert {p[0] for p in _split(qs)} == {"Solve the puzzle below."}
    # a shared last row of a grid "[...]]" is not a closing instruction (unbalanced brackets)
    qs = [f"Will it halt? Reply True or False.\n\nBoard:\n[[0 {c} 0]\n [0 0 0]]" for c in "0123"]
    parts = _split(qs)
    assert {p[0] for p in parts} == {"Will it halt? Reply True or False."} and {p[2] for p in parts} == {""}


def test_short_labels_and_clauses_after_a_colon_are_not_instructions():
    qs = ["Examples:\nInput 1: [1, 2]\nOutput 1: [2]\nInput: [5, 6]\nOutput:",
          "Examples:\nInput 1: [3]\nOutput 1: []\nInput: [9, 9, 9]\nOutput:"]
    assert R.split_instruction(qs) == (0, 0)  # "Examples:", "Input 1:" and "Output:" are labels, not instructions
    qs = ["Move the disks following the rules:\n- one at a time\n- never a larger on a smaller\n\nStart: 3 disks",
          "Move the disks following the rules:\n- one at a time\n- never a larger on a smaller\n\nStart: 5 disks"]
    lead, tail = R.split_instruction(qs)
    assert qs[0][:lead].strip().endswith("never a larger on a smaller")  # the list stays with its colon line
    qs = [f"A cube has:\n- a {a} top\n- a {b} front\n\nWhich colour is on top? Give the colour only."
          for a, b in (("red", "blue"), ("green", "pink"), ("gold", "grey"))]
    assert {p[0] for p in _split(qs)} == {""}  # "A cube has:" introduces its list, it does not instruct


# ----------------------------------------------------------------------------- records from rows

def test_tasks_from_rows_drops_with_reasons_and_keeps_bare_prompts():
    qs = [f"Find the lcm of these numbers: {i}, {i + 1}. Give only the number." for i in range(60)]
    generated = {
        "lcm": _rows(qs + qs[:5], [str(i * (i + 1)) for i in range(60)] + ["x"] * 5),  # 5 repeated questions
        "verifier": _rows(qs, [None] * 60),
        "partly": _rows(qs, [None] * 5 + ["7"] * 55),
        "tiny": _rows(qs[:12]),
        "undescribed": _rows(qs),
        "broken": {"error": "ValueError: bad config"},
    }
    descs = {g: DESCS for g in ("lcm", "verifier", "partly", "tiny", "broken")}
    kept, dropped = R.tasks_from_rows(generated, descs, version="0.1.25", seed=0)
    assert dropped == {
        "reasoning/verifier": R.NO_ANSWER,
        "reasoning/tiny": "only 12 distinct questions with an answer (< 50) of 12 generated",
        "reasoning/undescribed": "only 0 descriptions (< 10)",
        "reasoning/broken": "the generator failed: ValueError: bad config"}
    by = {r.name: r for r in kept}
    assert set(by) == {"reasoning/lcm", "reasoning/partly"}
    lcm = by["reasoning/lcm"]
    assert lcm.metric == "exact_match" and lcm.source == "reasoning" and lcm.license == "Apache-2.0"
    assert lcm.info["num_examples_total"] == 60 and lcm.info["num_generated"] == 65
    assert lcm.info["category"] == "arithmetic" and lcm.info["version"] == "0.1.25"
    assert lcm.info["generator_seed"] == R.task_seed("lcm", 0)
    assert len(lcm.splits["validation"]) == 10 and len(lcm.splits["train"]) == 50
    examples = lcm.splits["train"] + lcm.splits["validation"]
    assert {e.meta["instruction"] for e in examples} == {"Find the lcm of these numbers:\n\nGive only the number."}
    pairs = {e.prompt: e.target for e in examples}
    assert pairs["3, 4."] == "12" and pairs["59, 60."] == str(59 * 60)  # first answer of a repeated question kept
    assert by["reasoning/partly"].info["num_examples_total"] == 55  # rows without an answer go, not the task


def test_every_accepted_answer_is_kept_as_targets():
    qs = [f"Place {i} queens on the board below so no two attack.\nBoard {i}" for i in range(60)]
    gen = _rows(qs)
    for i, row in enumerate(gen["rows"]):
        row["targets"] = [str(i), f"alt {i}"] if i % 2 else [str(i)]
    kept, _ = R.tasks_from_rows({"n_queens": gen}, {"n_queens": DESCS}, version="0.1.25")
    examples = {e.target: e for split in kept[0].splits.values() for e in split}
    assert examples["1"].meta["targets"] == ["1", "alt 1"] and "targets" not in examples["2"].meta


def test_task_seed_is_a_stable_hash_not_pythons_hash():
    expected = int.from_bytes(hashlib.sha256(b"reasoning/gcd:0").digest()[:4], "big")
    assert R.task_seed("gcd") == expected
    code = "from text2lora.data.sources.reasoning import task_seed; print(task_seed('gcd'), task_seed('gcd', 3))"
    outs = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                           env={**os.environ, "PYTHONHASHSEED": h}).stdout for h in ("1", "2")}
    assert outs == {f"{expected} {R.task_seed('gcd', 3)}\n"} and R.task_seed("gcd", 3) != expected


# ----------------------------------------------------------------------------- the worker, on a stand-in package

FAKE = {
    "reasoning_gym/__init__.py": """
        from .factory import DATASETS, create_dataset
    """,
    "reasoning_gym/factory.py": """
        from .arithmetic.gens import Adder, Broken, NoAnswer, SetOrder
        from .logic.gens import Syllogism
        DATASETS = {"adder": (Adder, dict), "no_answer": (NoAnswer, dict), "syllogism": (Syllogism, dict),
                    "set_order": (SetOrder, dict), "broken": (Broken, dict), "composite": (Adder, dict)}
        def create_dataset(name, size, seed):
            return DATASETS[name][0](size, seed)
    """,
    "reasoning_gym/arithmetic/__init__.py": "",
    "reasoning_gym/arithmetic/gens.py": """
        import random
        class Base:
            def __init__(self, size, seed):
                self.size, self.seed = size, seed
        class Adder(Base):
            def __getitem__(self, i):
                rng = random.Random(self.seed + i)
                a, b = rng.randint(0, 10**6), rng.randint(0, 10**6)
                print("generators may print")
                return {"question": f"Add these numbers: {a} and {b}. Reply with the sum only.",
                        "answer": str(a + b), "metadata": {}}
        class NoAnswer(Base):
            def __getitem__(self, i):
                return {"question": f"Plan route {i}.", "answer": None, "metadata": {}}
        class SetOrder(Base):  # depends on the order of a set of strings: on PYTHONHASHSEED
            def __getitem__(self, i):
                words = list({f"w{self.seed % 97}_{i}_{k}" for k in range(8)})
                return {"question": "Repeat the first word of: " + " ".join(words), "answer": words[0],
                        "metadata": {"valid_answers": words[:2]}}
        class Broken(Base):
            def __getitem__(self, i):
                raise ValueError("cannot make this one")
    """,
    "reasoning_gym/logic/__init__.py": "",
    "reasoning_gym/logic/gens.py": """
        from ..arithmetic.gens import Adder
        class Syllogism(Adder):
            pass
    """,
    "reasoning_gym-0.1.25.dist-info/METADATA": "Metadata-Version: 2.1\nName: reasoning-gym\nVersion: 0.1.25\n",
}


@pytest.fixture
def fake_install(tmp_path, monkeypatch):
    root = tmp_path / "pkgs"
    for rel, text in FAKE.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(textwrap.dedent(text))
    monkeypatch.setattr(fetch, "ensure_installed", lambda key, quiet=False: root)
    return root


def test_build_runs_the_generators_in_a_subprocess_and_drops_with_reasons(fake_install):
    descs = {g: DESCS for g in ("adder", "no_answer", "set_order", "broken", "syllogism")}
    kept, dropped = R.build_reasoning(descs, max_examples=60)
    assert dropped == {"reasoning/no_answer": R.NO_ANSWER, "reasoning/syllogism": RESERVED_REASON,
                       "reasoning/broken": "the generator failed: ValueError: cannot make this one"}
    by = {r.name: r for r in kept}
    assert set(by) == {"reasoning/adder", "reasoning/set_order"}  # "composite" is not a task
    adder = by["reasoning/adder"]
    assert adder.info["category"] == "arithmetic" and adder.num_examples() == 60
    for ex in adder.splits["train"]:
        a, b = map(int, ex.prompt.removesuffix(".").split(" and "))  # the bare input: "A and B."
        assert int(ex.target) == a + b
        assert ex.meta["instruction"] == "Add these numbers:\n\nReply with the sum only."
    order = by["reasoning/set_order"]
    assert all(e.meta["targets"][0] == e.target for e in order.splits["train"])
    with pytest.raises(DataError, match="syllogism"):
        R.build_reasoning(descs, only=["reasoning/syllogism"])
    with pytest.raises(DataError, match="not a reasoning-gym generator: nope"):
        R.build_reasoning(descs, only=["nope"])


def test_the_build_is_identical_across_processes_with_different_hash_seeds(fake_install):
    code = textwrap.dedent(f"""
        import json
        from text2lora.data import fetch
        from text2lora.data.records import record_to_dict
        from text2lora.data.sources import reasoning as R
        fetch.ensure_installed = lambda key, quiet=False: {str(fake_install)!r}
        descs = {{"set_order": {{"train": ["d%d" % i for i in range(10)], "heldout": []}}}}
        kept, _ = R.build_reasoning(descs, only=["set_order"], max_examples=60)
        print(json.dumps([record_to_dict(r) for r in kept], sort_keys=True))
    """)
    outs = [subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                           env={**os.environ, "PYTHONHASHSEED": h}).stdout for h in ("1", "2")]
    assert outs[0] == outs[1] and json.loads(outs[0])[0]["name"] == "reasoning/set_order"


def test_a_worker_that_cannot_start_says_what_to_do(tmp_path):
    with pytest.raises(DataError, match="failed to run .*delete that folder to reinstall"):
        R.run_worker(tmp_path, {"mode": "list"})  # no reasoning_gym there


def test_an_unavailable_pinned_version_names_it_and_leaves_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("TEXT2LORA_CACHE", str(tmp_path))
    for key, value in {"PIP_CONFIG_FILE": os.devnull, "PIP_NO_INDEX": "1", "PIP_FIND_LINKS": str(tmp_path)}.items():
        monkeypatch.setenv(key, value)
    old = fetch.install_dir("reasoning_gym")
    (old / "kept.txt").parent.mkdir(parents=True)
    (old / "kept.txt").write_text("an older, incomplete install")
    with pytest.raises(PackageUnavailableError, match=r"reasoning-gym==0\.1\.25"):
        fetch.ensure_installed("reasoning_gym", quiet=True)
    assert (old / "kept.txt").read_text() == "an older, incomplete install"
    assert [p.name for p in old.parent.iterdir()] == [old.name]  # no temporary folder left


# ----------------------------------------------------------------------------- descriptions

def test_descriptions_are_complete_readable_and_held_out_ones_never_train():
    descs = reasoning_descriptions()
    assert len(descs) >= 90
    train_all = {d for sets in descs.values() for d in sets["train"]}
    for task, sets in descs.items():
        assert len(sets["train"]) >= 10 and len(sets["heldout"]) >= 3, task
        check_descriptions(sets["train"] + sets["heldout"])
        assert not set(sets["heldout"]) & train_all, task
    for gen in (*REASONING_RESERVED, *R.EXCLUDED, "boxnet", "graph_color", "propositional_logic", "rubiks_cube",
                "rush_hour"):
        assert gen not in descs  # reserved, excluded or without an answer: never a task, never described
    assert {t.removeprefix("reasoning/") for t in R.HELDOUT_TASKS} <= set(descs)  # held out whole, still built
    for f in sorted(DESCRIPTIONS_DIR.glob("reasoning*.jsonl")):
        load_description_sets(f)  # each file on its own is valid


# ----------------------------------------------------------------------------- the real package

@pytest.mark.slow
def test_real_generators_build_identically_in_two_processes():
    code = textwrap.dedent("""
        import json
        from text2lora.data.descriptions import reasoning_descriptions
        from text2lora.data.records import record_to_dict
        from text2lora.data.sources.reasoning import build_reasoning
        kept, dropped = build_reasoning(reasoning_descriptions(),
                                        only=["gcd", "isomorphic_strings", "list_functions"],
                                        max_examples=300)
        print(json.dumps({"kept": [record_to_dict(r) for r in kept], "dropped": dropped}, sort_keys=True))
    """)
    fetch.ensure_installed("reasoning_gym", quiet=True)  # the install is not what is timed or compared
    outs = [subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                           env={**os.environ, "PYTHONHASHSEED": h}).stdout for h in ("1", "2")]
    assert outs[0] == outs[1]
    built = json.loads(outs[0])
    # gcd and isomorphic_strings repeat only with PYTHONHASHSEED=0; list_functions only with the process-wide
    # generators seeded per row (it draws from them)
    assert sorted(r["name"] for r in built["kept"]) == ["reasoning/gcd", "reasoning/isomorphic_strings",
                                                         "reasoning/list_functions"]
    assert not built["dropped"]
    gcd = next(r for r in built["kept"] if r["name"] == "reasoning/gcd")["splits"]["train"]
    for prompt, answer in zip(gcd["prompt"], gcd["response"]):
        numbers = [int(x) for x in prompt.rstrip(".").split(", ")]
        assert int(answer) == math.gcd(*numbers)  # the reference answer, checked independently


@pytest.mark.slow
def test_real_build_drops_exactly_the_reserved_and_answerless_generators():
    kept, dropped = R.build_reasoning(reasoning_descriptions(), max_examples=40, min_examples=10)
    no_answer = {"boxnet", "graph_color", "propositional_logic", "rubiks_cube", "rush_hour"}
    assert dropped == {**{f"reasoning/{g}": R.NO_ANSWER for g in no_answer},
                       **{f"reasoning/{g}": RESERVED_REASON for g in REASONING_RESERVED},
                       **{f"reasoning/{g}": why for g, why in R.EXCLUDED.items()}}
    assert len(kept) == 105 - len(no_answer) - len(REASONING_RESERVED) - len(R.EXCLUDED)
    assert all(r.train_descriptions and r.heldout_descriptions for r in kept)
    assert all(record_to_dict(r)["info"]["category"] for r in kept)
