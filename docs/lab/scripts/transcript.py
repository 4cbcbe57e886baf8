"""Greedy answers of the base model to one prompt, without and with a generated adapter (the
transcripts of docs/lab/LOG.md sections 9 to 13).

    python docs/lab/scripts/transcript.py "DESCRIPTION" "PROMPT" [--model GENERATOR_DIR] [--max-new-tokens N]
"""

from __future__ import annotations

import argparse
import sys

import torch

from text2lora import TextToLoRA, apply_adapters, load_base
from text2lora.errors import T2LError


def answer(base, prompt: str, max_new_tokens: int) -> str:
    ids = base.tokenizer(base.chat_prompt(prompt), return_tensors="pt", add_special_tokens=False).input_ids
    with torch.no_grad():
        out = base.model.generate(ids, max_new_tokens=max_new_tokens, do_sample=False,
                                  pad_token_id=base.tokenizer.pad_token_id)
    return base.tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True).strip()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("description")
    ap.add_argument("prompt")
    ap.add_argument("--model", default=None, help="generator directory (default: the shipped one)")
    ap.add_argument("--max-new-tokens", type=int, default=200)
    args = ap.parse_args(argv)
    try:
        base = load_base()
        adapter = TextToLoRA.from_pretrained(args.model, base=base.spec).generate(args.description)
    except T2LError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"## without an adapter\n\n{answer(base, args.prompt, args.max_new_tokens)}\n")
    with apply_adapters(base.model, [adapter], base.spec):
        print(f"## with the adapter for: {args.description}\n\n{answer(base, args.prompt, args.max_new_tokens)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
