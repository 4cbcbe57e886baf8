"""How far generators' adapters are from a reference generator's, by kind of description.

    python docs/lab/scripts/drift.py REFERENCE GENERATOR [GENERATOR ...] [--tasks N] [--json FILE]

For each generator, the relative squared distance of the adapters it makes from the ones the
reference makes for the same descriptions (sum((A - A0)^2) / sum(A0^2) plus the same for B: the
measure of the SFT recipe's ``anchor_coef`` term, ``text2lora.train.sft.adapter_drift``), on three
sets: the first training description of N seeded tasks of the training mix (BIG-bench, OLMo, worked
problems, functions); the held-out descriptions of the seven multiple-choice benchmarks; GSM8K's
held-out descriptions. A diagnostic, not a score: nothing is chosen by it.
"""

from __future__ import annotations

import argparse
import random
import sys

import torch

from _table import report
from text2lora import TextToLoRA
from text2lora.data import alignment_set, resolve_tasks
from text2lora.errors import T2LError
from text2lora.train.sft import adapter_drift

MC = ["arc_challenge", "arc_easy", "boolq", "hellaswag", "openbookqa", "piqa", "winogrande"]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("reference", help="the generator directory distances are measured from")
    ap.add_argument("generators", nargs="+", help="generator directories")
    ap.add_argument("--tasks", type=int, default=100, help="training tasks drawn (default 100)")
    ap.add_argument("--json", help="also write the numbers to this JSON file")
    args = ap.parse_args(argv)
    try:
        return _run(args)
    except T2LError as e:  # missing generator, wrong base, data not fetched: say what, no traceback
        print(f"error: {e}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:
    ref = TextToLoRA.from_pretrained(args.reference)  # the adapters alone are compared: no base model is loaded
    tasks = resolve_tasks(["bigbench", "olmo", "worked", "programs"])
    drawn = random.Random(0).sample(tasks, min(args.tasks, len(tasks)))
    sets = {f"training tasks ({len(drawn)})": [(t.train_descriptions or [t.name])[0] for t in drawn],
            "MC benchmarks, held-out": [d for b in MC for d in alignment_set(b, "heldout")],
            "GSM8K, held-out": alignment_set("gsm8k", "heldout")}

    def adapters(gen: TextToLoRA, texts: list[str]):
        with torch.no_grad():
            return gen(gen.embed(texts))

    made = {name: adapters(ref, texts) for name, texts in sets.items()}
    rows = {}
    for path in args.generators:
        gen = TextToLoRA.from_pretrained(path, base=ref.base_spec)  # another base's generator: named and refused
        rows[path] = {name: float(adapter_drift(adapters(gen, texts), made[name])) for name, texts in sets.items()}
    print(f"relative squared distance of the adapters from {args.reference}'s")
    return report("generator", rows, args.json, reference=args.reference, seed=0)


if __name__ == "__main__":
    sys.exit(main())
