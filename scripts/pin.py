"""Write constraints.txt: the exact versions installed now of everything text2lora[train,apps,dev] pulls in.

``scripts/setup.sh`` installs with ``-c constraints.txt`` so that CI and fresh machines get the versions
the suite last passed with (packages are specified with ``>=`` in pyproject.toml, so a new upstream
release can otherwise change behaviour between two runs of the same commit). Re-run after upgrading:

    python3 -m pip install -U -e ".[train,apps,dev]" "$(grep '^torch==' constraints.txt)" && python3 scripts/pin.py
"""
from __future__ import annotations

import importlib.metadata as md
import sys
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
PROJECT, EXTRAS = "text-to-lora", ("train", "apps", "dev")
EXTRA_ROOTS: tuple[str, ...] = ()  # packages setup.sh installs beside the project (none at present)


def closure(name: str, extras: tuple[str, ...], seen: dict[str, str], visited: set, follow: bool = True) -> None:
    """Add ``name`` and, if ``follow``, everything its requirements (with ``extras``) pull in, to ``seen``."""
    key = canonicalize_name(name)
    if (key, extras) in visited:
        return
    visited.add((key, extras))
    try:
        dist = md.distribution(name)
    except md.PackageNotFoundError:  # an optional dependency not installed here: nothing to pin
        return
    seen[key] = dist.version.split("+")[0]  # torch 2.13.0+cpu -> 2.13.0 (the local tag is the index's business)
    if not follow:
        return
    for line in dist.requires or []:
        req = Requirement(line)
        if req.marker is not None and not any(req.marker.evaluate({"extra": e}) for e in ("",) + extras):
            continue
        closure(req.name, tuple(sorted(req.extras)), seen, visited)


def main() -> int:
    seen: dict[str, str] = {}
    visited: set = set()
    closure(PROJECT, EXTRAS, seen, visited)
    if len(seen) < 2:
        print(f"error: {PROJECT} is not installed here; run scripts/setup.sh first", file=sys.stderr)
        return 2
    for name in EXTRA_ROOTS:
        closure(name, (), seen, visited, follow=False)
    seen.pop(canonicalize_name(PROJECT))
    body = "".join(f"{n}=={v}\n" for n, v in sorted(seen.items()))
    text = ("# Versions the test suite last passed with; written by scripts/pin.py, used by scripts/setup.sh.\n"
            f"# Python {sys.version.split()[0]}. Regenerate after an upgrade; delete a line to float that package.\n"
            + body)
    from text2lora._io import atomic_write_text  # installed: the closure above found it

    out = ROOT / "constraints.txt"
    atomic_write_text(out, text)
    print(f"{len(seen)} packages pinned -> {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
