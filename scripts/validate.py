"""Validation cross-entropy of trained generators on a recipe's held-out tasks, by prompt format.

    python scripts/validate.py configs/sft_mixed_mc.yaml GENERATOR_DIR [GENERATOR_DIR ...] [--json FILE]

The items are the ones `t2l train sft RECIPE` validates on (the recipe's validation tasks, seed, number
of examples and token caps; with ``mc_unlisted`` above 0 every listed-choice item also without its
choices), so generators trained by different recipes are compared on the same items. Each generator
makes one adapter per task from the task's first held-out (else training) description, as in training.
"""

from __future__ import annotations

import argparse
import sys

import torch

from _table import report
from text2lora import TextToLoRA, load_base
from text2lora.errors import T2LError
from text2lora.train import load_config
from text2lora.train.sft import SFTJob
from text2lora.train.tasks import recipe_tasks


def _format(ex) -> str:
    alt = ex.meta.get("prompt_unlisted") if ex.meta else None
    if alt is None:
        return "other"
    return "choices not listed" if ex.prompt == alt else "choices listed"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("recipe", help="an sft recipe (.yaml)")
    ap.add_argument("generators", nargs="+", help="generator directories (a run's best/, the shipped default)")
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
        gen = TextToLoRA.from_pretrained(path, base=base.spec)
        gen.hypernet.eval()
        job = SFTJob(cfg, base, gen, tasks, val_tasks, torch.device("cpu"))
        row = {}
        for name in ("all", "choices listed", "choices not listed", "other"):
            items = [(t, ex) for t, ex in job.val_items if name == "all" or _format(ex) == name]
            with torch.no_grad():
                ce = job.validate(items)
            if ce is not None:
                row[f"{name} ({len(items)})"] = round(ce, 4)
        out[path] = row
    return report("generator", out, args.json, recipe=args.recipe, measure="validation CE")


if __name__ == "__main__":
    sys.exit(main())
