"""How often a generator's adapters end the answer before it starts, on generation benchmarks.

    python scripts/stop_probe.py [GENERATOR_DIR ...] [--benchmarks gsm8k,humaneval,mbpp] [--items 20]
                                 [--json FILE]

For each benchmark, the first ``--items`` of the items `t2l eval --seed 0` scores (the same seeded
subset), zero-shot, as the evaluation prompts them (GSM8K with its "Let's think step by step."
prefill): the probability of the end-of-turn token as the first generated token, without an adapter
and with the adapter each generator makes from the benchmark's first held-out description. A
diagnostic of the short-answer collapse (docs/RESULTS.md section 1), not a score: nothing is chosen
by it. Without a generator argument the shipped default is probed.
"""

from __future__ import annotations

import argparse
import contextlib
import sys

import torch

from _table import report
from text2lora import TextToLoRA, load_base
from text2lora.data import alignment_set, format_prompt, get_task
from text2lora.errors import T2LError
from text2lora.eval.runner import select_examples
from text2lora.inject import apply_adapters


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("generators", nargs="*", help="generator directories (default: the shipped one)")
    ap.add_argument("--benchmarks", default="gsm8k,humaneval,mbpp", help="comma-separated benchmark names")
    ap.add_argument("--items", type=int, default=20, help="items per benchmark (default 20)")
    ap.add_argument("--json", help="also write the numbers to this JSON file")
    args = ap.parse_args(argv)
    if args.items < 1:
        print("error: --items must be at least 1", file=sys.stderr)
        return 2
    try:
        return _run(args)
    except T2LError as e:  # unknown benchmark, missing generator, wrong base: say what, no traceback
        print(f"error: {e}", file=sys.stderr)
        return 2


def _stop_first(base, prompt: str, adapter) -> float:
    ids = base.tokenizer(prompt, add_special_tokens=False, return_tensors="pt")["input_ids"]
    applied = apply_adapters(base.model, adapter, base.spec) if adapter is not None else contextlib.nullcontext()
    with torch.no_grad(), applied:
        logits = base.model(input_ids=ids).logits[0, -1]
    return float(torch.softmax(logits.float(), -1)[base.tokenizer.eos_token_id])


def _run(args: argparse.Namespace) -> int:
    tasks = [get_task(b.strip()) for b in args.benchmarks.split(",") if b.strip()]  # bad names fail fast
    base = load_base()
    gens = {p: TextToLoRA.from_pretrained(p, base=base.spec) for p in args.generators} or \
        {"shipped": TextToLoRA.from_pretrained(base=base.spec)}
    out: dict[str, dict[str, float]] = {}
    for task in tasks:
        name = task.name
        _, items = select_examples(task, "auto", args.items, seed=0)
        prompts = [format_prompt(ex, base.tokenizer, "zero_shot", task=task) for _, ex in items]
        adapters = {"base": None}
        description = alignment_set(name, "heldout")[0]
        adapters.update({label: g.generate(description) for label, g in gens.items()})
        for label, adapter in adapters.items():
            out.setdefault(label, {})[name] = round(sum(_stop_first(base, p, adapter) for p in prompts) / len(prompts), 4)
    print(f"P(end of turn as the first token), mean over {args.items} items a benchmark")
    return report("adapter", out, args.json, items=args.items, measure="P(end of turn first)")


if __name__ == "__main__":
    sys.exit(main())
