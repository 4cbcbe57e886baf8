"""Benchmark multiple-choice scoring on the default base (SmolLM2-135M-Instruct).

Measures examples/s for:
  - batched: 16 different adapters, one per row, in one batch (`apply_adapters`), contexts shared by choices;
  - full sequences: the batched path without the shared context (every context + choice scored in full);
  - one at a time: each adapter loaded from its PEFT directory, then its example scored alone (with and
    without the shared context, so the batching gain is visible on its own);
  - PEFT: what a user does without this project: `PeftModel.load_adapter` + `set_adapter` per adapter,
    then the example scored alone in full.

Items are ARC-Easy test questions in the zero-shot chat prompt (the built `benchmarks` collection),
one per adapter; adapters are random rank-8 q/v LoRAs saved as PEFT directories.

Usage: python bench/eval.py [--adapters 16] [--repeat 3]
Target: batched >= 4x one-at-a-time.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import add_out_arg, print_table, write_json  # noqa: E402


def _random_adapter(spec, seed: int):
    import torch

    from text2lora import LoRAAdapter

    g = torch.Generator().manual_seed(seed)
    A = {m.name: torch.randn(spec.num_layers, 8, m.in_features, generator=g) * 0.02 for m in spec.modules}
    B = {m.name: torch.randn(spec.num_layers, m.out_features, 8, generator=g) * 0.02 for m in spec.modules}
    return LoRAAdapter(spec, A, B, alpha=16.0, meta={"description": f"bench {seed}"})


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--adapters", type=int, default=16, help="different adapters (= examples, one each)")
    ap.add_argument("--repeat", type=int, default=3, help="timed runs per method (median)")
    add_out_arg(ap, "eval")
    args = ap.parse_args()

    import statistics

    import torch

    from text2lora import LoRAAdapter, load_base
    from text2lora.data import format_prompt, get_task
    from text2lora.eval import scoring
    from text2lora.eval.scoring import encode_mc, score_choices

    base = load_base()
    task = get_task("arc_easy")
    exs = task.splits["test"][: args.adapters]
    items = [encode_mc(base.tokenizer, format_prompt(e, base.tokenizer, "zero_shot"), e.choices) for e in exs]
    n = len(items)

    def timed(fn) -> tuple[float, object]:
        fn()  # warm-up
        times, out = [], None
        for _ in range(args.repeat):
            t = time.perf_counter()
            out = fn()
            times.append(time.perf_counter() - t)
        return statistics.median(times), out

    with tempfile.TemporaryDirectory() as tmp:
        dirs = []
        for i in range(n):
            dirs.append(_random_adapter(base.spec, i).save(Path(tmp) / f"a{i}"))

        def batched():
            adapters = [LoRAAdapter.load(d, base=base.spec) for d in dirs]
            return score_choices(base, items, adapters, batch_size=n, shared_context=True)

        def full():
            adapters = [LoRAAdapter.load(d, base=base.spec) for d in dirs]
            return score_choices(base, items, adapters, batch_size=n, shared_context=False)

        def one_at_a_time(shared: bool):
            out = []
            for d, it in zip(dirs, items):
                ad = LoRAAdapter.load(d, base=base.spec)
                out.extend(score_choices(base, [it], [ad], batch_size=1, shared_context=shared))
            return out

        def peft_switching():
            # PeftModel injects LoRA layers into base.model in place, so the adapter-free scoring path
            # (adapters=None) runs through PEFT's layers; the adapters are deleted again after each one
            out = []
            for i, (d, it) in enumerate(zip(dirs, items)):
                name = f"a{i}"
                peft_model.load_adapter(d, adapter_name=name)
                peft_model.set_adapter(name)
                out.extend(score_choices(base, [it], None, batch_size=1, shared_context=False))
                peft_model.set_adapter("warm")
                peft_model.delete_adapter(name)
            return out

        t_batched, s_batched = timed(batched)
        t_full, s_full = timed(full)
        t_one_shared, _ = timed(lambda: one_at_a_time(True))
        t_one, s_one = timed(lambda: one_at_a_time(False))

        icl = [encode_mc(base.tokenizer, format_prompt(e, base.tokenizer, "icl", task=task), e.choices) for e in exs]
        prefix = scoring.common_prefix([it.context for it in icl])
        min_prefix = scoring.MIN_SHARED_PREFIX
        t_prefix, s_prefix = timed(lambda: score_choices(base, icl, None, batch_size=n))
        scoring.MIN_SHARED_PREFIX = 10 ** 9  # never share the prompt prefix
        t_noprefix, s_noprefix = timed(lambda: score_choices(base, icl, None, batch_size=n))
        scoring.MIN_SHARED_PREFIX = min_prefix
        diff_prefix = max(abs(a - b) for x, y in zip(s_prefix, s_noprefix) for a, b in zip(x, y))
        icl_ctx = sum(len(it.context) for it in icl) / n

        from peft import PeftModel

        peft_model = PeftModel.from_pretrained(base.model, dirs[0], adapter_name="warm")
        t_peft, s_peft = timed(peft_switching)
    diff = max(abs(a - b) for x, y in zip(s_batched, s_one) for a, b in zip(x, y))
    diff_full = max(abs(a - b) for x, y in zip(s_batched, s_full) for a, b in zip(x, y))
    diff_peft = max(abs(a - b) for x, y in zip(s_batched, s_peft) for a, b in zip(x, y))
    choices = sum(len(it.choices) for it in items)
    ctx = sum(len(it.context) for it in items) / n
    rows = [
        {"method": f"batched, {n} adapters, shared context", "seconds": round(t_batched, 3),
         "examples/s": round(n / t_batched, 2), "speed-up": f"{t_one / t_batched:.1f}x"},
        {"method": f"batched, {n} adapters, full sequences", "seconds": round(t_full, 3),
         "examples/s": round(n / t_full, 2), "speed-up": f"{t_one / t_full:.1f}x"},
        {"method": "one adapter at a time (load + score), shared context", "seconds": round(t_one_shared, 3),
         "examples/s": round(n / t_one_shared, 2), "speed-up": f"{t_one / t_one_shared:.1f}x"},
        {"method": "one adapter at a time (load + score)", "seconds": round(t_one, 3),
         "examples/s": round(n / t_one, 2), "speed-up": "1.0x"},
        {"method": "PEFT load_adapter + set_adapter, one at a time", "seconds": round(t_peft, 3),
         "examples/s": round(n / t_peft, 2), "speed-up": f"{t_one / t_peft:.1f}x"},
    ]
    print(f"ARC-Easy, {n} examples ({choices} choices, mean context {ctx:.0f} tokens), {torch.get_num_threads()} "
          f"threads, median of {args.repeat}")
    print_table(rows, ["method", "seconds", "examples/s", "speed-up"])
    print(f"\nbatched vs one-at-a-time: {t_one / t_batched:.1f}x (target >= 4x), vs PEFT adapter switching "
          f"{t_peft / t_batched:.1f}x; batching alone (both with shared context): {t_one_shared / t_batched:.1f}x; "
          f"shared-context speed-up over full sequences: {t_full / t_batched:.2f}x; max |log-lik difference|: "
          f"{diff:.2e} (vs one-at-a-time), {diff_full:.2e} (vs full sequences), {diff_peft:.2e} (vs PEFT)")
    print(f"3-shot ICL prompts (mean context {icl_ctx:.0f} tokens, shared prefix {prefix}): prefix once "
          f"{t_prefix:.2f} s, every context in full {t_noprefix:.2f} s: {t_noprefix / t_prefix:.2f}x "
          f"(max |difference| {diff_prefix:.2e})")
    write_json("eval", {"base": base.spec.name, "examples": n, "choices": choices, "mean_context_tokens": ctx,
                        "repeat": args.repeat, "rows": rows, "speedup_batched_vs_one": t_one / t_batched,
                        "speedup_batched_vs_peft": t_peft / t_batched,
                        "speedup_batching_only": t_one_shared / t_batched, "max_abs_diff_vs_peft": diff_peft,
                        "speedup_shared_context": t_full / t_batched, "max_abs_diff_vs_one": diff,
                        "max_abs_diff_vs_full": diff_full,
                        "icl": {"mean_context_tokens": icl_ctx, "shared_prefix_tokens": prefix,
                                "seconds_prefix_once": t_prefix, "seconds_no_prefix": t_noprefix,
                                "speedup_prompt_prefix": t_noprefix / t_prefix, "max_abs_diff": diff_prefix}},
               out=args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
