"""``t2l eval run|report|table|compare|paired`` (benchmarks x conditions -> tables, and reading them back),
``t2l watch RUN_DIR`` and ``t2l map`` (a PCA picture of a generator's adapters)."""

from __future__ import annotations

import argparse


def _csv(text: str) -> list[str]:
    return [s.strip() for s in text.split(",") if s.strip()]


EVAL_COMMANDS = ("run", "report", "table", "compare", "paired")
LIGHT_EVAL_COMMANDS = ("report", "table", "compare")
"""Subcommands that only read results (no model): they neither warn about nor register as a heavy job."""


def _run_flags(p: argparse.ArgumentParser, show: bool = True) -> None:
    """The flags of ``t2l eval run`` (hidden from ``--help`` when ``show`` is false: the old form's aliases)."""
    def h(text: str) -> str:
        return text if show else argparse.SUPPRESS

    p.add_argument("--benchmarks", "-b", default=None,
                   help=h("comma list: benchmark names (arc_challenge, ..., mbpp), 'all', bigbench/<task>, "
                          "sni/<task>, a task file .jsonl/.yaml[#task], or the bare-input suite: instruct, "
                          "instruct/<task>, instruct:SUITE.yaml (default: all ten)"))
    p.add_argument("--conditions", "-c", default=None,
                   help=h("comma list of conditions [LABEL=]KIND[:PATH] (default: base,icl,description)"))
    p.add_argument("--base", default="smollm2-135m-instruct", help=h("base model (default: smollm2-135m-instruct)"))
    p.add_argument("--out", "-o", default=None, help=h("output directory (default: runs/eval/<timestamp>)"))
    p.add_argument("--limit", type=int, default=None, help=h("seeded random subset of N items per benchmark"))
    p.add_argument("--seed", type=int, default=0, help=h("seed of the subset and in-context shots (default 0)"))
    p.add_argument("--shots", type=int, default=3, help=h("in-context examples for icl (default 3)"))
    p.add_argument("--split", default="auto", choices=["auto", "test", "validation", "train"],
                   help=h("split to evaluate (default auto: test, or validation when a task has no test split)"))
    p.add_argument("--batch-size", type=int, default=8, help=h("examples per forward pass (default 8)"))
    p.add_argument("--gen-batch-size", type=int, default=32, help=h("prompts per generation batch (default 32)"))
    p.add_argument("--max-new-tokens", type=int, default=None,
                   help=h("generation budget (default: GSM8K 256, code 384, exact match 64, bare-input suite 64)"))
    _mc_metric_flag(p, show)
    p.add_argument("--mc-protocol", default="loglik", choices=["loglik", "labels"],
                   help=h("multiple choice: loglik scores each choice by log-likelihood (default); labels is the "
                          "paper's protocol: choices listed with labels, the greedy answer read for the label"))
    p.add_argument("--no-shared-context", action="store_true",
                   help=h("score every context+choice sequence in full instead of sharing the context's KV cache"))
    p.add_argument("--code-timeout", type=float, default=10.0, help=h("seconds per generated program (default 10)"))
    p.add_argument("--device", default=None, help=h("cpu or cuda (default: cuda if available)"))
    p.add_argument("--quiet", "-q", action="store_true", help=h("no progress bar"))


def _mc_metric_flag(p: argparse.ArgumentParser, show: bool = True) -> None:
    p.add_argument("--mc-metric", default="acc_norm", choices=["acc", "acc_norm"],
                   help="multiple-choice accuracy in the tables: acc (summed log-prob) or acc_norm (per character; "
                        "default); both are kept in results.json" if show else argparse.SUPPRESS)


def register(subparsers) -> None:
    """Add the ``eval`` (with its subcommands ``run``, ``report``, ``table``, ``compare``, ``paired``),
    ``watch`` and ``map`` commands."""
    from .._io import STOP_FILE
    from ..eval.conditions import CONDITION_KINDS

    kinds = "; ".join(f"{k}: {v[2]}" for k, v in CONDITION_KINDS.items())
    conditions_help = "conditions ([LABEL=]KIND[:PATH]): " + kinds
    p = subparsers.add_parser(
        "eval", help="evaluate benchmarks x conditions (run); tables, comparisons and paired intervals of results",
        description="Evaluate the base model, prompting baselines, PEFT adapters and generators on benchmarks "
                    "(t2l eval run), and read the results back (report, table, compare, paired).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="The old flag forms still work: `t2l eval --benchmarks ...` is `t2l eval run ...`;\n"
               "--report OUT, --table OUT, --compare A B and --paired OUT A B are the subcommands of those names.\n\n"
               "examples:\n  t2l eval run --benchmarks all --conditions base,icl,description --limit 200 "
               "--out runs/eval/baselines\n  t2l eval table runs/eval/baselines -c base,icl -b arc_easy,boolq\n"
               "  t2l eval paired runs/eval/baselines base icl")
    # the old single-command form: the run flags and one flag per mode, hidden from --help
    _run_flags(p, show=False)
    p.add_argument("--compare", nargs=2, metavar=("A", "B"), help=argparse.SUPPRESS)
    p.add_argument("--paired", nargs=3, metavar=("OUT", "A", "B"), help=argparse.SUPPRESS)
    p.add_argument("--report", metavar="OUT", help=argparse.SUPPRESS)
    p.add_argument("--table", metavar="OUT", help=argparse.SUPPRESS)
    p.add_argument("--png", metavar="FILE", help=argparse.SUPPRESS)
    p.set_defaults(func=_eval_flags)
    sub = p.add_subparsers(dest="eval_command", metavar="{run,report,table,compare,paired}")

    r = sub.add_parser(
        "run", help="score conditions on benchmarks; write OUT/results.{jsonl,json,md,csv,png}",
        description="Evaluate the base model, prompting baselines, PEFT adapters and generators on benchmarks. "
                    "Per-example results are appended to OUT/results.jsonl, so an interrupted run resumes "
                    "(run it again with the same arguments). Reports: OUT/results.{json,md,csv,png}.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=conditions_help + "\n\nexamples:\n  t2l eval run --benchmarks all --conditions base,icl,description "
               "--limit 200 --out runs/eval/baselines\n  t2l eval run -b instruct -c base,description,"
               "description-system,t2l,t2l-description,MT=adapter:DIR --out runs/eval/instruct   "
               "# the bare-input suite")
    _run_flags(r)
    r.set_defaults(func=_run)

    rep = sub.add_parser("report", help="(re)write the reports of OUT from its results.jsonl",
                         description="Rewrite OUT/results.{json,md,csv,png} from OUT/results.jsonl (e.g. of a run "
                                     "still going) and print the table.")
    rep.add_argument("out", metavar="OUT", help="an eval directory (written by t2l eval run)")
    _mc_metric_flag(rep)
    rep.set_defaults(func=_report)

    t = sub.add_parser("table", help="print a Markdown table of chosen benchmarks and conditions of OUT",
                       description="Print the Markdown table of OUT's results for the benchmarks and conditions "
                                   "given (condition labels as in the table); the average is over those benchmarks.")
    t.add_argument("out", metavar="OUT", help="an eval directory (written by t2l eval run)")
    t.add_argument("--benchmarks", "-b", default=None, help="comma list of columns (default: all scored)")
    t.add_argument("--conditions", "-c", default=None, help="comma list of condition labels (default: all)")
    _mc_metric_flag(t)
    t.add_argument("--png", metavar="FILE", help="also draw the table as a bar chart into FILE")
    t.set_defaults(func=_table)

    c = sub.add_parser("compare", help="print B - A of two results.json files (or eval directories)",
                       description="Print B - A, per benchmark and condition, of two results.json files or eval "
                                   "directories.")
    c.add_argument("a", metavar="A", help="results.json or eval directory (subtracted)")
    c.add_argument("b", metavar="B", help="results.json or eval directory")
    _mc_metric_flag(c)
    c.set_defaults(func=_compare)

    pd = sub.add_parser("paired", help="B - A of two conditions of OUT with paired bootstrap 95%% intervals",
                        description="Print B - A of two conditions of OUT on the items both scored, with paired "
                                    "bootstrap 95% intervals per benchmark and on average; write "
                                    "OUT/paired_<A>__vs__<B>.json.")
    pd.add_argument("out", metavar="OUT", help="an eval directory (written by t2l eval run)")
    pd.add_argument("a", metavar="A", help="condition label (subtracted)")
    pd.add_argument("b", metavar="B", help="condition label")
    pd.add_argument("--benchmarks", "-b", default=None, help="comma list of benchmarks (default: all both scored)")
    _mc_metric_flag(pd)
    pd.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    pd.add_argument("--not-in", default=None, metavar="DIR",
                    help="leave out the items another eval directory scored (e.g. after a run's --limit was raised, "
                         "to measure on the new items only)")
    pd.set_defaults(func=_paired)
    for name in LIGHT_EVAL_COMMANDS:
        sub.choices[name].set_defaults(light=True)

    w = subparsers.add_parser(
        "watch", help="evaluate each new checkpoint of a training run; keep the best; signal early stopping",
        description="Watch RUN_DIR for new generator checkpoints (PATTERN, default checkpoints/*), evaluate each on "
                    "validation splits, keep RUN_DIR/watch/best, and write RUN_DIR/STOP when --patience runs out.")
    w.add_argument("run_dir", help="training run directory")
    w.add_argument("--benchmarks", "-b", default=None,
                   help="comma list of tasks to select on (default: the 7 multiple-choice benchmarks)")
    w.add_argument("--condition", default="t2l",
                   help="generator condition kind: t2l, t2l-train, t2l-other, t2l-random, hyperdecoders")
    w.add_argument("--split", default="validation", help="split to select on (default validation; test refused)")
    w.add_argument("--limit", type=int, default=100, help="items per task (default 100)")
    w.add_argument("--pattern", default="checkpoints/*", help="glob of checkpoint dirs under RUN_DIR")
    w.add_argument("--interval", type=float, default=60.0, help="seconds between scans (default 60)")
    w.add_argument("--patience", type=int, default=None, help="checkpoints without improvement before STOP")
    w.add_argument("--min-delta", type=float, default=0.0, help="improvement that counts (points, default 0)")
    w.add_argument("--stop-file", default=STOP_FILE, help=f"early-stop signal file under RUN_DIR (default {STOP_FILE})")
    w.add_argument("--once", action="store_true", help="evaluate the checkpoints present now, then exit")
    w.add_argument("--idle-timeout", type=float, default=None, help="exit after this long without a new checkpoint")
    w.add_argument("--base", default=None, help="base model (default: the one in the checkpoints' config)")
    w.add_argument("--mc-metric", default="acc_norm", choices=["acc", "acc_norm"])
    w.add_argument("--batch-size", type=int, default=8)
    w.add_argument("--device", default=None, help="cpu or cuda")
    w.add_argument("--quiet", "-q", action="store_true", help="no progress bars")
    w.set_defaults(func=_watch)

    m = subparsers.add_parser(
        "map", help="plot a 2-D PCA map of a generator's adapters for the benchmarks' descriptions",
        description="Generate adapters for the ten benchmarks' training and held-out descriptions and for random "
                    "strings, project them on two principal components, colour by task family; write a PNG and "
                    "its JSON (coordinates, explained variance, how often a held-out description's adapter is "
                    "nearest its own task's). Loads no base LLM.")
    m.add_argument("--model", "-m", default=None, help="generator checkpoint (default: the shipped one)")
    m.add_argument("--out", "-o", default="adapter_map.png", help="PNG path (default adapter_map.png)")
    m.set_defaults(func=_map)


def _map(args: argparse.Namespace) -> int:
    from ..errors import ConfigError
    from ..eval.projection import adapter_map, plot_adapter_map
    from ..generator import TextToLoRA

    if not args.out.endswith(".png"):
        raise ConfigError(f"--out must be a .png path, got {args.out!r}")
    result = adapter_map(TextToLoRA.from_pretrained(args.model))
    path = plot_adapter_map(result, args.out)
    print(f"wrote {path} and {path.with_suffix('.json')}: held-out description nearest its own task "
          f"{100 * result['nearest_task_accuracy']:.0f}% (chance {100 * result['nearest_task_chance']:.0f}%), "
          f"PC1+PC2 {100 * sum(result['explained_variance']):.1f}% of variance")
    return 0


def _load_base(name: str, device: str | None):
    from ..base import load_base

    return load_base(name, device=device)


def _eval_flags(args: argparse.Namespace) -> int:
    """The old flag forms, kept as aliases: ``--compare A B``, ``--report OUT``, ``--paired OUT A B`` and
    ``--table OUT`` are those subcommands; without any of them, ``t2l eval --benchmarks ...`` is ``run``."""
    import sys

    def alias(new: str) -> None:
        print(f"t2l: note: `t2l eval --{new.split()[0]}` is now `t2l eval {new}`", file=sys.stderr)

    if args.compare:
        alias("compare A B")
        args.a, args.b = args.compare
        return _compare(args)
    if args.report:
        alias("report OUT")
        args.out = args.report
        return _report(args)
    if args.paired:
        alias("paired OUT A B")
        args.out, args.a, args.b = args.paired
        args.not_in = None  # the old form has no --not-in
        return _paired(args)
    if args.table:
        alias("table OUT")
        args.out = args.table
        return _table(args)
    return _run(args)


def _run(args: argparse.Namespace) -> int:
    """``t2l eval run``: score the conditions on the benchmarks; write and print the reports."""
    import time
    from dataclasses import asdict

    from ..eval.conditions import parse_condition
    from ..eval.report import markdown_table, write_reports
    from ..eval.runner import EvalConfig, resolve_eval_tasks, run_eval

    out = args.out or f"runs/eval/{time.strftime('%Y%m%d-%H%M%S')}"
    cfg = EvalConfig(benchmarks=_csv(args.benchmarks or "all"),
                     conditions=_csv(args.conditions or "base,icl,description"), base=args.base, out=out,
                     limit=args.limit, seed=args.seed, shots=args.shots, split=args.split,
                     batch_size=args.batch_size, gen_batch_size=args.gen_batch_size, max_new_tokens=args.max_new_tokens,
                     shared_context=not args.no_shared_context, mc_metric=args.mc_metric,
                     mc_protocol=args.mc_protocol, code_timeout=args.code_timeout, quiet=args.quiet)
    conds = [parse_condition(c) for c in cfg.conditions]  # bad input fails before the model loads
    tasks = resolve_eval_tasks(cfg.benchmarks)
    base = _load_base(args.base, args.device)
    records = run_eval(cfg, base, tasks)
    summary = write_reports(records, out, cfg.mc_metric, [c.label for c in conds], asdict(cfg))
    print(markdown_table(summary), end="")
    if summary["instruct"]:
        print("\n" + summary["instruct"], end="")
    print(f"\nwrote {out}/results.json, results.md, results.csv" + (", results.png" if summary["png"] else
                                                                   " (install matplotlib for results.png)")
          + (", instruct.md, instruct.json" if summary["instruct"] else ""))
    return 0


def _scored(out: str) -> list[dict]:
    """The per-example records of an eval directory, or an error saying how to make them."""
    from pathlib import Path

    from ..errors import T2LError
    from ..eval.runner import load_results

    records = load_results(Path(out) / "results.jsonl")
    if not records:
        raise T2LError(f"{out} has no results.jsonl with results; run `t2l eval run --out {out} ...` first")
    return records


def _compare(args: argparse.Namespace) -> int:
    """``t2l eval compare A B``: B - A of two results.json files."""
    from ..eval.report import compare

    print(compare(args.a, args.b, mc_metric=args.mc_metric), end="")
    return 0


def _report(args: argparse.Namespace) -> int:
    """``t2l eval report OUT``: rewrite OUT's reports from its results.jsonl and print the table."""
    from pathlib import Path

    from .._io import read_json
    from ..eval.conditions import parse_condition
    from ..eval.report import markdown_table, write_reports

    records = _scored(args.out)
    run = Path(args.out) / "run.json"
    config = read_json(run).get("config", {}) if run.is_file() else {}
    order = [parse_condition(c).label for c in config.get("conditions", [])] if config else None
    summary = write_reports(records, args.out, args.mc_metric, order, config)
    print(markdown_table(summary), end="")
    if summary["instruct"]:
        print("\n" + summary["instruct"], end="")
    return 0


def _table(args: argparse.Namespace) -> int:
    """``t2l eval table OUT``: the Markdown table of chosen benchmarks and conditions (and a bar chart)."""
    from ..data import BENCHMARKS
    from ..errors import T2LError
    from ..eval.report import bar_chart, markdown_table, summarize

    records = _scored(args.out)
    benchmarks = args.benchmarks
    tasks = list(BENCHMARKS) if benchmarks == "all" else (_csv(benchmarks) if benchmarks else None)
    conds = _csv(args.conditions) if args.conditions else None
    summary = summarize(records, args.mc_metric, conds, tasks, only=True)
    print(markdown_table(summary), end="")
    if args.png and not bar_chart(summary, args.png):
        raise T2LError("--png needs matplotlib: pip install 'text-to-lora[train]'")
    return 0


def _paired(args: argparse.Namespace) -> int:
    """``t2l eval paired OUT A B``: B - A on the items both scored, with paired bootstrap intervals."""
    from pathlib import Path

    from .._io import atomic_write_json
    from ..errors import T2LError
    from ..eval.report import paired_difference, paired_markdown

    records = _scored(args.out)
    name = f"{args.a}__vs__{args.b}"
    if args.not_in:
        seen = {(r["task"], r["split"], r["index"]) for r in _scored(args.not_in)}
        records = [r for r in records if (r["task"], r["split"], r["index"]) not in seen]
        if not records:
            raise T2LError(f"every item {args.out} scored was also scored in {args.not_in}: nothing is left to "
                           f"compare; raise --limit of `t2l eval run --out {args.out}` to score new items")
        name += f"__not_in_{Path(args.not_in).name}"
    tasks = None if args.benchmarks in (None, "all") else _csv(args.benchmarks)
    result = paired_difference(records, args.a, args.b, tasks, args.mc_metric, seed=args.seed)
    if args.not_in:
        result["not_in"] = str(args.not_in)
    print(paired_markdown(result), end="")
    safe = "".join(ch if ch.isalnum() else "_" for ch in name)[:160]
    atomic_write_json(Path(args.out) / f"paired_{safe}.json", result)
    return 0


def _watch(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .._io import read_json
    from ..errors import ConfigError
    from ..data import resolve_tasks
    from ..eval.watch import SELECTION_BENCHMARKS, WatchConfig, find_checkpoints, watch

    benchmarks = _csv(args.benchmarks) if args.benchmarks else list(SELECTION_BENCHMARKS)
    cfg = WatchConfig(run_dir=args.run_dir, benchmarks=benchmarks, condition=args.condition, split=args.split,
                      limit=args.limit, pattern=args.pattern, interval=args.interval, patience=args.patience,
                      min_delta=args.min_delta, stop_file=args.stop_file, once=args.once,
                      idle_timeout=args.idle_timeout, mc_metric=args.mc_metric, batch_size=args.batch_size,
                      quiet=args.quiet)
    if not Path(args.run_dir).is_dir():
        raise ConfigError(f"run directory {args.run_dir} does not exist")
    tasks = resolve_tasks(cfg.benchmarks)
    base_name = args.base
    if base_name is None:
        ckpts = find_checkpoints(args.run_dir, args.pattern)
        run_cfg = Path(args.run_dir) / "config.json"
        if ckpts:
            base_name = read_json(ckpts[0] / "config.json")["base"]["name"]
        elif run_cfg.is_file() and isinstance(read_json(run_cfg).get("base"), (str, dict)):
            b = read_json(run_cfg)["base"]
            base_name = b if isinstance(b, str) else b.get("name")
        else:
            raise ConfigError(f"no checkpoint under {args.run_dir}/{args.pattern} yet; pass --base so the watcher "
                              "can load the base model and wait")
    base = _load_base(base_name, args.device)
    state = watch(cfg, base, tasks)
    print(f"best: {state['best']} ({state['best_score']})" if state["best"] else "no checkpoint evaluated")
    return 0
