"""How often a generator's adapters end the answer before it starts, on generation benchmarks.

    python docs/lab/scripts/stop_probe.py [GENERATOR_DIR ...] [--benchmarks gsm8k,humaneval,mbpp] [--items 20]
                                 [--json FILE]
    python docs/lab/scripts/stop_probe.py --recipe configs/experiments/sft_mixed_mc.yaml [GENERATOR_DIR ...] [--max-tokens 64]

For each benchmark, the first ``--items`` of the items `t2l eval --seed 0` scores (the same seeded
subset), zero-shot, as the evaluation prompts them (GSM8K with its "Let's think step by step."
prefill): the probability of the end-of-turn token as the first generated token, without an adapter
and with the adapter each generator makes from the benchmark's first held-out description. A
diagnostic of the short-answer collapse (docs/lab/LOG.md section 1), not a score: nothing is chosen
by it. Without a generator argument the shipped default is probed.

With ``--recipe``, the probe runs on a recipe's validation items instead (the held-out BIG-bench tasks
`t2l train sft RECIPE` validates on, as docs/lab/scripts/validate.py does): besides P(end first), the share
of greedy answers that end (end of turn) within ``--max-tokens``, i.e. whether the adapted model
still stops after an answer.
"""

from __future__ import annotations

import argparse
import contextlib
import sys

import torch

from _table import report
from text2lora import TextToLoRA, load_base
from text2lora.base import lm_parts
from text2lora.data import alignment_set, format_prompt, get_task
from text2lora.errors import T2LError
from text2lora.eval.runner import select_examples
from text2lora.eval.scoring import generate
from text2lora.inject import apply_adapters
from text2lora.train import load_config
from text2lora.train.sft import SFTJob, validation_description
from text2lora.train.tasks import recipe_tasks


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("generators", nargs="*", help="generator directories (default: the shipped one)")
    ap.add_argument("--benchmarks", default="gsm8k,humaneval,mbpp", help="comma-separated benchmark names")
    ap.add_argument("--items", type=int, default=20, help="items per benchmark (default 20)")
    ap.add_argument("--recipe", help="probe this sft recipe's validation items instead of benchmarks")
    ap.add_argument("--max-tokens", type=int, default=64, help="with --recipe: the answer length cap (default 64)")
    ap.add_argument("--json", help="also write the numbers to this JSON file")
    args = ap.parse_args(argv)
    if args.items < 1 or args.max_tokens < 1:
        print("error: --items and --max-tokens must be at least 1", file=sys.stderr)
        return 2
    try:
        return _run(args)
    except T2LError as e:  # unknown benchmark, missing generator, wrong base: say what, no traceback
        print(f"error: {e}", file=sys.stderr)
        return 2


def _stop_first(base, prompt: str, adapter) -> float:
    ids = base.tokenizer(prompt, add_special_tokens=False, return_tensors="pt")["input_ids"]
    body, head = lm_parts(base.model)  # the vocabulary projection only where it is read: the last position
    applied = apply_adapters(base.model, adapter, base.spec) if adapter is not None else contextlib.nullcontext()
    with torch.inference_mode(), applied:
        logits = head(body(input_ids=ids).last_hidden_state[0, -1])
    return float(torch.softmax(logits, -1)[base.tokenizer.eos_token_id])


def _generators(paths: list[str], base) -> dict[str, TextToLoRA]:
    return {p: TextToLoRA.from_pretrained(p, base=base.spec) for p in paths} or \
        {"shipped": TextToLoRA.from_pretrained(base=base.spec)}


def _run_recipe(args: argparse.Namespace) -> int:
    cfg = load_config("sft", args.recipe)
    tasks, val_tasks = recipe_tasks(cfg, None, None)
    base = load_base(cfg.base, cfg.target_modules)
    gens = _generators(args.generators, base)
    job = SFTJob(cfg, base, next(iter(gens.values())), tasks, val_tasks, torch.device("cpu"))
    prompts = [format_prompt(ex, base.tokenizer, "zero_shot") for _, ex, *_ in job.val_items]
    descriptions = [validation_description(t) for t, *_ in job.val_items]
    out: dict[str, dict[str, float]] = {}
    for label, gen in [("base", None), *gens.items()]:
        made = {d: gen.generate(d) for d in set(descriptions)} if gen is not None else {}
        adapters = [made.get(d) for d in descriptions]
        first = sum(_stop_first(base, p, a) for p, a in zip(prompts, adapters)) / len(prompts)
        outs = generate(base, prompts, adapters, max_new_tokens=args.max_tokens, batch_size=16)
        lengths = [len(base.tokenizer(o, add_special_tokens=False)["input_ids"]) for o in outs]
        out[label] = {"P(end first)": round(first, 4),
                      f"ended within {args.max_tokens}": round(sum(n < args.max_tokens for n in lengths) / len(outs), 4),
                      "mean tokens": round(sum(lengths) / len(outs), 1)}
    print(f"{len(prompts)} validation items of {args.recipe}")
    return report("adapter", out, args.json, recipe=args.recipe, max_tokens=args.max_tokens)


def _run(args: argparse.Namespace) -> int:
    if args.recipe:
        return _run_recipe(args)
    tasks = [get_task(b.strip()) for b in args.benchmarks.split(",") if b.strip()]  # bad names fail fast
    base = load_base()
    gens = _generators(args.generators, base)
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
