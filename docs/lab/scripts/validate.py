"""Validation cross-entropy of trained generators on a recipe's held-out tasks, by prompt format.

    python docs/lab/scripts/validate.py configs/experiments/sft_mixed_mc.yaml GENERATOR_DIR [GENERATOR_DIR ...] [--json FILE]

A column may also be ``base`` (the base model alone) or ``adapter:DIR`` (one PEFT LoRA directory for
every task, e.g. a multi-task LoRA's best/).

Columns: all items; by prompt format (multiple-choice items with their choices listed or not, other
items); by answer format (multiple choice, short answers, long answers averaging 10+ words); by
collection of the validation task; and the multiple-choice items' accuracy as the benchmarks score it
(acc_norm, a percentage, not a loss). The items are the ones `t2l train sft RECIPE` validates on (the
recipe's validation tasks, seed, number of examples and token caps; with ``mc_unlisted`` above 0 every
listed-choice item also without its choices), so generators trained by different recipes are compared
on the same items. Each generator makes one adapter per task from the task's first held-out (else
training) description, as in training.
"""

from __future__ import annotations

import argparse
import contextlib
import sys

import torch

from _table import report
from text2lora import LoRAAdapter, TextToLoRA, apply_adapters, load_base
from text2lora.errors import T2LError
from text2lora.eval.conditions import parse_condition
from text2lora.train import load_config
from text2lora.train.sft import SFTJob
from text2lora.train.tasks import recipe_tasks


def _format(ex) -> str:
    alt = ex.meta.get("prompt_unlisted") if ex.meta else None
    if alt is None:
        return "other"
    return "choices not listed" if ex.prompt == alt else "choices listed"


def _groups(task, ex) -> set[str]:
    """The columns an item counts in: all, its prompt format, its task's answer format, its collection,
    and whether its answer is rewritten into a stated form (the recipe's ``answer_forms`` items)."""
    from text2lora.data.sources.olmo import answer_format

    stated = "answer form" if ex.meta and ex.meta.get("form") else "task's own answer"
    return {"all", _format(ex), answer_format(task).replace("_", " "), stated, f"{task.source} tasks"}


#: The columns, in order; then one column per collection of the validation tasks (``<source> tasks``).
GROUPS = ("all", "choices listed", "choices not listed", "other", "multiple choice", "short", "long",
          "task's own answer", "answer form")


def _fixed_ce(job: SFTJob, items, adapter: LoRAAdapter | None) -> float | None:
    """Mean response CE of ``items`` under the base model alone or with one fixed ``adapter`` (the same
    batches as ``job.validate``)."""
    from text2lora.train.batches import encode_examples, lm_response_loss

    if not items:
        return None
    total, k = 0.0, job.cfg.tasks_per_batch
    for i in range(0, len(items), k):
        chunk = [ex for _, ex, *_ in items[i:i + k]]
        tb = encode_examples(job.base.tokenizer, chunk, job.cfg.max_prompt_tokens, job.cfg.max_response_tokens,
                             eos=job.cfg.eos_loss)
        with apply_adapters(job.base.model, adapter, job.base.spec) if adapter else contextlib.nullcontext():
            total += float(lm_response_loss(job.base.model, tb)) * len(chunk)
    return total / len(items)


def _mc_accuracy(job: SFTJob, gen: TextToLoRA, items, adapter: LoRAAdapter | None,
                 fixed: bool) -> tuple[float, int] | None:
    """(acc_norm in %, number) of the multiple-choice ``items``, scored as the benchmarks are (full
    prompt, every choice's summed log-probability per character) under each task's adapter (``fixed``:
    ``adapter`` or none)."""
    from text2lora.data import format_prompt
    from text2lora.eval.metrics import choice_predictions
    from text2lora.eval.scoring import encode_mc, score_choices
    from text2lora.train.sft import validation_description

    mc = [(t, ex) for t, ex, *_ in items if ex.choices]
    if not mc:
        return None
    made: dict[str, LoRAAdapter | None] = {}
    for t, _ in mc:
        if t.name not in made:
            made[t.name] = adapter if fixed else gen.generate(validation_description(t))
    tok = job.base.tokenizer
    scores = score_choices(job.base, [encode_mc(tok, format_prompt(ex, tok, "zero_shot"), ex.choices) for _, ex in mc],
                           [made[t.name] for t, _ in mc])
    right = [choice_predictions(s, ex.choices)[1] == ex.gold for s, (_, ex) in zip(scores, mc)]
    return round(100 * sum(right) / len(right), 2), len(right)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("recipe", help="an sft recipe (.yaml)")
    ap.add_argument("generators", nargs="+",
                    help="generator directories (a run's best/, the shipped default); 'base' is the base model "
                         "without an adapter; 'adapter:DIR' is one PEFT LoRA for every task")
    ap.add_argument("--json", help="also write the numbers to this JSON file")
    args = ap.parse_args(argv)
    try:
        return _run(args)
    except T2LError as e:  # bad recipe, missing generator, wrong base: say what, no traceback
        print(f"error: {e}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:
    cfg = load_config("sft", args.recipe)
    tasks, val_tasks = recipe_tasks(cfg, None, None)
    base = load_base(cfg.base, cfg.target_modules)
    out: dict[str, dict[str, float]] = {}
    for path in args.generators:
        adapter = None
        if path.startswith("adapter:"):  # eval's condition syntax: names a missing directory clearly
            adapter = LoRAAdapter.load(parse_condition(path).path, base.spec)
        fixed = path == "base" or adapter is not None
        gen = TextToLoRA.from_pretrained(None if fixed else path, base=base.spec)
        gen.hypernet.eval()
        job = SFTJob(cfg, base, gen, tasks, val_tasks, torch.device("cpu"))
        # each item is scored once, in the finest partition of the columns; a column's CE is the
        # item-weighted mean of its cells (the loss is a per-item mean, so batching does not change it).
        # An item keeps its description: an answer-form item's states the form.
        cells: dict[frozenset, list] = {}
        for item in job.val_items:
            cells.setdefault(frozenset(_groups(item[0], item[1])), []).append(item)
        scored = []
        for key, items in cells.items():
            with torch.no_grad():
                ce = _fixed_ce(job, items, adapter) if fixed else job.validate(items)
            scored.append((key, len(items), ce))
        row = {}
        sources = sorted({g for key, _, _ in scored for g in key if g.endswith(" tasks")})
        for name in GROUPS + tuple(sources):
            parts = [(n, ce) for key, n, ce in scored if name in key]
            if parts:
                total = sum(n for n, _ in parts)
                row[f"{name} ({total})"] = round(sum(n * ce for n, ce in parts) / total, 4)
        mc = _mc_accuracy(job, gen, job.val_items, adapter, fixed)
        if mc is not None:
            row[f"MC acc_norm % ({mc[1]})"] = mc[0]
        out[path] = row
    return report("generator", out, args.json, recipe=args.recipe, measure="validation CE")


if __name__ == "__main__":
    sys.exit(main())
