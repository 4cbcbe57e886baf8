"""Core subcommands: generate, info, init, chat."""

from __future__ import annotations

import argparse
import re
import sys
import time
from functools import partial
from pathlib import Path

from .._io import check_replaceable
from ..errors import ConfigError


def _add_model_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", metavar="CKPT", default=None,
                   help="generator checkpoint directory or Hugging Face Hub repo id org/name (default: the shipped "
                        "generator)")


def _add_output_args(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument("--out", required=True, help=f"output {what} directory")
    p.add_argument("--force", action="store_true", help="overwrite --out if it exists")
    p.add_argument("--quiet", action="store_true", help="print nothing on success")


def add_format_args(p: argparse.ArgumentParser, formats: tuple[str, ...] = ("peft", "gguf")) -> None:
    """--format / --base-gguf, shared by generate and export (the first format is the default)."""
    p.add_argument("--format", choices=list(formats), default=formats[0],
                   help="peft: a PEFT adapter directory; gguf: one llama.cpp/Ollama adapter file "
                        f"(default: {formats[0]})")
    p.add_argument("--base-gguf", metavar="FILE", default=None,
                   help="with --format gguf: the base model's GGUF file (default: the embedded base's, or the "
                        ".gguf the base was loaded from)")


def _slug(text: str, n: int = 40) -> str:
    s = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return s[:n].rstrip("-") or "adapter"


def _read_descriptions(args: argparse.Namespace) -> list[str]:
    descs = list(args.descriptions or [])
    if args.file:
        path = Path(args.file)
        if not path.is_file():
            raise ConfigError(f"--file {path} does not exist")
        descs += [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
    if not descs:
        raise ConfigError("no description given; pass one or more descriptions, e.g. "
                          "t2l generate \"Answer math word problems step by step.\" --out my_lora")
    for i, d in enumerate(descs):
        if not d.strip():
            raise ConfigError(f"description {i + 1} is empty; describe the task in words")
    return descs


def cmd_generate(args: argparse.Namespace) -> int:
    from .._io import atomic_dir
    from ..generator import TextToLoRA

    descs = _read_descriptions(args)
    out = Path(args.out)
    if out.exists() and not args.force:
        raise ConfigError(f"output path {out} already exists; choose another --out or pass --force")
    if args.force:
        check_replaceable(out)
    t0 = time.perf_counter()
    gen = TextToLoRA.from_pretrained(args.model)
    t1 = time.perf_counter()
    if not args.allow_unknown:
        from ..encoders import unreadable_reasons

        why = next((w for w in unreadable_reasons(gen.encoder, descs) if w), None)
        if why:
            raise ConfigError(f"{why}; describe the task in English words, or pass --allow-unknown to generate "
                              "it anyway")
    adapters = gen.generate(descs)
    t2 = time.perf_counter()
    fmt = {"format": args.format, "base_gguf": args.base_gguf}
    if len(adapters) == 1:
        adapters[0].save(out, force=args.force, **fmt)
        paths = [out]
    else:
        import json

        with atomic_dir(out, force=args.force) as tmp:
            paths, index = [], []
            for i, (d, a) in enumerate(zip(descs, adapters)):
                name = f"{i:03d}-{_slug(d)}" + (".gguf" if args.format == "gguf" else "")
                a.save(tmp / name, **fmt)
                paths.append(out / name)
                index.append({"dir": name, "description": d})
            (tmp / "index.json").write_text(json.dumps(index, indent=2) + "\n")
    t3 = time.perf_counter()
    if not args.quiet:
        for p in paths:
            print(p)
        print(f"generated {len(adapters)} adapter(s) in {1e3 * (t2 - t1):.1f} ms "
              f"(load {t1 - t0:.2f} s, save {1e3 * (t3 - t2):.0f} ms)", file=sys.stderr)
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    from ..generator import TextToLoRA

    if args.base:
        from ..base import load_base
        from ..encoders import EncoderSpec
        from ..hypernet import HyperConfig

        base = load_base(args.base, target_modules=_modules(args.target_modules))
        sizes = [args.head_size] if args.head_size else ["L", "M", "S"]
        rows = []
        for h in sizes:
            gen = TextToLoRA(base.spec, EncoderSpec(), HyperConfig(head_size=h, rank=args.rank,
                                                                   head_in=args.head_in))
            rows.append((h, gen.param_counts()))
        print(f"base: {base.spec.name} ({base.spec.model_type}, {base.spec.num_layers} layers)")
        for m in base.spec.modules:
            print(f"  {m.name}: {m.in_features} -> {m.out_features}")
        parts = list(rows[0][1])
        print(f"{'part':<26}" + "".join(f"{'head ' + h:>14}" for h, _ in rows))
        for part in parts:
            print(f"{part:<26}" + "".join(f"{c[part]:>14,}" for _, c in rows))
        return 0
    gen = TextToLoRA.from_pretrained(args.checkpoint)
    spec, h = gen.base_spec, gen.hyper_config
    print(f"checkpoint:  {gen.source}")
    print(f"base:        {spec.name} ({spec.model_type}, {spec.num_layers} layers)")
    for m in spec.modules:
        print(f"  {m.name}: {m.in_features} -> {m.out_features}")
    print(f"encoder:     {gen.encoder_spec.kind} {gen.encoder_spec.name} ({gen.encoder_spec.dim}-d)")
    print(f"head size:   {h.head_size}   rank: {h.rank}   alpha: {h.alpha}   scaling: {h.alpha / h.rank:g}")
    print(f"latent:      d={h.latent_dim} head_in={h.head_in} zscore={h.zscore}")
    print("parameters:")
    for part, n in gen.param_counts().items():
        print(f"  {part:<26}{n:>12,}")
    return 0


def _modules(text: str) -> list[str]:
    mods = [m.strip() for m in text.split(",") if m.strip()]
    if not mods:
        raise ConfigError("--target-modules is empty; pass names like q_proj,v_proj")
    return mods


def cmd_init(args: argparse.Namespace) -> int:
    from ..base import load_base
    from ..generator import TextToLoRA

    out = Path(args.out)
    if out.exists() and not args.force:
        raise ConfigError(f"output path {out} already exists; choose another --out or pass --force")
    if args.force:
        check_replaceable(out)
    base = load_base(args.base, target_modules=_modules(args.target_modules), device="cpu")
    if args.encoder == "base-lm":
        from ..encoders import BaseLMEncoder

        encoder = BaseLMEncoder(base)
    else:
        encoder = args.encoder
    gen = TextToLoRA.init(base, encoder, seed=args.seed, head_size=args.head_size, rank=args.rank,
                          alpha=args.alpha, latent_dim=args.latent_dim, head_in=args.head_in)
    gen.save_pretrained(out, force=args.force)
    if not args.quiet:
        total = gen.param_counts()["total"]
        print(f"wrote fresh generator ({args.head_size}, {total:,} parameters) for {base.spec.name} to {out}")
    return 0


def add_engine_args(p: argparse.ArgumentParser, torch_help: str) -> None:
    """``--engine torch|llama.cpp`` and ``--base-gguf`` (``t2l chat`` and ``t2l ui``)."""
    p.add_argument("--engine", choices=["torch", "llama.cpp"], default="torch",
                   help=f"torch: {torch_help} (default); llama.cpp: the base's GGUF file with the adapter as a GGUF "
                        "LoRA, through llama-cpp-python (faster on a CPU)")
    p.add_argument("--base-gguf", help="--engine llama.cpp: the base's GGUF file (default: the embedded base's, or "
                                       "the .gguf file --base names)")


def check_engine_args(args: argparse.Namespace) -> None:
    """Refuse a bad engine choice in one line before anything loads."""
    if args.engine == "llama.cpp":
        from ..chat_llama_cpp import require_llama_cpp

        require_llama_cpp()
    elif args.base_gguf:
        raise ConfigError("--base-gguf is the llama.cpp engine's base file; add --engine llama.cpp or drop it")


def cmd_chat(args: argparse.Namespace) -> int:
    from ..base import load_base
    from ..chat import stream_chat
    from ..generator import TextToLoRA

    check_engine_args(args)  # before minutes of loading
    gen = TextToLoRA.from_pretrained(args.model)
    base = load_base(args.base or gen.base_spec.name, target_modules=gen.base_spec.module_names)
    gen = TextToLoRA.from_pretrained(args.model, base=base)
    if args.engine == "llama.cpp":
        from ..chat_llama_cpp import LlamaCppChat

        stream = LlamaCppChat(base, args.base_gguf).stream
    else:
        stream = partial(stream_chat, base)
    adapter = None
    if args.description:
        adapter = gen.generate(args.description)
        print(f"[adapter generated for: {args.description}]", file=sys.stderr)
    history: list[dict[str, str]] = []

    def reply(msg: str) -> None:
        history.append({"role": "user", "content": msg})
        parts = []
        for piece in stream(history, adapter, max_new_tokens=args.max_new_tokens, temperature=args.temperature):
            parts.append(piece)
            print(piece, end="", flush=True)
        print()
        history.append({"role": "assistant", "content": "".join(parts)})

    if args.message:
        reply(args.message)
        return 0
    print("Type a message; /describe TEXT sets a new task description; /reset clears history; /quit exits.",
          file=sys.stderr)
    while True:
        try:
            line = input("> ").strip()
        except EOFError:
            return 0
        if not line:
            continue
        if line in ("/quit", "/exit"):
            return 0
        if line == "/reset":
            history.clear()
            continue
        if line.startswith("/describe"):
            desc = line[len("/describe"):].strip()
            if not desc:
                print("usage: /describe TEXT", file=sys.stderr)
                continue
            adapter = gen.generate(desc)
            history.clear()
            print(f"[adapter generated for: {desc}]", file=sys.stderr)
            continue
        reply(line)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("generate", help="generate LoRA adapters from task descriptions",
                       description="Generate one PEFT LoRA adapter per description in one batched pass. "
                                   "With several descriptions, --out holds one sub-directory each.")
    p.add_argument("descriptions", nargs="*", metavar="DESCRIPTION", help="task description(s)")
    _add_model_arg(p)
    p.add_argument("--file", help="read descriptions from a text file, one per line")
    p.add_argument("--allow-unknown", action="store_true",
                   help="generate even for a description the encoder cannot read (mostly unknown tokens such as "
                        "emoji, or not English for the English-only default encoder); it is refused otherwise")
    _add_output_args(p, "adapter")
    add_format_args(p)
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser("info", help="show a generator's base, encoder, head and parameter counts",
                       description="Describe a generator checkpoint (default: the shipped one), or with --base "
                                   "the parameter counts of fresh L/M/S generators for a base model.")
    p.add_argument("checkpoint", nargs="?", default=None, help="generator checkpoint directory")
    p.add_argument("--base", help="show counts of fresh generators for this base model instead")
    p.add_argument("--head-size", choices=["L", "M", "S"], help="with --base: only this head size")
    p.add_argument("--rank", type=int, default=8, help="with --base: LoRA rank (default 8)")
    p.add_argument("--head-in", type=int, default=512, help="with --base: width of the heads' input")
    p.add_argument("--target-modules", default="q_proj,v_proj", help="with --base: modules to adapt")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("init", help="write a fresh (untrained) generator checkpoint",
                       description="Write a fresh generator for a base model: the starting point for training. "
                                   "Its adapters change nothing until it is trained.")
    p.add_argument("--base", default="smollm2-135m-instruct",
                   help="base model: smollm2-135m-instruct (embedded), HF id, directory or .gguf file")
    p.add_argument("--target-modules", default="q_proj,v_proj", help="comma-separated Linear module names")
    p.add_argument("--encoder", default="all-minilm-l6-v2",
                   help="description encoder: a sentence-transformers name/dir, or base-lm")
    p.add_argument("--head-size", default="M", choices=["L", "M", "S"], help="paper's head size")
    p.add_argument("--rank", type=int, default=8, help="LoRA rank")
    p.add_argument("--alpha", type=float, default=16.0, help="LoRA alpha (scaling alpha/rank)")
    p.add_argument("--latent-dim", type=int, default=128, help="trunk width d")
    p.add_argument("--head-in", type=int, default=512, help="width of the heads' input")
    p.add_argument("--seed", type=int, default=0, help="initialisation seed")
    _add_output_args(p, "checkpoint")
    p.set_defaults(func=cmd_init)

    p = sub.add_parser("chat", help="chat in the terminal with the base model under a generated adapter",
                       description="Terminal chat, streaming, with the base model plus an adapter generated "
                                   "from --description (none: the plain base model).")
    _add_model_arg(p)
    p.add_argument("--base", help="base model (default: the generator's)")
    p.add_argument("--description", help="task description to generate the adapter from")
    p.add_argument("--message", help="send one message, print the reply and exit")
    p.add_argument("--max-new-tokens", type=int, default=256, help="reply length limit")
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    add_engine_args(p, "PyTorch float32 on the dequantized base")
    p.set_defaults(func=cmd_chat)
