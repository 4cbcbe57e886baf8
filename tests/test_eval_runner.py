"""Conditions' prompts, the runner (limit, resume, determinism), reports, compare, the CLI and the watcher."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from conftest import make_base, random_adapter
from text2lora.data import BENCHMARKS, Example, TaskRecord
from text2lora.errors import AdapterError, ConfigError, T2LError
from text2lora.eval import runner
from text2lora.eval.conditions import ConditionResolver, parse_condition
from text2lora.eval.report import (compare, csv_table, markdown_table, paired_difference, paired_markdown, summarize,
                                   write_reports)
from text2lora.eval.runner import EvalConfig, load_results, run_eval, select_examples

OLMO = Path(__file__).parent / "fixtures" / "data" / "olmo"


@pytest.fixture(scope="module")
def base():
    return make_base("llama", seed=1)


def _mc(i: int) -> Example:
    return Example(f"Which number follows {i}?", choices=[str(i + 1), str(i + 7), "none"], gold=0)


def _toy_tasks() -> list[TaskRecord]:
    mc = TaskRecord("toy_mc", "user", "MIT", "test", "choice_acc", ["Pick the next number."],
                    ["Choose the number that comes next."],
                    {"train": [_mc(i) for i in range(5)], "validation": [_mc(i) for i in range(40, 46)],
                     "test": [_mc(i) for i in range(10, 22)]})
    math = TaskRecord("toy_math", "user", "MIT", "test", "gsm8k", ["Add the numbers."], ["Sum two integers."],
                      {"train": [Example(f"What is {i} + 1?", f"{i} + 1 = {i + 1}. The answer is {i + 1}.",
                                         meta={"answer": str(i + 1)}) for i in range(4)],
                       "test": [Example(f"What is {i} + 2?", str(i + 2), meta={"answer": str(i + 2)})
                                for i in range(5)]})
    code = TaskRecord("toy_code", "user", "MIT", "test", "pass@1", ["Write a function."], ["Write Python code."],
                      {"train": [Example(f"Return {i}.", f"def f():\n    return {i}") for i in range(3)],
                       "test": [Example("Write double(x).", "def double(x): return 2 * x",
                                        meta={"test_list": ["assert double(2) == 4"]}) for _ in range(2)]})
    return [mc, math, code]


@pytest.fixture(scope="module")
def artifacts(base, tmp_path_factory):
    """A PEFT adapter dir and a (perturbed, so not identity) generator checkpoint for the tiny base."""
    from conftest import perturbed_generator

    root = tmp_path_factory.mktemp("eval-artifacts")
    random_adapter(base.spec, seed=5).save(root / "adapter")
    perturbed_generator(base).save_pretrained(root / "gen")
    return root


# ----------------------------------------------------------------------------- conditions
from text2lora.generator import DEFAULT_GENERATOR_DIR  # noqa: E402

def test_parse_condition_errors_and_labels(artifacts):
    with pytest.raises(ConfigError, match=r"unknown condition 'fewshot'; valid conditions: base, icl, description, "
                                          r"adapter:PATH, oracle:PATH, t2l\[:PATH\]"):
        parse_condition("fewshot")
    with pytest.raises(ConfigError, match="a label cannot hold one"):  # 'T2L (L, x)=t2l' split at its comma
        parse_condition("T2L (L")
    with pytest.raises(ConfigError, match="needs a path"):
        parse_condition("hyperdecoders")
    shipped = parse_condition("t2l")  # no path: the shipped default generator
    assert shipped.path == str(DEFAULT_GENERATOR_DIR) and shipped.label == "T2L [default]"
    with pytest.raises(ConfigError, match="does not exist"):
        parse_condition("adapter:/no/such/dir")
    assert parse_condition("icl").label == "base + ICL"
    c = parse_condition(f"mine=t2l-random:{artifacts / 'gen'}")
    assert (c.label, c.kind, c.description_set) == ("mine", "t2l-random", "random_strings")


@pytest.mark.parametrize("name", BENCHMARKS)
def test_icl_and_description_prompts_differ_from_base_for_every_benchmark(base, name, artifacts):
    pytest.importorskip("pyarrow")
    from text2lora.data.sources.benchmarks import build_benchmarks

    task = {r.name: r for r in _fixture_benchmarks(build_benchmarks)}[name]
    _, indexed = select_examples(task, "test", 2, 0)
    res = ConditionResolver(base, shots=2)  # the fixtures' smallest train split holds 3 exemplars
    prompts = {k: res.prepare(parse_condition(k), task, indexed) for k in
               ("base", "icl", "description", f"adapter:{artifacts / 'adapter'}")}
    for i, (idx, ex) in enumerate(indexed):
        p = {k: v[i].prompt for k, v in prompts.items()}
        assert p["icl"] != p["base"] and p["description"] != p["base"] and p["icl"] != p["description"]
        assert len(p["icl"]) > len(p["base"]) and task.heldout_descriptions[0] in p["description"]
        assert p[f"adapter:{artifacts / 'adapter'}"] == p["base"]  # adapters change the weights, not the prompt
        assert prompts["base"][i].adapter_key is None and prompts["icl"][i].adapter_key is None


_BENCH_CACHE: list = []


def _fixture_benchmarks(build):
    if not _BENCH_CACHE:
        _BENCH_CACHE.extend(build(OLMO, OLMO, OLMO))
    return _BENCH_CACHE


def test_generator_conditions_pick_descriptions(base, artifacts):
    task = _toy_tasks()[0]
    res = ConditionResolver(base)
    _, indexed = select_examples(task, "test", None, 0)
    ckpt = artifacts / "gen"
    held = res.prepare(parse_condition(f"t2l:{ckpt}"), task, indexed)
    assert {p.description for p in held} == set(task.heldout_descriptions)
    train = res.prepare(parse_condition(f"t2l-train:{ckpt}"), task, indexed)
    assert {p.description for p in train} == set(task.train_descriptions)
    other = res.prepare(parse_condition(f"t2l-other:{ckpt}"), task, indexed)
    assert not {p.description for p in other} & set(task.heldout_descriptions + task.train_descriptions)
    rnd = res.prepare(parse_condition(f"t2l-random:{ckpt}"), task, indexed)
    assert len({p.description for p in rnd}) > 1
    hyper = res.prepare(parse_condition(f"hyperdecoders:{ckpt}"), task, indexed)
    assert [p.description for p in hyper] == [e.prompt for _, e in indexed]  # one adapter per input
    ads = res.adapters([p.adapter_key for p in hyper[:3]])
    assert len({id(a) for a in ads}) == 3 and all(float(a.B["q_proj"].abs().max()) > 0 for a in ads)


def test_oracle_library_gives_each_task_its_own_adapter(base, tmp_path):
    lib = tmp_path / "library"
    mc, math, _ = _toy_tasks()
    random_adapter(base.spec, seed=1).save(lib / "toy_mc")
    random_adapter(base.spec, seed=2).save(lib / "toy_math")
    cond = parse_condition(f"oracle:{lib}")
    assert cond.label == "oracle LoRA"
    res = ConditionResolver(base)
    keys = {t.name: {p.adapter_key for p in res.prepare(cond, t, select_examples(t, "test", 3, 0)[1])}
            for t in (mc, math)}
    assert keys == {"toy_mc": {("dir", str(lib / "toy_mc"))}, "toy_math": {("dir", str(lib / "toy_math"))}}
    a_mc, a_math = res.adapters([("dir", str(lib / "toy_mc")), ("dir", str(lib / "toy_math"))])
    assert not torch.equal(a_mc.A["q_proj"], a_math.A["q_proj"])
    # a prompt under an oracle is the zero-shot prompt; a task the library lacks is refused, naming what it holds
    assert res.prepare(cond, mc, [(0, _mc(0))])[0].prompt == res.prepare(parse_condition("base"), mc, [(0, _mc(0))])[0].prompt
    with pytest.raises(ConfigError, match="no adapter for task toy_code.*holds: toy_math, toy_mc"):
        res.prepare(cond, _toy_tasks()[2], [(0, _mc(0))])
    with pytest.raises(ConfigError, match="adapter library directory .* does not exist"):
        parse_condition(f"oracle:{tmp_path / 'nothing'}")


def test_adapter_for_another_base_names_both(base, tmp_path):
    other = make_base("llama", num_layers=3)
    # a 3-layer model: its adapters do not fit the 2-layer base
    ad = random_adapter(other.spec, seed=1)
    object.__setattr__(other.spec, "name", "tiny-llama-3layers")
    ad.base = other.spec
    ad.save(tmp_path / "other")
    res = ConditionResolver(base)
    with pytest.raises(AdapterError, match="tiny-llama-3layers.*tiny-llama"):
        res.prepare(parse_condition(f"adapter:{tmp_path / 'other'}"), _toy_tasks()[0], [(0, _mc(0))])


# ----------------------------------------------------------------------------- runner

def _cfg(out, **kw):
    conds = kw.pop("conditions", ["base", "icl", "description"])
    return EvalConfig(benchmarks=["toy"], conditions=conds, out=str(out) if out else None, limit=4,
                      max_new_tokens=6, batch_size=3, gen_batch_size=4, quiet=True, code_timeout=5, **kw)


def _key(r):
    return (r["condition"], r["task"], r["index"])


def _numbers(records):
    return sorted((_key(r), r.get("acc"), r.get("acc_norm"), r.get("correct"), r.get("completion"),
                   tuple(r.get("logprobs") or ())) for r in records)


def test_run_resume_and_determinism(base, artifacts, tmp_path, monkeypatch):
    conds = ["base", "icl", "description", f"adapter:{artifacts / 'adapter'}", f"t2l:{artifacts / 'gen'}",
             f"hyperdecoders:{artifacts / 'gen'}"]
    tasks = _toy_tasks()
    first = run_eval(_cfg(tmp_path / "a", conditions=conds), base, tasks)
    # limit: the same seeded subset of 4 items for every condition; all tasks x conditions covered
    per_cell = {}
    for r in first:
        per_cell.setdefault((r["condition"], r["task"]), []).append(r["index"])
    assert len(per_cell) == len(conds) * 3
    assert len({tuple(v) for (c, t), v in per_cell.items() if t == "toy_mc"}) == 1
    assert len(per_cell[("base", "toy_mc")]) == 4 and len(per_cell[("base", "toy_code")]) == 2
    # the tiny random model writes token soup, never a program that passes the task's tests
    code = [r for r in first if r["task"] == "toy_code"]
    assert code and {r["sandbox"]["status"] for r in code} == {"failed"} and not any(r["correct"] for r in code)
    # conditions differ: the adapter and the generator change the multiple-choice log-likelihoods
    lp = {r["condition"]: r["logprobs"] for r in first if r["task"] == "toy_mc" and r["index"] == per_cell[("base", "toy_mc")][0]}
    assert len({tuple(v) for v in lp.values()}) == len(conds)

    # determinism: the same evaluation again gives identical numbers
    again = run_eval(_cfg(tmp_path / "b", conditions=conds), base, tasks)
    assert _numbers(again) == _numbers(first)

    # resume: interrupt after the first multiple-choice chunk, then run again
    calls = {"n": 0}
    real = runner._score_mc

    def flaky(*a, **k):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(runner, "_score_mc", flaky)
    with pytest.raises(KeyboardInterrupt):
        run_eval(_cfg(tmp_path / "c", conditions=conds[:2]), base, tasks)
    partial = load_results(tmp_path / "c" / "results.jsonl")
    assert 0 < len(partial) < 4 * 2 + 4 + 2
    monkeypatch.setattr(runner, "_score_mc", real)
    with open(tmp_path / "c" / "results.jsonl", "a") as f:
        f.write('{"condition": "base", "truncated')  # a half-written line is ignored
    resumed = run_eval(_cfg(tmp_path / "c", conditions=conds[:2]), base, tasks)
    on_disk = load_results(tmp_path / "c" / "results.jsonl")
    assert len(on_disk) == len({_key(r) for r in on_disk}) == 2 * (4 + 4 + 2)  # nothing scored twice
    want = {_key(r): r for r in first if r["condition"] in ("base", "base + ICL")}
    for r in resumed:
        w = want[_key(r)]
        assert r.get("acc") == w.get("acc") and r.get("completion") == w.get("completion")
    # settings that change numbers cannot be mixed into an existing directory
    with pytest.raises(ConfigError, match="different settings.*seed"):
        run_eval(_cfg(tmp_path / "c", conditions=conds[:2], seed=1), base, tasks)


def test_cached_results_are_reused_only_for_the_same_weights(base, artifacts, tmp_path):
    import shutil

    tasks = _toy_tasks()[:1]
    shutil.copytree(artifacts / "adapter", tmp_path / "adp")
    out = tmp_path / "out"
    first = run_eval(_cfg(out, conditions=[f"A=adapter:{tmp_path / 'adp'}"]), base, tasks)
    # the same files under another path: reused, nothing scored again
    shutil.copytree(tmp_path / "adp", tmp_path / "moved")
    again = run_eval(_cfg(out, conditions=[f"A=adapter:{tmp_path / 'moved'}"]), base, tasks)
    assert len(load_results(out / "results.jsonl")) == len(first) == 4 and _numbers(again) == _numbers(first)
    # other weights at the same path (a training run's best/ overwritten): refused, not mixed into row A
    random_adapter(base.spec, seed=6).save(tmp_path / "other")
    for name in ("adapter_model.safetensors", "adapter_config.json"):
        shutil.copyfile(tmp_path / "other" / name, tmp_path / "adp" / name)
    with pytest.raises(ConfigError, match="condition 'A' from other weights.*files at that path have changed"):
        run_eval(_cfg(out, conditions=[f"A=adapter:{tmp_path / 'adp'}"]), base, tasks)
    # under a new label the new weights are scored, and they score differently
    other = run_eval(_cfg(out, conditions=[f"B=adapter:{tmp_path / 'adp'}"]), base, tasks)
    lp = {(r["condition"], r["index"]): r["logprobs"] for r in other}
    assert any(lp[("A", i)] != lp[("B", i)] for c, i in lp if c == "A")
    # records from before fingerprints were kept: checked by their spec
    legacy = tmp_path / "legacy"
    legacy.mkdir()
    (legacy / "results.jsonl").write_text("".join(
        json.dumps({k: v for k, v in r.items() if k != "weights"}) + "\n" for r in first))
    with pytest.raises(ConfigError, match=r"they were made with 'adapter:.*adp', not 'adapter:.*moved'"):
        run_eval(_cfg(legacy, conditions=[f"A=adapter:{tmp_path / 'moved'}"]), base, tasks)


def test_reports_and_compare(base, tmp_path):
    tasks = _toy_tasks()[:2]
    recs = run_eval(_cfg(tmp_path / "r", conditions=["base", "description"]), base, tasks)
    s = write_reports(recs, tmp_path / "r", "acc")
    assert s["conditions"] == ["base", "base + description"] and s["tasks"] == ["toy_mc", "toy_math"]
    mc = [r for r in recs if r["condition"] == "base" and r["task"] == "toy_mc"]
    assert s["scores"]["base"]["toy_mc"]["score"] == pytest.approx(100 * sum(r["acc"] for r in mc) / len(mc))
    assert s["average"]["base"] == pytest.approx((s["scores"]["base"]["toy_mc"]["score"]
                                                  + s["scores"]["base"]["toy_math"]["score"]) / 2)
    md = (tmp_path / "r" / "results.md").read_text()
    assert md.splitlines()[0] == "| condition | toy_mc | toy_math | Avg. |" and "summed over the choice's tokens" in md
    assert "| base |" in md and csv_table(s).splitlines()[0].startswith("condition,task,metric")
    full = json.loads((tmp_path / "r" / "results.json").read_text())
    assert len(full["examples"]) == len(recs)
    # compare: b - a per cell
    b = [dict(r) for r in recs]
    for r in b:
        if r["task"] == "toy_math":
            r["correct"] = 1.0
    write_reports(b, tmp_path / "s", "acc")
    diff = compare(tmp_path / "r" / "results.json", tmp_path / "s")
    row = next(line for line in diff.splitlines() if line.startswith("| base |"))
    gain = 100 - s["scores"]["base"]["toy_math"]["score"]
    assert row.split("|")[2].strip() == "+0.00" and row.split("|")[3].strip() == f"{gain:+.2f}"
    assert "acc_norm" in markdown_table(summarize(recs, "acc_norm"))


def test_paired_difference_on_known_items():
    def rec(cond, task, i, ok):
        metric = "choice_acc" if task == "arc_easy" else "gsm8k"
        r = {"condition": cond, "task": task, "split": "test", "index": i, "metric": metric}
        return {**r, "acc": ok, "acc_norm": ok} if metric == "choice_acc" else {**r, "correct": ok}
    recs = []
    for i in range(100):  # ARC-e: b wins 30 items, loses 10, ties 60 -> +20; GSM8K: identical -> 0
        a_ok = 1.0 if 30 <= i < 40 or i >= 70 else 0.0
        b_ok = 1.0 if i < 30 or i >= 70 else 0.0
        recs += [rec("A", "arc_easy", i, a_ok), rec("B", "arc_easy", i, b_ok)]
        recs += [rec("A", "gsm8k", i, float(i % 3 == 0)), rec("B", "gsm8k", i, float(i % 3 == 0))]
    recs.append(rec("A", "arc_easy", 500, 1.0))  # scored by one condition only: left out
    res = paired_difference(recs, "A", "B")
    arc, gsm = res["tasks"]
    assert (arc["task"], arc["n"], arc["wins"], arc["losses"]) == ("arc_easy", 100, 30, 10)
    assert arc["a"] == pytest.approx(40.0) and arc["b"] == pytest.approx(60.0) and arc["diff"] == pytest.approx(20.0)
    # paired: a resample's difference is (wins - losses) / n, sd = sqrt(0.4 - 0.04) / 10 * 100 = 6 points
    assert arc["ci"][0] == pytest.approx(20 - 1.96 * 6, abs=1.5) and arc["ci"][1] == pytest.approx(20 + 1.96 * 6, abs=1.5)
    assert gsm["diff"] == 0.0 and gsm["ci"] == [0.0, 0.0]
    avg = res["average"]
    assert avg["diff"] == pytest.approx(10.0) and avg["ci"][0] > 0 and avg["p_not_above"] < 0.01
    assert paired_difference(recs, "A", "B")["average"] == avg  # seeded
    reverse = paired_difference(recs, "B", "A")["average"]
    assert reverse["diff"] == pytest.approx(-10.0) and reverse["p_not_above"] > 0.99
    only = paired_difference(recs, "A", "B", tasks=["gsm8k"])
    assert [r["task"] for r in only["tasks"]] == ["gsm8k"] and only["average"]["p_not_above"] == 1.0
    md = paired_markdown(res).splitlines()
    assert md[4].startswith("| ARC-e | 100 | 40.0 | 60.0 | +20.00 |") and md[6].startswith("| **average** |")
    with pytest.raises(T2LError, match="no results for condition 'C'; these have results: \\['A', 'B'\\]"):
        paired_difference(recs, "A", "C")
    with pytest.raises(T2LError, match="share no scored items on \\['boolq'\\]"):
        paired_difference(recs, "A", "B", tasks=["boolq"])


# ----------------------------------------------------------------------------- CLI and watcher

@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    from text2lora.testing import save_tiny_base

    return save_tiny_base(tmp_path_factory.mktemp("evalcli") / "tiny")


def test_cli_eval_errors_and_compare(tiny_dir, tmp_path, capsys):
    from text2lora.cli import main

    tasks = str(Path(__file__).parent / "fixtures" / "data" / "user" / "tasks.jsonl")
    out = tmp_path / "cli"
    assert main(["eval", "--base", str(tiny_dir), "-b", tasks, "-c", "base,description", "--out", str(out),
                 "--max-new-tokens", "4", "--quiet"]) == 0
    text = capsys.readouterr().out
    assert "| base |" in text and "| base + description |" in text and (out / "results.csv").is_file()
    assert main(["eval", "-b", "nope", "-c", "base"]) == 2
    assert "unknown benchmark 'nope'; valid: arc_challenge" in capsys.readouterr().err
    assert main(["eval", "-b", "arc_easy", "-c", "base,magic"]) == 2
    assert "valid conditions: base, icl, description" in capsys.readouterr().err
    assert main(["eval", "--compare", str(out / "results.json"), str(out)]) == 0
    assert "+0.00" in capsys.readouterr().out
    assert main(["eval", "--paired", str(out), "base", "base + description"]) == 0
    text = capsys.readouterr().out
    assert text.startswith("b - a on the same items (paired bootstrap") and "| **average** |" in text
    assert json.loads((out / "paired_base__vs__base___description.json").read_text())["b"] == "base + description"
    assert main(["eval", "--paired", str(out), "base", "T2L"]) == 2
    assert "no results for condition 'T2L'" in capsys.readouterr().err
    # --table: a sub-table (chosen rows and columns, the average over those columns only)
    summary = json.loads((out / "results.json").read_text())["summary"]
    first = summary["tasks"][0]
    chart = tmp_path / "sub.png"
    assert main(["eval", "--table", str(out), "-c", "base + description", "-b", first, "--png", str(chart)]) == 0
    assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    lines = capsys.readouterr().out.splitlines()
    score = summary["scores"]["base + description"][first]["score"]
    assert lines[0] == f"| condition | {first} | Avg. |" and lines[2] == f"| base + description | {score:.2f} | {score:.2f} |"
    assert not any(line.startswith("| base |") for line in lines)
    assert main(["eval", "--table", str(out), "-c", "T2L"]) == 2
    assert "no results for condition ['T2L']" in capsys.readouterr().err
    assert main(["watch", str(tmp_path / "missing")]) == 2
    assert main(["watch", str(tmp_path), "--split", "test"]) == 2
    assert "test sets" in capsys.readouterr().err


def test_watch_keeps_best_and_signals_stop(base, artifacts, tmp_path):
    import shutil

    from text2lora.eval.watch import WatchConfig, find_checkpoints, watch

    run = tmp_path / "run"
    for name in ("step-000002", "step-000010"):  # identical weights: the second is no improvement
        shutil.copytree(artifacts / "gen", run / "checkpoints" / name)
    (run / "checkpoints" / ".step-000020.tmp").mkdir()  # an atomic write in progress is skipped
    assert [p.name for p in find_checkpoints(run)] == ["step-000002", "step-000010"]
    logs: list[str] = []
    state = watch(WatchConfig(run_dir=str(run), benchmarks=["toy_mc"], limit=3, patience=1, once=True, quiet=True),
                  base, [_toy_tasks()[0]], log=logs.append)
    assert state["best"] == "step-000002" and state["stopped"]
    assert set(state["evaluated"]) == {"step-000002", "step-000010"}
    assert state["evaluated"]["step-000002"]["average"] == state["evaluated"]["step-000010"]["average"]
    stop = json.loads((run / "STOP").read_text())
    assert stop["best"] == "step-000002" and "patience 1" in stop["reason"]
    assert (run / "watch" / "best" / "model.safetensors").is_file()
    recs = load_results(run / "watch" / "step-000002" / "results.jsonl")
    assert {r["split"] for r in recs} == {"validation"} and len(recs) == 3
