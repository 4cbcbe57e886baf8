"""``t2l train lora|mt-lora|recon|sft CONFIG.yaml [--key value ...] [--resume] [--out RUN_DIR]``."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from pathlib import Path

from ..errors import ConfigError

_HELP = {
    "lora": "train one oracle LoRA per task (skips finished tasks)",
    "mt-lora": "train one multi-task LoRA on all training tasks (baseline)",
    "recon": "train a generator to reconstruct a library of PEFT adapters",
    "sft": "train a generator end-to-end through the frozen base model (T2L; Hyperdecoders with "
           "--conditioning example)",
}


def _split_remainder(args: argparse.Namespace) -> list[str]:
    """Pull --resume/--quiet/--out out of the free-form overrides; return the rest."""
    rest, out = [], list(args.overrides or [])
    i = 0
    while i < len(out):
        tok = out[i]
        if tok == "--resume":
            args.resume = True
        elif tok == "--quiet":
            args.quiet = True
        elif tok == "--out" or tok.startswith("--out="):
            if "=" in tok:
                args.out = tok.split("=", 1)[1]
            else:
                if i + 1 >= len(out):
                    raise ConfigError("--out needs a directory")
                args.out = out[i + 1]
                i += 1
        else:
            rest.append(tok)
        i += 1
    return rest


def cmd_train(args: argparse.Namespace) -> int:
    from ..train import config as C

    overrides = C.parse_overrides(_split_remainder(args))
    cfg = C.load_config(args.recipe, args.config, overrides)
    out = Path(args.out) if args.out else Path("runs") / cfg.name
    if args.recipe == "sft":
        from ..train.sft import train_sft as fn
    elif args.recipe == "recon":
        from ..train.recon import train_recon as fn
    elif args.recipe == "lora":
        from ..train.lora import train_lora as fn
    else:
        from ..train.lora import train_mt_lora as fn
    from .._io import undo_on_failure
    from ..train.run import RunDir

    # a start that fails before its first result (bad data, Ctrl-C while loading) removes what it wrote, so the
    # corrected command is not refused with "already exists"; the main process does it, once
    main = os.environ.get("RANK", "0") == "0"
    with undo_on_failure(out, RunDir.has_results) if main else contextlib.nullcontext():
        extra = {}
        if args.recipe in ("sft", "mt-lora"):
            from ..train.provenance import recipe_record

            extra["recipe"] = recipe_record(args.config, cfg.name)
        result = fn(cfg, out, resume=args.resume, quiet=args.quiet, **extra)
    if not args.quiet and os.environ.get("RANK", "0") == "0":  # one summary under a distributed launcher
        best = f"{result.best_val:.4f} at step {result.best_step}" if result.best_val is not None else "n/a"
        print(f"finished {args.recipe} run {out}: {result.step} steps in {result.seconds:.1f} s; best validation "
              f"loss {best}", file=sys.stderr)
        for row in result.report or []:
            print("  " + "  ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()
                                   if k != "path"), file=sys.stderr)
        if result.summary:
            print("  " + "  ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                                   for k, v in result.summary.items()), file=sys.stderr)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    from ..train.config import RECIPES, config_help

    p = sub.add_parser("train", help="train oracle LoRAs, a multi-task LoRA, or a generator (recon / SFT)",
                       description="Training commands. Each reads a YAML recipe (see configs/) and accepts "
                                   "--key value overrides of any recipe key.")
    rs = p.add_subparsers(dest="recipe", metavar="RECIPE", parser_class=type(p))
    for name in RECIPES:
        q = rs.add_parser(name, help=_HELP[name], description=_HELP[name],
                          formatter_class=argparse.RawDescriptionHelpFormatter,
                          epilog="recipe keys (override any with --key value):\n" + config_help(name))
        q.add_argument("config", metavar="CONFIG.yaml", help="recipe file")
        q.add_argument("--resume", action="store_true",
                       help="continue the run in --out from its last checkpoint (same data order and RNG)")
        q.add_argument("--out", metavar="RUN_DIR", default=None, help="run directory (default: runs/<name>)")
        q.add_argument("--quiet", action="store_true", help="no progress bar or summary")
        q.add_argument("overrides", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
        q.set_defaults(func=cmd_train)
    p.set_defaults(func=lambda a: (p.print_help(), 2)[1])
