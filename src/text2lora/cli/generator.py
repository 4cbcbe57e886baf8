"""Core subcommands: generate, info, init, chat."""

from __future__ import annotations

import argparse
import re
import sys
import threading
import time
from functools import partial
from pathlib import Path
from typing import Iterable, Iterator, TextIO

from .._io import check_replaceable, lone_surrogate, read_json, read_text
from ..errors import ConfigError


def _add_model_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", metavar="CKPT", default=None,
                   help="generator checkpoint directory or Hugging Face Hub repo id org/name (default: the shipped "
                        "generator)")


FORCE_HELP = ("replace --out if it exists and holds only what text2lora wrote there (an earlier output); a "
              "directory with any other file, or a file text2lora did not write, is refused and left as it is")


def _add_output_args(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument("--out", required=True, help=f"output {what} directory")
    p.add_argument("--force", action="store_true", help=FORCE_HELP)
    p.add_argument("--quiet", action="store_true", help="print nothing on success")


def add_format_args(p: argparse.ArgumentParser, formats: tuple[str, ...] = ("peft", "gguf")) -> None:
    """--format / --base-gguf, shared by generate and export (the first format is the default)."""
    what = {"peft": "peft: a PEFT adapter directory at --out",
            "gguf": "gguf: one llama.cpp/Ollama LoRA adapter file at --out"}
    if "peft" in formats:
        what["gguf"] += (" instead of the PEFT directory (to keep both, write the directory, then "
                         "`t2l export DIR --out FILE.gguf`)")
    p.add_argument("--format", choices=list(formats), default=formats[0],
                   help="; ".join(what[f] for f in formats) + f" (default: {formats[0]})")
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
        descs += [ln.strip() for ln in read_text(path, "--file").splitlines() if ln.strip()]
    if not descs:
        raise ConfigError("no description given; pass one or more descriptions, e.g. "
                          "t2l generate \"Answer math word problems step by step.\" --out my_lora")
    for i, d in enumerate(descs):
        if not d.strip():
            raise ConfigError(f"description {i + 1} is empty; describe the task in words")
    return descs


def cmd_generate(args: argparse.Namespace) -> int:
    from .._io import atomic_dir
    from ..formats import save_adapter
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
        save_adapter(adapters[0], out, force=args.force, **fmt)
        paths = [out]
    else:
        import json

        with atomic_dir(out, force=args.force) as tmp:
            paths, index = [], []
            for i, (d, a) in enumerate(zip(descs, adapters)):
                name = f"{i:03d}-{_slug(d)}" + (".gguf" if args.format == "gguf" else "")
                save_adapter(a, tmp / name, **fmt)
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


def _shipped_hyper() -> dict:
    """The shipped generator's hypernetwork settings (its config.json, read without loading it)."""
    from ..generator import DEFAULT_GENERATOR_DIR

    return read_json(DEFAULT_GENERATOR_DIR / "config.json")["hyper"]


def cmd_info(args: argparse.Namespace) -> int:
    from ..generator import DEFAULT_GENERATOR_DIR, TextToLoRA
    from ..hypernet import HyperConfig

    default_in = HyperConfig().head_in
    head_in = args.head_in or default_in
    if args.base:
        from ..base import load_base
        from ..encoders import EncoderSpec

        base = load_base(args.base, target_modules=_modules(args.target_modules))
        sizes = [args.head_size] if args.head_size else ["L", "M", "S"]
        rows = []
        for h in sizes:
            gen = TextToLoRA(base.spec, EncoderSpec(), HyperConfig(head_size=h, rank=args.rank, head_in=head_in))
            rows.append((h, gen.param_counts()))
        print(f"base: {base.spec.name} ({base.spec.model_type}, {base.spec.num_layers} layers)")
        for m in base.spec.modules:
            print(f"  {m.name}: {m.in_features} -> {m.out_features}")
        shipped = _shipped_hyper()
        print(f"fresh generators (t2l init) whose output heads read a {head_in}-wide input (--head-in {head_in}); "
              f"the output heads' size grows with it. The shipped generator is {shipped['head_size']} with head_in "
              f"{shipped['head_in']} (t2l info shows it).")
        parts = list(rows[0][1])
        print(f"{'part':<26}" + "".join(f"{f'head {h}, in {head_in}':>18}" for h, _ in rows))
        for part in parts:
            print(f"{part:<26}" + "".join(f"{c[part]:>18,}" for _, c in rows))
        return 0
    gen = TextToLoRA.from_pretrained(args.checkpoint)
    spec, h = gen.base_spec, gen.hyper_config
    print(f"checkpoint:  {gen.source}")
    print(f"base:        {spec.name} ({spec.model_type}, {spec.num_layers} layers)")
    for m in spec.modules:
        print(f"  {m.name}: {m.in_features} -> {m.out_features}")
    print(f"encoder:     {gen.encoder_spec.kind} {gen.encoder_spec.name} ({gen.encoder_spec.dim}-d)")
    print(f"head size:   {h.head_size}, input width {h.head_in}   rank: {h.rank}   alpha: {h.alpha}   "
          f"scaling: {h.alpha / h.rank:g}")
    print(f"latent:      d={h.latent_dim} head_in={h.head_in} zscore={h.zscore}")
    if h.head_in != default_in:
        why = (" (chosen for the shipped generator: batched generation stays fast on a CPU)"
               if Path(gen.source or "").resolve() == DEFAULT_GENERATOR_DIR.resolve() else "")
        ratio = (f"{default_in / h.head_in:g}x fewer" if h.head_in < default_in
                 else f"{h.head_in / default_in:g}x more")
        print(f"note:        head_in {h.head_in}, not the {default_in} of a fresh `t2l init`: {ratio} output-head "
              f"weights than a fresh {h.head_size} head{why}; `t2l info --base {spec.name} --head-in {h.head_in}` "
              "counts heads of that width")
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
        from ..serve.llama_cpp import require_llama_cpp

        require_llama_cpp()
    elif args.base_gguf:
        raise ConfigError("--base-gguf is the llama.cpp engine's base file; add --engine llama.cpp or drop it")


def waiting(pieces: Iterable[str], out: TextIO | None = None, every: float = 0.25) -> Iterator[str]:
    """Yield ``pieces``; until the first one comes, show on ``out`` (default: stderr), when it is a terminal,
    that the model is working and for how long, then erase that line. Elsewhere (a log, a pipe) print nothing."""
    out = sys.stderr if out is None else out
    if not out.isatty():
        yield from pieces
        return
    first = threading.Event()
    shown = threading.Event()

    def show() -> None:
        t0 = time.monotonic()
        frames = "|/-\\"
        i = 0
        while not first.wait(every):
            out.write(f"\r{frames[i % 4]} waiting for the model... {time.monotonic() - t0:.0f} s")
            out.flush()
            shown.set()
            i += 1

    thread = threading.Thread(target=show, daemon=True)
    thread.start()

    def stop() -> None:
        if not first.is_set():
            first.set()
            thread.join()
            if shown.is_set():
                out.write("\r\033[K")  # erase the line before the reply goes on the same terminal
                out.flush()

    try:
        for piece in pieces:
            stop()
            yield piece
    finally:
        stop()


def cmd_chat(args: argparse.Namespace) -> int:
    from ..base import load_base
    from ..serve.chat import stream_chat
    from ..generator import TextToLoRA

    check_engine_args(args)  # before minutes of loading
    gen = TextToLoRA.from_pretrained(args.model)
    base = load_base(args.base or gen.base_spec.name, target_modules=gen.base_spec.module_names)
    gen = TextToLoRA.from_pretrained(args.model, base=base)
    if args.engine == "llama.cpp":
        from ..serve.llama_cpp import LlamaCppChat

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
        pieces = stream(history, adapter, max_new_tokens=args.max_new_tokens, temperature=args.temperature)
        for piece in waiting(pieces):
            parts.append(piece)
            print(piece, end="", flush=True)
        print()
        history.append({"role": "assistant", "content": "".join(parts)})

    if args.message:
        reply(args.message)
        return 0
    # stdout carries the replies only; the prompt and the help go to the terminal (stderr), and only when a
    # person types (stdin a terminal), so `t2l chat < questions.txt > answers.txt` gives the answers alone
    interactive = sys.stdin.isatty()
    if interactive:
        print("Type a message; /describe TEXT sets a new task description; /reset clears history; /quit exits.",
              file=sys.stderr)
    while True:
        try:
            if interactive:
                print("> ", end="", file=sys.stderr, flush=True)
            line = input().strip()
        except EOFError:
            return 0
        except UnicodeDecodeError:
            line = "\udcff"  # refused just below, as a line the locale decoded with surrogates is
        if lone_surrogate(line):
            print("t2l: that line is not UTF-8 text; type it again (or save the input as UTF-8)", file=sys.stderr)
            continue
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
                   help="generate even for a description the encoder cannot read; refused otherwise are those "
                        "with mostly unknown tokens (emoji) and, for an English-only encoder such as the default, "
                        "those mostly in another script, or with most of their words (3 or more, of 3+ letters) "
                        "outside the encoder's English vocabulary, as French, Spanish or German descriptions are")
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
    p.add_argument("--head-in", type=int, default=None,
                   help="with --base: width of the output heads' input (default: t2l init's; `t2l info` shows the "
                        "shipped generator's)")
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
