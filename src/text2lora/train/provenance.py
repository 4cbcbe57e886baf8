"""Where a trained generator comes from: the recipe file, the code, the data and the chosen step.

A generator checkpoint written by training carries a ``training`` block in its ``config.json`` (a
multi-task LoRA, in its ``text2lora.json``):

- ``recipe`` (the recipe's ``name``), ``recipe_file`` (the path it was read from, relative to the
  working directory when inside it) and ``recipe_sha256`` (the file's bytes);
- ``commit``: the git commit of the code that trained it (``git describe --always --dirty`` of the
  repository holding the package), or ``null`` outside a git checkout;
- ``data``: for each collection the training and validation tasks come from, the SHA-256 of its data
  (:func:`~text2lora.data.records.content_digest`: the same for every build of the same data; a user task
  file: of the file);
- ``steps`` (the run's length), ``step`` (the step whose weights these are) and ``chosen_by``.

So anyone holding the checkpoint can tell which recipe, on which data, made it, and rebuild it.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any, Iterable

from .._io import file_digest

__all__ = ["recipe_record", "data_record", "code_commit", "run_record", "checkpoint_record"]


def code_commit() -> str | None:
    """``git describe --always --dirty`` of the checkout holding this package, or ``None`` outside one."""
    here = Path(__file__).resolve().parent
    try:
        proc = subprocess.run(["git", "-C", str(here), "describe", "--always", "--dirty", "--abbrev=40"],
                              capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return proc.stdout.strip() or None if proc.returncode == 0 else None


def recipe_record(path: str | Path, name: str) -> dict[str, Any]:
    """The recipe part of the ``training`` block for the recipe file ``path`` whose ``name`` is ``name``."""
    path = Path(path)
    try:
        shown = str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        shown = str(path)
    return {"recipe": name, "recipe_file": shown, "recipe_sha256": file_digest(path), "commit": code_commit()}


def data_record(tasks: Iterable[Any]) -> dict[str, str]:
    """``{collection: sha256 of its data}`` for the collections ``tasks`` (task records) come from."""
    from ..data.records import collection_dir, content_digest

    out: dict[str, str] = {}
    for task in tasks:
        source = task.source
        if source in out:
            continue
        if source == "user":
            file = task.info.get("file") if isinstance(task.info, dict) else None
            if file and Path(file).is_file():
                out[f"user:{file}"] = file_digest(file)
            continue
        folder = collection_dir(source)
        if (folder / "examples.bin").is_file():
            out[source] = content_digest(folder)
    return dict(sorted(out.items()))


def run_record(recipe: dict[str, Any], tasks: Iterable[Any], steps: int) -> dict[str, Any]:
    """A run's ``training`` block before any checkpoint: ``recipe`` (:func:`recipe_record`), the data of its
    training and validation ``tasks`` (:func:`data_record`) and its length."""
    return {**recipe, "data": data_record(tasks), "steps": steps}


def checkpoint_record(run: dict[str, Any], step: int | None) -> dict[str, Any]:
    """The ``training`` block of the checkpoint saved at ``step`` of the run described by ``run``."""
    return {**run, "step": step, "chosen_by": "validation loss on the held-out tasks"}
