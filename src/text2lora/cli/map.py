"""``t2l map``: a 2-D PCA picture of a generator's adapters for the benchmarks' descriptions."""

from __future__ import annotations

import argparse


def cmd_map(args: argparse.Namespace) -> int:
    from ..errors import ConfigError
    from ..eval.projection import adapter_map, plot_adapter_map
    from ..generator import TextToLoRA

    if not args.out.endswith(".png"):
        raise ConfigError(f"--out must be a .png path, got {args.out!r}")
    result = adapter_map(TextToLoRA.from_pretrained(args.model))
    path = plot_adapter_map(result, args.out)
    print(f"wrote {path} and {path.with_suffix('.json')}: held-out description nearest its own task "
          f"{100 * result['nearest_task_accuracy']:.0f}% (chance {100 * result['nearest_task_chance']:.0f}%), "
          f"PC1+PC2 {100 * sum(result['explained_variance']):.1f}% of variance")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    m = sub.add_parser(
        "map", help="plot a 2-D PCA map of a generator's adapters for the benchmarks' descriptions",
        description="Generate adapters for the ten benchmarks' training and held-out descriptions and for random "
                    "strings, project them on two principal components, colour by task family; write a PNG and "
                    "its JSON (coordinates, explained variance, how often a held-out description's adapter is "
                    "nearest its own task's). Loads no base LLM.")
    m.add_argument("--model", "-m", default=None, help="generator checkpoint (default: the shipped one)")
    m.add_argument("--out", "-o", default="adapter_map.png", help="PNG path (default adapter_map.png)")
    m.set_defaults(func=cmd_map)
