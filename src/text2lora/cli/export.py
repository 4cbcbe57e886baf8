"""``t2l export``: convert an existing PEFT adapter directory to another format (llama.cpp GGUF)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ._args import add_format_args, check_out


def cmd_export(args: argparse.Namespace) -> int:
    from ..adapter import LoRAAdapter
    from ..formats import save_adapter

    out = Path(args.out)
    check_out(out, args.force)  # with --force: a GGUF adapter text2lora wrote, nothing else
    adapter = LoRAAdapter.load(args.adapter)
    path = save_adapter(adapter, out, args.format, base_gguf=args.base_gguf, force=args.force)
    if not args.quiet:
        from ..formats.gguf import find_base_gguf

        base = args.base_gguf or find_base_gguf(adapter.base)
        print(path)
        print(f"wrote a llama.cpp LoRA adapter (rank {adapter.r}, modules {', '.join(adapter.A)}); use it with "
              f"its base: llama-cli -m {base} --lora {path} (llama.cpp's own program, not installed by text2lora), "
              f"or from Python with llama-cpp-python: Llama(model_path=\"{base}\", lora_path=\"{path}\")",
              file=sys.stderr)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="convert a PEFT adapter directory to a llama.cpp/Ollama GGUF adapter",
                       description="Convert a PEFT LoRA adapter directory (from `t2l generate` or elsewhere) to "
                                   "the LoRA adapter GGUF file that llama.cpp (--lora), llama-cpp-python "
                                   "(lora_path=) and Ollama (ADAPTER) load on top of the base model's GGUF.")
    p.add_argument("adapter", metavar="ADAPTER_DIR", help="PEFT adapter directory")
    p.add_argument("--out", required=True, help="output .gguf file")
    p.add_argument("--force", action="store_true",
                   help="overwrite --out if it is a GGUF adapter text2lora wrote (any other file is refused)")
    p.add_argument("--quiet", action="store_true", help="print nothing on success")
    add_format_args(p, formats=("gguf",))
    p.set_defaults(func=cmd_export)
