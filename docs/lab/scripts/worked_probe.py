"""Whether a generator's math adapters make a worked solution likelier than unrelated adapters do.

    python docs/lab/scripts/worked_probe.py [GENERATOR_DIR | adapter:DIR ...] [--neighbours K] [--gsm8k N] [--json FILE]

One grade-school word problem not used in training, solved twice in the same words: as prose and
one step a line. Each is scored as GSM8K is evaluated (after the "Let's think step by step."
prefill): the mean cross-entropy of the solution's tokens and the end of turn, without an adapter,
under the adapters of GSM8K's five held-out descriptions (mean) and under the adapters of three
unrelated descriptions (mean), and under the first of each alone (the pair the slow test in
tests/test_shipped_generator.py compares). With ``--gsm8k N``, a third column: the same on the gold
worked solutions of N seeded GSM8K test items (GSM8K's own prose; needs `t2l data fetch
benchmarks`), many problems in words nobody here wrote, where one problem cannot tell apart
differences of a few hundredths; with ``adapter:DIR`` rows, their paired differences with bootstrap
intervals. With ``--neighbours K``, also under the adapters of the worked-problem tasks' first
training descriptions, and of the K training descriptions (of all the package ships) nearest the
first math description by the generator's description encoder, which are listed. ``adapter:DIR``
probes one PEFT LoRA directory (one row: the same adapter whatever the description). Without an
argument the shipped generator is probed. A diagnostic, not a score: nothing is chosen by it.
"""

from __future__ import annotations

import argparse
import contextlib
import random
import sys

import torch

from _table import report
from text2lora import LoRAAdapter, TextToLoRA, apply_adapters, load_base
from text2lora.data import Example, alignment_set, get_task
from text2lora.data.descriptions import (bigbench_descriptions, olmo_descriptions, programs_descriptions,
                                         worked_descriptions)
from text2lora.data.prompts import COT_PREFILL
from text2lora.errors import T2LError
from text2lora.eval.conditions import parse_condition
from text2lora.eval.report import bootstrap_means
from text2lora.train.batches import encode_examples, lm_response_logprobs

PROBLEM = ("A baker makes 14 loaves of bread in the morning and 9 in the afternoon. She sells 17 loaves and "
           "gives 2 to a neighbour. How many loaves does she have left?")
STEPS = ["In total she makes 14 + 9 = 23 loaves.", "She sells 17 and gives away 2, so 17 + 2 = 19 loaves leave "
         "the shop.", "That leaves 23 - 19 = 4 loaves."]
SOLUTIONS = {"prose": " ".join(STEPS) + " So the answer is 4.", "lines": "\n".join(STEPS) + "\nThe answer is 4."}
UNRELATED = ("Translate an English sentence into German.",
             "Classify the sentiment of a movie review as positive or negative.",
             "Answer trivia questions about history.")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("generators", nargs="*", help="generator directories, or adapter:DIR for one PEFT LoRA "
                                                  "(default: the shipped generator)")
    ap.add_argument("--neighbours", type=int, default=0, metavar="K",
                    help="also probe the worked tasks' descriptions and the K training descriptions nearest the "
                         "first math description")
    ap.add_argument("--gsm8k", type=int, default=0, metavar="N",
                    help="also score the gold solutions of N seeded GSM8K test items")
    ap.add_argument("--json", help="also write the numbers to this JSON file")
    args = ap.parse_args(argv)
    try:
        return _run(args)
    except T2LError as e:  # missing generator, wrong base: say what, no traceback
        print(f"error: {e}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:
    base = load_base()
    fixed = {p: LoRAAdapter.load(parse_condition(p).path, base.spec) for p in args.generators
             if p.startswith("adapter:")}  # eval's condition syntax: names a missing directory clearly
    gens = {p: TextToLoRA.from_pretrained(p, base=base.spec) for p in args.generators if p not in fixed}
    if not args.generators:
        gens = {"shipped": TextToLoRA.from_pretrained(base=base.spec)}
    examples = {name: [Example(PROBLEM, text, meta={"prefill": COT_PREFILL})] for name, text in SOLUTIONS.items()}
    if args.gsm8k:
        test = get_task("gsm8k").splits["test"]
        examples[f"GSM8K gold ({args.gsm8k})"] = random.Random(0).sample(test, min(args.gsm8k, len(test)))
    batches = {name: [encode_examples(base.tokenizer, exs[i:i + 16]) for i in range(0, len(exs), 16)]
               for name, exs in examples.items()}

    def item_losses(name: str, adapter) -> list[float]:
        """Each of the column's items' mean token cross-entropy (its response and end of turn)."""
        applied = apply_adapters(base.model, adapter, base.spec) if adapter is not None else contextlib.nullcontext()
        out = []
        with torch.no_grad(), applied:
            for tb in batches[name]:
                out += (-lm_response_logprobs(base.model, tb) / (tb.labels != -100).sum(1)).tolist()
        return out

    def loss(name: str, adapter) -> float:
        return sum(losses := item_losses(name, adapter)) / len(losses)

    math = alignment_set("gsm8k", "heldout")
    worked = [sets["train"][0] for sets in worked_descriptions().values()]
    # the rows with one adapter for every item: each item's loss kept, for the paired differences below
    items = {label: {name: item_losses(name, adapter) for name in examples}
             for label, adapter in {"no adapter": None, **fixed}.items()}
    out = {label: {name: round(sum(v) / len(v), 4) for name, v in cols.items()} for label, cols in items.items()}
    paired = {}
    if args.gsm8k and fixed:  # the GSM8K column's differences, item by item, with bootstrap intervals
        column = next(name for name in examples if name.startswith("GSM8K"))
        labels = list(items)
        pairs = [("no adapter", k) for k in labels[1:]] + list(zip(labels[1:], labels[2:]))
        paired = {f"{b} minus {a}": bootstrap(items[a][column], items[b][column]) for a, b in pairs}
    meta = {}
    for label, gen in gens.items():
        groups = {"math descriptions": math, "unrelated descriptions": list(UNRELATED)}
        if args.neighbours:
            near = nearest(gen, math[0], args.neighbours)
            meta[f"{label}: nearest training descriptions"] = near
            nearest_label = f"the {len(near)} training descriptions nearest the first math description"
            groups |= {"worked tasks' descriptions": worked, nearest_label: [d for _, d, _ in near]}
        texts = [d for descs in groups.values() for d in descs]
        per = [{name: loss(name, a) for name in examples} for a in gen.generate(texts)]  # one batched pass
        start = 0
        for group, descs in groups.items():
            rows = per[start:start + len(descs)]
            start += len(descs)
            out[f"{label}, {group}"] = {name: round(sum(r[name] for r in rows) / len(rows), 4) for name in examples}
        for group, row in (("first math description", per[0]), ("first unrelated description", per[len(math)])):
            out[f"{label}, {group}"] = {name: round(v, 4) for name, v in row.items()}
    for key, near in meta.items():
        print(f"{key} ({math[0]!r}):")
        for task, desc, cos in near:
            print(f"  {cos:.3f}  {task}: {desc}")
    print(f"cross-entropy of a worked solution ({len(math)} held-out math descriptions, {len(UNRELATED)} unrelated)")
    status = report("adapters", out, args.json, problem=PROBLEM, solutions=SOLUTIONS, unrelated=list(UNRELATED),
                    **meta, **({"gsm8k_paired": paired} if paired else {}))
    for label, d in paired.items():
        print(f"GSM8K gold, {label}: {d['diff']:+.4f} [{d['ci'][0]:+.4f}, {d['ci'][1]:+.4f}] "
              f"({d['lower']} items lower, {d['higher']} higher)")
    return status


def bootstrap(a: list[float], b: list[float], n_boot: int = 10_000, seed: int = 0) -> dict:
    """Mean of ``b - a`` over paired items with a 95% paired bootstrap interval."""
    import numpy as np

    d = np.asarray(b) - np.asarray(a)
    boot = bootstrap_means(d, np.random.default_rng(seed), n_boot)
    return {"diff": round(float(d.mean()), 4), "ci": [round(float(x), 4) for x in np.percentile(boot, [2.5, 97.5])],
            "lower": int((d < 0).sum()), "higher": int((d > 0).sum())}


def nearest(gen: TextToLoRA, text: str, k: int) -> list[tuple[str, str, float]]:
    """(task, description, cosine) of the ``k`` training descriptions the package ships (BIG-bench, OLMo,
    worked problems, functions) nearest ``text`` under ``gen``'s description encoder."""
    pool = [(f"bigbench/{task}", d) for task, descs in bigbench_descriptions().items() for d in descs]
    for prefix, sets in (("olmo", olmo_descriptions()), ("worked", worked_descriptions()),
                         ("programs", programs_descriptions())):
        pool += [(f"{prefix}/{task}", d) for task, s in sets.items() for d in s["train"]]
    emb = torch.nn.functional.normalize(gen.embed([text, *(d for _, d in pool)]).float(), dim=-1)
    cos = emb[1:] @ emb[0]
    top = cos.topk(min(k, len(pool)))
    return [(*pool[i], round(float(c), 4)) for c, i in zip(top.values.tolist(), top.indices.tolist())]


if __name__ == "__main__":
    sys.exit(main())
