"""Atomic file and directory writes, and the local cache location.

Nothing this project writes is ever left half-written: files are written to a
temporary sibling and renamed into place; directories are assembled in a
temporary sibling directory and renamed as a whole.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

from .errors import OutputExistsError

__all__ = ["cache_dir", "atomic_write_text", "atomic_write_json", "atomic_dir", "read_json", "STOP_FILE",
           "written_by_t2l", "check_replaceable"]

#: A file that, once it exists in a training run's directory, stops training after the current step (with a
#: checkpoint). Training polls it; ``t2l watch --patience`` writes it.
STOP_FILE = "STOP"


def cache_dir(*parts: str) -> Path:
    """Return (and create) a folder under the text2lora cache.

    The cache root is ``$TEXT2LORA_CACHE`` if set, else ``~/.cache/text2lora``.
    """
    root = Path(os.environ.get("TEXT2LORA_CACHE") or Path.home() / ".cache" / "text2lora")
    path = root.joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike) -> Iterator[str]:
    """Yield the name of a temporary sibling of ``path`` to write; on success it is synced and renamed
    to ``path``, on any failure removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary sibling and an atomic rename."""
    with atomic_file(path) as tmp, open(tmp, "wb") as f:
        f.write(data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` (UTF-8) atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as indented JSON atomically."""
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    """Read a JSON file; a syntax error names the file and position."""
    from .errors import T2LError

    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise T2LError(f"{path} is not valid JSON (line {e.lineno}, column {e.colno}: {e.msg}); "
                       "fix or delete the file") from None


def written_by_t2l(path: str | os.PathLike) -> bool:
    """True for what text2lora writes and ``--force`` may replace: an adapter directory (``text2lora.json``),
    a generator checkpoint (``config.json`` with ``format_version`` and ``hyper`` + ``model.safetensors``),
    a directory of several adapters (``index.json`` beside them), or an adapter GGUF file."""
    path = Path(path)
    if path.is_file():
        with contextlib.suppress(OSError), open(path, "rb") as f:
            return path.suffix == ".gguf" and f.read(4) == b"GGUF"
        return False
    if not path.is_dir():
        return False
    if (path / "text2lora.json").is_file() and (path / "adapter_config.json").is_file():
        return True
    if (path / "config.json").is_file() and (path / "model.safetensors").is_file():
        with contextlib.suppress(OSError, ValueError):
            cfg = json.loads((path / "config.json").read_text(encoding="utf-8"))
            return isinstance(cfg, dict) and "format_version" in cfg and "hyper" in cfg
        return False
    if (path / "index.json").is_file():
        return all(p.name == "index.json" or written_by_t2l(p) for p in path.iterdir())
    return False


def check_replaceable(path: str | os.PathLike) -> None:
    """Raise :class:`OutputExistsError` unless ``path`` is missing, an empty directory or something text2lora
    wrote (:func:`written_by_t2l`): ``--force`` never deletes a user's other files."""
    path = Path(path)
    if not path.exists() and not path.is_symlink():
        return
    if path.is_dir() and not path.is_symlink() and not any(path.iterdir()):
        return
    if not written_by_t2l(path) or path.is_symlink():
        raise OutputExistsError(f"{path} exists and is not something text2lora wrote (an adapter or generator "
                                "directory), so --force will not replace it; choose another --out, or remove it "
                                "yourself")


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike, force: bool = False) -> Iterator[Path]:
    """Build a directory in a temporary sibling and move it to ``path`` on success.

    Yields the temporary directory to write into. If the block raises, the
    temporary directory is removed and ``path`` is untouched. If ``path`` exists,
    :class:`OutputExistsError` is raised unless ``force`` is true, in which case
    the old directory is replaced only after the new one is complete.
    """
    path = Path(path)
    if path.exists() and not force:
        raise OutputExistsError(f"output path {path} already exists; choose another path or pass --force "
                                "to overwrite it")
    if path.exists() and not path.is_dir():
        raise OutputExistsError(f"output path {path} exists and is not a directory; remove it first")
    path = Path(os.path.abspath(path))  # "." and "dir/" have a name to build a sibling from
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    except OSError as e:
        raise OutputExistsError(f"cannot write {path}: {e.strerror or e} ({e.filename or path.parent}); choose "
                                "another output path") from None
    try:
        yield tmp
        if path.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".old", dir=path.parent))
            old.rmdir()
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
