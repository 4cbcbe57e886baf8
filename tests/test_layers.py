"""The import layers of pyproject.toml's import-linter contracts hold, and a planted back-arrow breaks them.

The contracts are run as ``lint-imports`` runs them, in a subprocess (import-linter finds the package by
importing it). The planted case copies the package's Python files into a temporary folder, adds one import a
lower module may not make, and runs the same contracts against the copy.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("importlinter", reason="import-linter is in the dev extra: pip install -e '.[dev]'")
ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "src" / "text2lora"


def _lint(config: Path, path: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(path) if path else os.environ.get("PYTHONPATH", "")}
    code = ("import sys; from importlinter.cli import lint_imports; "
            f"sys.exit(lint_imports(config_filename={str(config)!r}, no_cache=True))")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=config.parent,
                          timeout=120)


def test_the_package_keeps_its_layers():
    proc = _lint(ROOT / "pyproject.toml")
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "2 kept, 0 broken" in proc.stdout


def test_a_planted_back_arrow_breaks_the_contracts(tmp_path):
    """A lower module importing a higher one inside a function (the exporter importing the CLI), and a module
    importing the package's public API for its version: each contract reports its break, naming the import."""
    copy = tmp_path / "src" / "text2lora"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("resources", "__pycache__"))
    gguf = copy / "formats" / "gguf.py"
    gguf.write_text(gguf.read_text() + "\n\ndef _planted():\n    from ..cli import main\n\n    return main\n")
    adapter = copy / "adapter.py"
    adapter.write_text(adapter.read_text() + "\n\ndef _planted():\n    from . import __version__\n\n"
                       "    return __version__\n")
    config = tmp_path / "pyproject.toml"
    shutil.copy(ROOT / "pyproject.toml", config)
    proc = _lint(config, tmp_path / "src")
    assert proc.returncode == 1, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "0 kept, 2 broken" in proc.stdout
    assert "text2lora.formats.gguf -> text2lora.cli" in proc.stdout
    assert "text2lora.adapter -> text2lora" in proc.stdout
