"""Benchmark the ``length_groups`` option: SFT steps of a recipe on its real batches, one forward pass a batch
against several passes over rows of similar length.

Draws ``--batches`` batches from the recipe's own task sampler (its tasks must be fetched: ``t2l data fetch
all`` for configs/generator.yaml), then times a whole SFT step (hypernetwork forward, per-row adapters, base
forward + backward, AdamW step) on each batch for every ``--groups`` value, the arms interleaved batch by batch
so a busy machine slows them alike. Prints the median step time per arm, its speed-up over one pass, and the
share of the tokens the base model runs that are real (not padding).

Usage: python bench/length_groups.py [--recipe configs/generator.yaml] [--batches 6] [--groups 1,2,3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import add_out_arg, print_table, write_json  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--recipe", default="configs/generator.yaml", help="an sft recipe (default: %(default)s)")
    ap.add_argument("--batches", type=int, default=6, help="batches timed per arm (median)")
    ap.add_argument("--groups", default="1,2,3", help="length_groups values compared, the first is the reference")
    add_out_arg(ap, "length_groups")
    args = ap.parse_args()
    arms = [int(g) for g in args.groups.split(",")]

    import torch

    from text2lora.train import load_config
    from text2lora.train.batches import encode_examples, length_groups
    from text2lora.train.loop import load_train_base
    from text2lora.train.sft import SFTJob, adapter_l2, build_generator
    from text2lora.train.tasks import recipe_tasks

    cfg = load_config("sft", args.recipe)
    tasks, val_tasks = recipe_tasks(cfg, None, None)
    device = torch.device(cfg.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    base = load_train_base(cfg, device)
    gen = build_generator(cfg, base, [t.name for t in tasks + val_tasks]).to(device)
    job = SFTJob(cfg, base, gen, tasks, val_tasks, device)
    opt = torch.optim.AdamW(gen.hypernet.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    gen.hypernet.train()
    batches = [job.sampler.next_batch() for _ in range(args.batches + 1)]  # the first warms up, untimed

    def step(rows, groups) -> float:
        job.cfg = cfg.model_copy(update={"length_groups": groups})
        texts = [job.condition_text(t, ex, d) for t, ex, d in rows]
        t0 = time.perf_counter()
        adapters = job.model(job.embed(texts))
        ce = job._ce(adapters, [ex for _, ex, _ in rows], cfg.label_smoothing, cfg.neftune_alpha, cfg.loss_average)
        (ce + cfg.l2_coef * adapter_l2(adapters)).backward()
        torch.nn.utils.clip_grad_norm_(gen.hypernet.parameters(), cfg.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - t0

    times: dict[int, list[float]] = {g: [] for g in arms}
    tokens: dict[int, list[int]] = {g: [] for g in arms}
    real = []
    for b, rows in enumerate(batches):
        tb = encode_examples(base.tokenizer, [ex for _, ex, _ in rows], cfg.max_prompt_tokens, cfg.max_response_tokens)
        lengths = tb.attention_mask.sum(1).tolist()
        order = arms if b % 2 == 0 else arms[::-1]
        for g in order:
            took = step(rows, g)
            if b:
                times[g].append(took)
                tokens[g].append(sum(len(p) * max(lengths[i] for i in p) for p in length_groups(lengths, g)))
        if b:
            real.append(sum(lengths))

    ref = statistics.median(times[arms[0]])
    rows_out, result = [], []
    for g in arms:
        med = statistics.median(times[g])
        share = sum(real) / sum(tokens[g])
        rows_out.append({"length_groups": g, "median step (s)": f"{med:.2f}", "speed-up": f"{ref / med:.2f}x",
                         "real tokens / tokens run": f"{share:.0%}"})
        result.append({"length_groups": g, "median_step_s": med, "step_times_s": times[g],
                       "speedup": ref / med, "real_token_share": share})
    print(f"{args.recipe}: {args.batches} batches of {cfg.tasks_per_batch} rows on {device} ({base.dtype}), "
          f"arms interleaved\n")
    print_table(rows_out, ["length_groups", "median step (s)", "speed-up", "real tokens / tokens run"])
    write_json("length_groups", {"recipe": args.recipe, "batches": args.batches, "device": str(device),
                                 "arms": result}, out=args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
