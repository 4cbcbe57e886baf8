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
from typing import Any, Callable, Iterator

from .errors import OutputExistsError

__all__ = ["cache_dir", "atomic_write_text", "atomic_write_json", "atomic_dir", "read_json", "STOP_FILE",
           "written_by_t2l", "check_replaceable", "undo_on_failure", "remove_stale_temporaries",
           "refuse_pickled_weights", "file_digest"]

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


def _umask() -> int:
    """The process's umask, read without changing it where Linux allows (``os.umask`` sets it, for a moment,
    for every thread)."""
    with contextlib.suppress(OSError, ValueError):
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _as_if_created(path: str | os.PathLike, directory: bool = False) -> None:
    """Give a ``tempfile`` file (0600) or directory (0700) the mode ``open`` / ``mkdir`` would have given it
    (0666 / 0777 less the umask), so what text2lora writes is readable as the user's other files are
    (e.g. by a server running as another user)."""
    os.chmod(path, (0o777 if directory else 0o666) & ~_umask())


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
        _as_if_created(tmp)
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


def file_digest(path: str | os.PathLike) -> str:
    """SHA-256 of a file's bytes, read in 1 MiB chunks."""
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


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
        _as_if_created(tmp, directory=True)
    except OSError as e:
        raise OutputExistsError(f"cannot write {path}: {e.strerror or e} ({e.filename or path.parent}); choose "
                                "another output path") from None
    try:
        yield tmp
        for p in tmp.rglob("*"):  # what writers made 0600 (safetensors does), as the umask would have it
            if not p.is_symlink():
                _as_if_created(p, directory=p.is_dir())
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


#: Names of what the atomic writers leave behind when killed mid-write: ``.NAME.XXXX.tmp`` (a file or a
#: directory being built), ``.NAME.XXXX.old`` (a replaced directory being deleted), ``.NAME.copy``.
_TEMPORARY_SUFFIXES = (".tmp", ".old", ".copy")


def remove_stale_temporaries(*folders: str | os.PathLike) -> list[Path]:
    """Delete the temporaries an atomic write killed mid-way left directly in ``folders``; return them.

    Call it only where no other process is writing at the same time (a run directory being reopened)."""
    removed = []
    for folder in folders:
        with contextlib.suppress(OSError):
            for p in Path(folder).iterdir():
                if p.name.startswith(".") and p.name.endswith(_TEMPORARY_SUFFIXES):
                    if p.is_dir() and not p.is_symlink():
                        shutil.rmtree(p, ignore_errors=True)
                    else:
                        p.unlink(missing_ok=True)
                    removed.append(p)
    return removed


@contextlib.contextmanager
def undo_on_failure(path: str | os.PathLike, has_results: Callable[[Path], bool]) -> Iterator[None]:
    """If the block raises (Ctrl-C included) before ``has_results(path)``, remove what it added: the directory
    ``path`` and the parents it created, or, when ``path`` existed, the entries it added to it.

    A failed start of a run (bad config, missing data) so leaves nothing that refuses the corrected retry;
    what was there before is never touched."""
    path = Path(path)
    created = [p for p in [path, *path.parents] if not p.exists()]
    before = None if created else {p.name for p in path.iterdir()} if path.is_dir() else set()
    try:
        yield
    except BaseException:
        if path.is_dir() and not has_results(path):
            if created:
                shutil.rmtree(path, ignore_errors=True)
                for p in created[1:]:  # parents it made, innermost first, while empty
                    with contextlib.suppress(OSError):
                        p.rmdir()
            else:
                for p in path.iterdir():
                    if p.name in before:
                        continue
                    if p.is_dir() and not p.is_symlink():
                        shutil.rmtree(p, ignore_errors=True)
                    else:
                        p.unlink(missing_ok=True)
        raise


#: Weight files that are Python pickles: loading one can run arbitrary code, so text2lora never does.
_PICKLED_WEIGHTS = ("pytorch_model*.bin", "*.pt", "*.pth", "*.ckpt")


def refuse_pickled_weights(folder: str | os.PathLike, what: str) -> None:
    """Raise :class:`~text2lora.errors.ModelLoadError` naming the file when ``folder`` (a base model or
    encoder directory) or one of its sub-folders holds its weights only as a pickle (``pytorch_model.bin``)."""
    from .errors import ModelLoadError

    folder = Path(folder)
    if not folder.is_dir():
        return
    for d in [folder, *sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))]:
        if any(d.glob("*.safetensors")):
            continue
        for pattern in _PICKLED_WEIGHTS:
            found = sorted(d.glob(pattern))
            if found:
                raise ModelLoadError(f"{found[0]}: the {what} stores its weights as a pickle, which text2lora never "
                                     "loads (unpickling can run code); convert it to safetensors (e.g. load it once "
                                     "with transformers where you trust it and save_pretrained, which writes "
                                     "model.safetensors), then pass the converted directory")
