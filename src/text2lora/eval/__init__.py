"""Evaluation: benchmarks x conditions, metrics, code sandbox, fast batched scoring, reports, and a
checkpoint watcher.

    from text2lora import load_base
    from text2lora.eval import EvalConfig, run_eval, write_reports
    base = load_base()
    cfg = EvalConfig(benchmarks=["arc_easy", "gsm8k"], conditions=["base", "icl", "t2l:CKPT"], limit=50,
                     out="runs/eval/demo")
    records = run_eval(cfg, base)
    write_reports(records, cfg.out)
"""

from .conditions import CONDITION_KINDS, Condition, ConditionResolver, parse_condition
from .report import compare, markdown_table, summarize, write_reports
from .runner import EvalConfig, load_results, run_eval, select_examples
from .sandbox import SandboxResult, run_code
from .scoring import MCItem, encode_mc, generate, score_choices
from .watch import WatchConfig, find_checkpoints, watch

__all__ = ["EvalConfig", "run_eval", "load_results", "select_examples",
           "CONDITION_KINDS", "Condition", "parse_condition", "ConditionResolver",
           "summarize", "markdown_table", "write_reports", "compare",
           "run_code", "SandboxResult", "MCItem", "encode_mc", "score_choices", "generate",
           "WatchConfig", "watch", "find_checkpoints"]
