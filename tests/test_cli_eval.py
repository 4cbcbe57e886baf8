"""``t2l eval run|report|table|compare|paired``: each subcommand's arguments, the old flag forms as aliases,
and one real run on a tiny random model read back by every other subcommand."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from text2lora.cli import _busy, build_parser, main

TASKS = str(Path(__file__).parent / "fixtures" / "data" / "user" / "tasks.jsonl")


def _parse(*argv: str):
    return build_parser().parse_args(["eval", *argv])


@pytest.mark.parametrize("argv,func,fields", [
    (["run", "-b", "arc_easy,boolq", "-c", "base", "--limit", "5", "--out", "D", "--quiet"], "_run",
     {"benchmarks": "arc_easy,boolq", "conditions": "base", "limit": 5, "out": "D", "quiet": True}),
    (["report", "D", "--mc-metric", "acc"], "_report", {"out": "D", "mc_metric": "acc"}),
    (["table", "D", "-b", "boolq", "-c", "base,icl", "--png", "t.png"], "_table",
     {"out": "D", "benchmarks": "boolq", "conditions": "base,icl", "png": "t.png"}),
    (["compare", "a.json", "b"], "_compare", {"a": "a.json", "b": "b", "mc_metric": "acc_norm"}),
    (["paired", "D", "base", "T2L", "-b", "boolq", "--seed", "3", "--not-in", "E"], "_paired",
     {"out": "D", "a": "base", "b": "T2L", "benchmarks": "boolq", "seed": 3, "not_in": "E"}),
])
def test_each_subcommand_parses_its_arguments(argv, func, fields):
    args = _parse(*argv)
    assert args.eval_command == argv[0] and args.func.__name__ == func
    assert {k: getattr(args, k) for k in fields} == fields
    # only the subcommands that read results are light (no busy-CPU warning, no job registration)
    assert _busy.is_heavy(args) is (argv[0] in ("run", "paired"))


@pytest.mark.parametrize("argv", [["report"], ["compare", "a"], ["paired", "D", "a"], ["table"],
                                  ["run", "--limit", "x"], ["report", "D", "--benchmarks", "boolq"]])
def test_missing_or_foreign_arguments_are_one_line_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as e:
        main(["eval", *argv])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert len([line for line in err.splitlines() if ": error: " in line]) == 1 and "Traceback" not in err


@pytest.mark.parametrize("cmd", ["run", "report", "table", "compare", "paired"])
def test_help_of_each_subcommand(cmd, capsys):
    with pytest.raises(SystemExit) as e:
        main(["eval", cmd, "--help"])
    assert e.value.code == 0
    assert capsys.readouterr().out.startswith(f"usage: t2l eval {cmd} ")


def test_eval_help_lists_the_subcommands_and_the_old_forms(capsys):
    with pytest.raises(SystemExit):
        main(["eval", "--help"])
    out = capsys.readouterr().out
    assert "{run,report,table,compare,paired}" in out and "--paired OUT A B" in out
    assert "--gen-batch-size" not in out  # the run flags are in `t2l eval run --help`


def test_the_old_flag_forms_are_aliases():
    args = _parse("-b", "arc_easy", "-c", "base", "--limit", "3")  # no subcommand: run
    assert args.eval_command is None and args.func.__name__ == "_eval_flags"
    assert (args.benchmarks, args.conditions, args.limit) == ("arc_easy", "base", 3)
    assert _parse("--table", "D", "-c", "base").table == "D"
    assert _parse("--paired", "D", "a", "b").paired == ["D", "a", "b"]
    assert not _busy.is_heavy(_parse("--compare", "a", "b")) and _busy.is_heavy(_parse("-b", "boolq"))


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    from text2lora.testing import save_tiny_base

    return save_tiny_base(tmp_path_factory.mktemp("evalsub") / "tiny")


def test_run_then_every_reading_subcommand_on_a_tiny_model(tiny_dir, tmp_path, capsys):
    out = tmp_path / "ev"
    assert main(["eval", "run", "--base", str(tiny_dir), "-b", TASKS, "-c", "base,description", "--out", str(out),
                 "--max-new-tokens", "4", "--quiet"]) == 0
    text = capsys.readouterr().out
    assert "| base |" in text and "| base + description |" in text and (out / "results.csv").is_file()
    summary = json.loads((out / "results.json").read_text())["summary"]

    (out / "results.md").unlink()
    assert main(["eval", "report", str(out)]) == 0
    assert capsys.readouterr().out == (out / "results.md").read_text()

    first = summary["tasks"][0]
    assert main(["eval", "table", str(out), "-c", "base + description", "-b", first]) == 0
    lines = capsys.readouterr().out.splitlines()
    score = summary["scores"]["base + description"][first]["score"]
    assert lines[0] == f"| condition | {first} | Avg. |"
    assert lines[2] == f"| base + description | {score:.2f} | {score:.2f} |"

    assert main(["eval", "compare", str(out / "results.json"), str(out)]) == 0
    assert "+0.00" in capsys.readouterr().out

    assert main(["eval", "paired", str(out), "base", "base + description"]) == 0
    assert capsys.readouterr().out.startswith("b - a on the same items (paired bootstrap")
    assert json.loads((out / "paired_base__vs__base___description.json").read_text())["a"] == "base"
    # --not-in: only the items another directory did not score (here: all of the first task's)
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    first_task = records[0]["task"]
    old = tmp_path / "old"
    old.mkdir()
    (old / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records if r["task"] == first_task))
    assert main(["eval", "paired", str(out), "base", "base + description", "--not-in", str(old)]) == 0
    capsys.readouterr()
    fresh = json.loads((out / "paired_base__vs__base___description__not_in_old.json").read_text())
    others = {r["task"] for r in records} - {first_task}
    assert others and {row["task"]: row["n"] for row in fresh["tasks"]} == {
        t: len({r["index"] for r in records if r["task"] == t and r["condition"] == "base"}) for t in others}
    assert main(["eval", "paired", str(out), "base", "base + description", "--not-in", str(out)]) == 2
    assert "nothing is left to compare; raise --limit" in capsys.readouterr().err

    # the old form gives the same table, with a note naming the subcommand
    assert main(["eval", "--table", str(out), "-c", "base + description", "-b", first]) == 0
    captured = capsys.readouterr()
    assert captured.out.splitlines() == lines and "`t2l eval table OUT`" in captured.err
    # errors stay one line, exit 2
    assert main(["eval", "paired", str(out), "base", "T2L"]) == 2
    assert "no results for condition 'T2L'" in capsys.readouterr().err
    assert main(["eval", "report", str(tmp_path / "empty")]) == 2
    assert "run `t2l eval run --out" in capsys.readouterr().err
