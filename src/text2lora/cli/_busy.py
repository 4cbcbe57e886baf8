"""Warn when a heavy command starts beside another one on the same CPU.

Two PyTorch jobs on the same cores each start one OpenMP thread per core; oversubscribed, they can
run ten times slower than one after the other (measured on 2 cores: a 12 s generation took 116 s
beside an evaluation). Heavy commands (``train``, ``eval``, ``watch``) register themselves as
``<cache>/jobs/<pid>.json`` while they run; a heavy command that finds another live one prints a
warning naming it and goes on. Entries of processes that died without cleaning up are removed.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from typing import Any, Iterator

from .._io import atomic_write_json, cache_dir, read_json
from ..errors import T2LError

__all__ = ["HEAVY_COMMANDS", "is_heavy", "registered", "other_jobs", "warn_if_busy"]

HEAVY_COMMANDS = frozenset({"train", "eval", "watch"})


def is_heavy(args: argparse.Namespace) -> bool:
    """True for commands that keep every core busy (not ``eval report/table/compare``, which set ``light``,
    nor their old flag forms ``eval --report/--table/--compare``)."""
    if args.command not in HEAVY_COMMANDS or getattr(args, "light", False):
        return False
    return not any(getattr(args, k, None) for k in ("compare", "report", "table"))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by another user
        return True
    return True


@contextlib.contextmanager
def registered(argv: list[str]) -> Iterator[None]:
    """Register this process as a running heavy job while inside."""
    path = cache_dir("jobs") / f"{os.getpid()}.json"
    atomic_write_json(path, {"pid": os.getpid(), "command": " ".join(["t2l", *argv]), "started": time.time()})
    try:
        yield
    finally:
        path.unlink(missing_ok=True)


def other_jobs() -> list[dict[str, Any]]:
    """Live heavy jobs other than this process (stale entries are deleted)."""
    found = []
    for path in sorted(cache_dir("jobs").glob("*.json")):
        try:
            info = read_json(path)
            pid = int(info["pid"])
        except (OSError, ValueError, KeyError, TypeError, T2LError):
            path.unlink(missing_ok=True)
            continue
        if pid == os.getpid():
            continue
        if not _alive(pid):
            path.unlink(missing_ok=True)
            continue
        found.append(info)
    return found


def warn_if_busy() -> list[dict[str, Any]]:
    """Print a warning on stderr for each other live heavy job when this one runs on the CPU."""
    import torch

    if torch.cuda.is_available():
        return []
    jobs = other_jobs()
    for job in jobs:
        print(f"t2l: warning: another t2l job is using this machine's CPU (pid {job['pid']}: {job['command']}). "
              "Two PyTorch jobs on the same cores slow each other down many times over; let it finish first, "
              "or give each job part of the cores with OMP_NUM_THREADS.", file=sys.stderr)
    return jobs
