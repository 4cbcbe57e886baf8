"""Benchmark training on the default base (SmolLM2-135M-Instruct) and encoder (all-MiniLM-L6-v2).

Measures:
  - one SFT step of the generator with 8 *different* generated adapters in the batch (hypernetwork
    forward, per-row injection, base forward + backward, response-only loss with label smoothing,
    L2 on generated weights, NEFTune, AdamW step), versus one step of a single shared PEFT LoRA
    (rank 8, q_proj/v_proj) on the same tokens: the ratio is the cost of per-sample adapters
    (target <= 1.15x; the LoRA FLOPs are tiny, so ~1.0x is the floor);
  - reconstruction steps per second on a library of 8 adapters of the default base.

Usage: python bench/train.py [--repeat 3] [--seq 128] [--recon-steps 20]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import DESCRIPTIONS, add_out_arg, print_table, write_json  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=3, help="timed steps per arm (median)")
    ap.add_argument("--warmup", type=int, default=1, help="untimed steps per arm")
    ap.add_argument("--seq", type=int, default=128, help="tokens per row (8 rows)")
    ap.add_argument("--recon-steps", type=int, default=20, help="reconstruction steps timed")
    add_out_arg(ap, "train")
    args = ap.parse_args()

    import torch
    from peft import LoraConfig, get_peft_model

    from text2lora import TextToLoRA, apply_adapters, load_base
    from text2lora.adapter import LoRAAdapter
    from text2lora.train import load_config
    from text2lora.train.batches import TextBatch, lm_response_loss, neftune
    from text2lora.train.recon import LibraryEntry, ReconJob
    from text2lora.train.sft import adapter_l2

    base = load_base()
    dev = base.device
    n = len(DESCRIPTIONS)
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(10, base.tokenizer.vocab_size - 10, (n, args.seq), generator=g).to(dev)
    mask = torch.ones_like(ids)
    labels = ids.clone()
    labels[:, : args.seq // 2] = -100  # the first half plays the prompt: response-only loss
    tb = TextBatch(ids, mask, labels)

    # --- T2L SFT step: 8 different adapters, one per row
    gen = TextToLoRA.init(base, seed=0).to(dev)
    with torch.no_grad():  # make the 8 adapters differ (a fresh generator's heads are zero)
        for head in gen.hypernet.heads.values():
            head.weight.normal_(0, 1e-3, generator=torch.Generator().manual_seed(1))
    emb = gen.embed(DESCRIPTIONS)
    opt = torch.optim.AdamW(gen.hypernet.parameters(), lr=2.5e-5, weight_decay=1e-2)
    gen.hypernet.train()

    def t2l_step():
        batch = gen(emb)
        with apply_adapters(base.model, batch, base.spec), neftune(base.model, 5.0, mask):
            loss = lm_response_loss(base.model, tb, 0.1) + 1e-3 * adapter_l2(batch)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(gen.hypernet.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if dev.type == "cuda":
            torch.cuda.synchronize()

    distinct = gen(emb).adapters()
    assert not torch.equal(distinct[0].A["q_proj"], distinct[1].A["q_proj"]), "adapters must differ per row"

    # --- one shared PEFT LoRA on the same tokens, on its own copy of the base (so the two arms can be
    # interleaved: a busy machine slows both alike)
    torch.manual_seed(0)
    peft_model = get_peft_model(copy.deepcopy(base.model), LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0,
                                                               target_modules=["q_proj", "v_proj"]))
    popt = torch.optim.AdamW([p for p in peft_model.parameters() if p.requires_grad], lr=8e-5, weight_decay=1e-2)

    def peft_step():
        loss = lm_response_loss(peft_model, tb, 0.1)
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for p in peft_model.parameters() if p.requires_grad], 1.0)
        popt.step()
        popt.zero_grad(set_to_none=True)
        if dev.type == "cuda":
            torch.cuda.synchronize()

    def timed(fn):
        t = time.perf_counter()
        fn()
        return time.perf_counter() - t

    for _ in range(args.warmup):
        t2l_step()
        peft_step()
    t2l_times, peft_times = [], []
    for i in range(args.repeat):  # alternate which arm goes first
        if i % 2 == 0:
            t2l_times.append(timed(t2l_step))
            peft_times.append(timed(peft_step))
        else:
            peft_times.append(timed(peft_step))
            t2l_times.append(timed(t2l_step))
    t_t2l, t_peft = statistics.median(t2l_times), statistics.median(peft_times)
    del peft_model, popt

    # --- reconstruction steps/s on a library of 8 adapters of the default base
    entries = []
    for i in range(8):
        gi = torch.Generator().manual_seed(100 + i)
        A = {m.name: torch.randn(base.spec.num_layers, 8, m.in_features, generator=gi) * 0.02 for m in base.spec.modules}
        B = {m.name: torch.randn(base.spec.num_layers, m.out_features, 8, generator=gi) * 0.02 for m in base.spec.modules}
        entries.append(LibraryEntry(f"task{i}", Path(f"task{i}"), LoRAAdapter(base.spec, A, B), [DESCRIPTIONS[i]]))
    rgen = TextToLoRA.init(base.spec, encoder=gen.encoder, seed=0, zscore=True).to(dev)
    rcfg = load_config("recon", library="(in memory)", batch_size=8, lr=1e-3)
    job = ReconJob(rcfg, rgen, entries, dev)
    ropt = torch.optim.AdamW(rgen.hypernet.parameters(), lr=1e-3)
    rgen.hypernet.train()

    def recon_step():
        loss, _ = job.loss(0)
        loss.backward()
        ropt.step()
        ropt.zero_grad(set_to_none=True)
        if dev.type == "cuda":
            torch.cuda.synchronize()

    recon_step()
    t0 = time.perf_counter()
    for _ in range(args.recon_steps):
        recon_step()
    recon_sps = args.recon_steps / (time.perf_counter() - t0)

    ratio = t_t2l / t_peft
    rows = [
        {"measure": f"SFT step, 8 different generated adapters, 8x{args.seq} tokens", "value": f"{t_t2l:.3f} s"},
        {"measure": "step of one shared PEFT LoRA, same tokens", "value": f"{t_peft:.3f} s"},
        {"measure": "ratio (target <= 1.15x)", "value": f"{ratio:.3f}x"},
        {"measure": "reconstruction steps/s (8 adapters per batch, M head)", "value": f"{recon_sps:.1f}"},
    ]
    print(f"base {base.spec.name} on {dev} ({base.dtype}), median of {args.repeat} interleaved steps per arm after "
          f"{args.warmup} warm-up\n")
    print_table(rows, ["measure", "value"])
    write_json("train", {"base": base.spec.name, "device": str(dev), "dtype": str(base.dtype), "seq": args.seq,
                         "rows": n, "repeat": args.repeat, "sft_step_s": t_t2l, "peft_step_s": t_peft,
                         "sft_step_times": t2l_times, "peft_step_times": peft_times,
                         "ratio": ratio, "target_ratio": 1.15, "recon_steps_per_s": recon_sps},
               out=args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
