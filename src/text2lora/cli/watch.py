"""``t2l watch RUN_DIR``: evaluate each new checkpoint of a training run, keep the best, signal early stopping."""

from __future__ import annotations

import argparse
from pathlib import Path

from ._args import add_config_flags, config_from_args

# WatchConfig's fields taken as flags (defaults and help from the dataclass), and their short forms
WATCH_FIELDS = ("benchmarks", "condition", "split", "limit", "pattern", "interval", "patience", "min_delta",
                "stop_file", "once", "idle_timeout", "mc_metric", "batch_size", "quiet")
SHORT = {"benchmarks": "-b", "quiet": "-q"}


def cmd_watch(args: argparse.Namespace) -> int:
    from .._io import read_json
    from ..base import load_base
    from ..data import resolve_tasks
    from ..errors import ConfigError
    from ..eval.watch import WatchConfig, find_checkpoints, watch

    cfg = config_from_args(WatchConfig, args, run_dir=args.run_dir)
    if not Path(args.run_dir).is_dir():
        raise ConfigError(f"run directory {args.run_dir} does not exist")
    tasks = resolve_tasks(cfg.benchmarks)
    base_name = args.base
    if base_name is None:
        ckpts = find_checkpoints(args.run_dir, cfg.pattern)
        run_cfg = Path(args.run_dir) / "config.json"
        if ckpts:
            base_name = read_json(ckpts[0] / "config.json")["base"]["name"]
        elif run_cfg.is_file() and isinstance(read_json(run_cfg).get("base"), (str, dict)):
            b = read_json(run_cfg)["base"]
            base_name = b if isinstance(b, str) else b.get("name")
        else:
            raise ConfigError(f"no checkpoint under {args.run_dir}/{cfg.pattern} yet; pass --base so the watcher "
                              "can load the base model and wait")
    state = watch(cfg, load_base(base_name, device=args.device), tasks)
    print(f"best: {state['best']} ({state['best_score']})" if state["best"] else "no checkpoint evaluated")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    from ..eval.watch import CONDITIONS, WatchConfig

    w = sub.add_parser(
        "watch", help="evaluate each new checkpoint of a training run; keep the best; signal early stopping",
        description="Watch RUN_DIR for new generator checkpoints (--pattern), evaluate each on validation splits, "
                    "keep RUN_DIR/watch/best, and write RUN_DIR/STOP when --patience runs out.")
    w.add_argument("run_dir", help="training run directory")
    add_config_flags(w, WatchConfig, WATCH_FIELDS, short=SHORT,
                     choices={"condition": CONDITIONS, "mc_metric": ("acc", "acc_norm")})
    w.add_argument("--base", default=None, help="base model (default: the one in the checkpoints' config)")
    w.add_argument("--device", default=None, help="cpu or cuda")
    w.set_defaults(func=cmd_watch)
