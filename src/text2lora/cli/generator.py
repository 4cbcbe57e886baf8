"""The generator's commands: ``t2l generate`` (adapters from descriptions), ``t2l info`` (what a generator is)
and ``t2l init`` (a fresh generator to train)."""

from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path

from .._io import read_json, read_text
from ..embedded import DEFAULT_BASE, DEFAULT_TARGET_MODULES
from ..errors import ConfigError
from ._args import (add_config_flags, add_format_args, add_model_arg, add_output_args, check_out,
                    config_default, modules_arg)


INIT_FIELDS = ("head_size", "rank", "alpha", "latent_dim", "head_in")
"""The hypernetwork settings ``t2l init`` takes as flags (defaults and help from :class:`HyperConfig`)."""


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
    check_out(out, args.force)
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

        base = load_base(args.base, target_modules=modules_arg(args.target_modules))
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


def cmd_init(args: argparse.Namespace) -> int:
    from ..base import load_base
    from ..generator import TextToLoRA

    out = Path(args.out)
    check_out(out, args.force)
    base = load_base(args.base, target_modules=modules_arg(args.target_modules), device="cpu")
    if args.encoder == "base-lm":
        from ..encoders import BaseLMEncoder

        encoder = BaseLMEncoder(base)
    else:
        encoder = args.encoder
    gen = TextToLoRA.init(base, encoder, seed=args.seed, **{k: getattr(args, k) for k in INIT_FIELDS})
    gen.save_pretrained(out, force=args.force)
    if not args.quiet:
        total = gen.param_counts()["total"]
        print(f"wrote fresh generator ({args.head_size}, {total:,} parameters) for {base.spec.name} to {out}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("generate", help="generate LoRA adapters from task descriptions",
                       description="Generate one PEFT LoRA adapter per description in one batched pass. "
                                   "With several descriptions, --out holds one sub-directory each.")
    p.add_argument("descriptions", nargs="*", metavar="DESCRIPTION", help="task description(s)")
    add_model_arg(p)
    p.add_argument("--file", help="read descriptions from a text file, one per line")
    p.add_argument("--allow-unknown", action="store_true",
                   help="generate even for a description the encoder cannot read; refused otherwise are those "
                        "with mostly unknown tokens (emoji) and, for an English-only encoder such as the default, "
                        "those mostly in another script, or with most of their words (3 or more, of 3+ letters) "
                        "outside the encoder's English vocabulary, as French, Spanish or German descriptions are")
    add_output_args(p, "adapter")
    add_format_args(p)
    p.set_defaults(func=cmd_generate)

    from ..encoders import DEFAULT_ENCODER
    from ..hypernet import HEAD_SIZES, HyperConfig

    p = sub.add_parser("info", help="show a generator's base, encoder, head and parameter counts",
                       description="Describe a generator checkpoint (default: the shipped one), or with --base "
                                   "the parameter counts of fresh L/M/S generators for a base model.")
    p.add_argument("checkpoint", nargs="?", default=None, help="generator checkpoint directory")
    p.add_argument("--base", help="show counts of fresh generators for this base model instead")
    p.add_argument("--head-size", choices=HEAD_SIZES, help="with --base: only this head size")
    p.add_argument("--rank", type=int, default=config_default(HyperConfig, "rank"),
                   help="with --base: LoRA rank (default %(default)s)")
    p.add_argument("--head-in", type=int, default=None,
                   help="with --base: width of the output heads' input (default: t2l init's; `t2l info` shows the "
                        "shipped generator's)")
    p.add_argument("--target-modules", default=",".join(DEFAULT_TARGET_MODULES),
                   help="with --base: modules to adapt (default %(default)s)")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("init", help="write a fresh (untrained) generator checkpoint",
                       description="Write a fresh generator for a base model: the starting point for training. "
                                   "Its adapters change nothing until it is trained.")
    p.add_argument("--base", default=DEFAULT_BASE,
                   help=f"base model: {DEFAULT_BASE} (embedded), HF id, directory or .gguf file (default %(default)s)")
    p.add_argument("--target-modules", default=",".join(DEFAULT_TARGET_MODULES),
                   help="comma-separated Linear module names (default %(default)s)")
    p.add_argument("--encoder", default=DEFAULT_ENCODER,
                   help="description encoder: a sentence-transformers name/dir, or base-lm (default %(default)s)")
    add_config_flags(p, HyperConfig, INIT_FIELDS, choices={"head_size": HEAD_SIZES})
    p.add_argument("--seed", type=int, default=0, help="initialisation seed (default %(default)s)")
    add_output_args(p, "checkpoint")
    p.set_defaults(func=cmd_init)
