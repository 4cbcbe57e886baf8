"""``t2l eval run|report|table|compare|paired``: benchmarks x conditions -> tables, and reading them back."""

from __future__ import annotations

import argparse

from ._args import add_config_flags, config_from_args, csv_arg

SPLITS = ("auto", "test", "validation", "train")
MC_METRICS = ("acc", "acc_norm")


EVAL_COMMANDS = ("run", "report", "table", "compare", "paired")
LIGHT_EVAL_COMMANDS = ("report", "table", "compare")
"""Subcommands that only read results (no model): they neither warn about nor register as a heavy job."""


# EvalConfig's fields that `t2l eval run` takes as flags (defaults and help from the dataclass), and their short forms
RUN_FIELDS = ("benchmarks", "conditions", "base", "out", "limit", "seed", "shots", "split", "batch_size",
              "gen_batch_size", "max_new_tokens", "mc_metric", "mc_protocol", "shared_context", "code_timeout", "quiet")
SHORT = {"benchmarks": "-b", "conditions": "-c", "out": "-o", "quiet": "-q"}


def _run_flags(p: argparse.ArgumentParser, show: bool = True) -> None:
    """The flags of ``t2l eval run`` (hidden from ``--help`` when ``show`` is false: the old form's aliases)."""
    from ..eval.runner import GEN_TOKENS, MC_PROTOCOLS, EvalConfig

    add_config_flags(p, EvalConfig, RUN_FIELDS, show=show, short=SHORT,
                     choices={"split": SPLITS, "mc_metric": MC_METRICS, "mc_protocol": MC_PROTOCOLS},
                     shown={"benchmarks": "all ten", "out": "runs/eval/<timestamp>",
                            "max_new_tokens": ", ".join(f"{k} {v}" for k, v in GEN_TOKENS.items())})
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)" if show else argparse.SUPPRESS)


def _mc_metric_flag(p: argparse.ArgumentParser) -> None:
    from ..eval.runner import EvalConfig

    add_config_flags(p, EvalConfig, ("mc_metric",), choices={"mc_metric": MC_METRICS})


def register(subparsers) -> None:
    """Add the ``eval`` command with its subcommands ``run``, ``report``, ``table``, ``compare``, ``paired``."""
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

    from ..base import load_base
    from ..eval.conditions import parse_condition
    from ..eval.report import markdown_table, write_reports
    from ..eval.runner import EvalConfig, resolve_eval_tasks, run_eval

    out = args.out or f"runs/eval/{time.strftime('%Y%m%d-%H%M%S')}"
    cfg = config_from_args(EvalConfig, args, out=out)
    conds = [parse_condition(c) for c in cfg.conditions]  # bad input fails before the model loads
    tasks = resolve_eval_tasks(cfg.benchmarks)
    base = load_base(args.base, device=args.device)
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
    tasks = list(BENCHMARKS) if benchmarks == "all" else (csv_arg(benchmarks) if benchmarks else None)
    conds = csv_arg(args.conditions) if args.conditions else None
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
    tasks = None if args.benchmarks in (None, "all") else csv_arg(args.benchmarks)
    result = paired_difference(records, args.a, args.b, tasks, args.mc_metric, seed=args.seed)
    if args.not_in:
        result["not_in"] = str(args.not_in)
    print(paired_markdown(result), end="")
    safe = "".join(ch if ch.isalnum() else "_" for ch in name)[:160]
    atomic_write_json(Path(args.out) / f"paired_{safe}.json", result)
    return 0
