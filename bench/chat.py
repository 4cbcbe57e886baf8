"""Chat speed on the CPU: PyTorch float32 vs llama.cpp, same prompt, same generated adapter.

PyTorch runs the dequantized embedded base with the adapter injected (what `t2l chat` does);
llama.cpp (llama-cpp-python) runs the embedded Q4_1 GGUF with the same adapter written as a GGUF
file (`formats.gguf.save_gguf`). Both decode greedily exactly --tokens new tokens (no early stop), one
timed run each after one warm-up run; tokens/s counts new tokens over the whole call (prompt
processing included).

Usage: python bench/chat.py [--tokens 128] [--threads 2]
Needs llama-cpp-python (T2L_LLAMA_CPP=1 bash scripts/setup.sh); without it only PyTorch is measured.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import add_out_arg, print_table, write_json  # noqa: E402

DESCRIPTION = "Answer grade-school math word problems step by step."
PROMPT = "Tom has 3 boxes with 12 apples each. He gives away 7 apples. How many apples does he have left?"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokens", type=int, default=128, help="new tokens per run")
    ap.add_argument("--threads", type=int, default=2, help="CPU threads for both engines")
    add_out_arg(ap, "chat")
    args = ap.parse_args()

    import torch

    from text2lora import TextToLoRA, apply_adapters, load_base
    from text2lora.embedded import embedded_gguf
    from text2lora.formats.gguf import save_gguf

    torch.set_num_threads(args.threads)
    gen = TextToLoRA.from_pretrained()
    base = load_base(gen.base_spec.name, target_modules=gen.base_spec.module_names, device="cpu")
    adapter = gen.generate(DESCRIPTION)
    ids = base.tokenizer(base.chat_prompt(PROMPT), add_special_tokens=False)["input_ids"]
    rows = []

    def torch_run() -> list[int]:
        with torch.inference_mode(), apply_adapters(base.model, adapter, base.spec):
            out = base.model.generate(torch.tensor([ids]), max_new_tokens=args.tokens, min_new_tokens=args.tokens,
                                      do_sample=False, pad_token_id=base.tokenizer.pad_token_id)
        return out[0, len(ids):].tolist()

    torch_run()
    t = time.perf_counter()
    torch_tokens = torch_run()
    dt = time.perf_counter() - t
    rows.append({"engine": "PyTorch float32 (dequantized)", "new_tokens": len(torch_tokens),
                 "seconds": round(dt, 2), "tokens_per_s": round(len(torch_tokens) / dt, 1)})

    if importlib.util.find_spec("llama_cpp") is None:
        print("llama-cpp-python is not installed: llama.cpp row skipped (T2L_LLAMA_CPP=1 bash scripts/setup.sh)",
              file=sys.stderr)
    else:
        from text2lora.serve.llama_cpp import new_llama  # on a CPU with AMX, llama.cpp's AMX kernels crash

        with tempfile.TemporaryDirectory() as tmp:
            lora = save_gguf(adapter, Path(tmp) / "adapter.gguf")
            llm = new_llama(embedded_gguf(base.spec.name), lora_path=str(lora), n_ctx=1024, n_threads=args.threads,
                            n_threads_batch=args.threads)

            def cpp_run() -> list[int]:
                llm.reset()
                out = []
                for tok in llm.generate(ids, top_k=1, temp=0.0, reset=True):
                    out.append(int(tok))
                    if len(out) == args.tokens:
                        break
                return out

            cpp_run()
            t = time.perf_counter()
            cpp_tokens = cpp_run()
            dt = time.perf_counter() - t
        same = next((i for i, (a, b) in enumerate(zip(torch_tokens, cpp_tokens)) if a != b), len(cpp_tokens))
        rows.append({"engine": "llama.cpp Q4_1 GGUF + GGUF adapter", "new_tokens": len(cpp_tokens),
                     "seconds": round(dt, 2), "tokens_per_s": round(len(cpp_tokens) / dt, 1),
                     "same_greedy_prefix": same})
    print_table(rows, ["engine", "new_tokens", "seconds", "tokens_per_s", "same_greedy_prefix"])
    write_json("chat", {"rows": rows, "prompt": PROMPT, "description": DESCRIPTION, "threads": args.threads},
               out=args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
