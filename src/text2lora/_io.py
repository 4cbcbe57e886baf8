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

__all__ = ["cache_dir", "atomic_write_text", "atomic_write_json", "atomic_dir", "read_json", "read_text", "STOP_FILE",
           "lone_surrogate",
           "written_by_t2l", "check_replaceable", "foreign_entries", "MANIFEST", "GGUF_PROVENANCE_KEY",
           "undo_on_failure", "remove_stale_temporaries", "refuse_pickled_weights", "file_digest"]

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


def lone_surrogate(text: str) -> str | None:
    """The first lone surrogate in ``text`` (how Python keeps bytes that were not UTF-8, e.g. in a command-line
    argument, or a broken ``\\ud800`` escape in JSON), or ``None``: no tokenizer, file or terminal takes one."""
    return next((c for c in text if "\ud800" <= c <= "\udfff"), None)


def read_text(path: str | os.PathLike, what: str = "") -> str:
    """Read a UTF-8 text file; bytes that are not UTF-8 raise a :class:`~text2lora.errors.T2LError` naming the
    file, the line and the byte, and how to fix it (``what`` names the file's role, e.g. ``--file``)."""
    from .errors import T2LError

    path = Path(path)
    data = path.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise T2LError(f"{(what + ' ') if what else ''}{path} is not UTF-8 text: line {line} has bytes that are not "
                       f"UTF-8 (0x{data[e.start]:02x} at byte {e.start}: {e.reason}); save the file as UTF-8 (e.g. "
                       "iconv -f latin1 -t utf-8), or remove those bytes") from None


def read_json(path: str | os.PathLike) -> Any:
    """Read a JSON file; a syntax error or bytes that are not UTF-8 name the file and position."""
    from .errors import T2LError

    path = Path(path)
    try:
        return json.loads(read_text(path))
    except json.JSONDecodeError as e:
        raise T2LError(f"{path} is not valid JSON (line {e.lineno}, column {e.colno}: {e.msg}); "
                       "fix or delete the file") from None


#: The file in which every directory text2lora writes (:func:`atomic_dir`) lists what it wrote there: each
#: file's path, relative to the directory, and its SHA-256. ``--force`` replaces a directory only while
#: everything in it is listed there and unchanged.
MANIFEST = ".text2lora-files.json"

#: The metadata key of the provenance text2lora writes into a GGUF adapter file (:mod:`text2lora.formats.gguf`).
GGUF_PROVENANCE_KEY = "text2lora.meta"

def _is_t2l_gguf(path: Path) -> bool:
    """A GGUF adapter file text2lora wrote: the GGUF magic and text2lora's provenance key in its metadata."""
    try:
        with open(path, "rb") as f:
            if f.read(4) != b"GGUF":
                return False
        from gguf import GGUFReader

        return GGUF_PROVENANCE_KEY in GGUFReader(str(path)).fields
    except (OSError, ValueError, IndexError, KeyError):  # a truncated or foreign file is simply not one of ours
        return False


def _is_t2l_card(path: Path) -> bool:
    """A model card (README.md) text2lora wrote (:mod:`text2lora.hub`): front matter tagged ``text-to-lora``."""
    if path.name != "README.md":
        return False
    with contextlib.suppress(OSError, UnicodeDecodeError):
        head = path.read_text(encoding="utf-8")[:2000]
        front = head.split("---", 2)
        return head.startswith("---") and len(front) == 3 and "\n- text-to-lora\n" in front[1]
    return False


def _read_manifest(folder: Path) -> dict[str, str] | None:
    with contextlib.suppress(OSError, ValueError):
        data = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
        files = data.get("files") if isinstance(data, dict) else None
        if isinstance(files, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in files.items()):
            return files
    return None


def _write_manifest(folder: Path) -> None:
    """List every file under ``folder`` (its path and SHA-256) in ``folder/MANIFEST``."""
    files = {}
    for rel, full in _walk(folder):
        if rel != MANIFEST and full.is_file() and not full.is_symlink():
            files[rel] = file_digest(full)
    atomic_write_json(folder / MANIFEST, {"written_by": "text2lora", "files": dict(sorted(files.items()))})


def _walk(folder: Path) -> Iterator[tuple[str, Path]]:
    """(relative path, path) of every file, symbolic link and empty directory under ``folder``, links not
    followed."""
    for root, dirs, files in os.walk(folder, followlinks=False):
        here = Path(root)
        for name in sorted(files) + sorted(d for d in dirs if (here / d).is_symlink()):
            yield (here / name).relative_to(folder).as_posix(), here / name
        if here != folder and not dirs and not files:
            yield here.relative_to(folder).as_posix() + "/", here


def _json_keys(path: Path) -> set[str]:
    with contextlib.suppress(OSError, ValueError):
        data = json.loads(path.read_text(encoding="utf-8"))
        return set(data) if isinstance(data, dict) else set()
    return set()


def _only_text2lora_writes_into(folder: Path) -> bool:
    """Folders that only text2lora writes into, whole: a training checkpoint (``state.json`` with its step and
    random states), a task collection of the cache (``manifest.json`` naming it), a dequantized base
    (``text2lora_cache.txt``). Rebuilt over whatever their layout or format version."""
    return ({"step", "rng"} <= _json_keys(folder / "state.json")
            or {"format_version", "collection"} <= _json_keys(folder / "manifest.json")
            or (folder / "text2lora_cache.txt").is_file())


def _legacy_names(folder: Path) -> set[str] | None:
    """For a directory without a manifest, written by an earlier text2lora, the names it wrote there (an adapter,
    a generator, a directory of several adapters); ``None`` when it is none of these. Each kind is recognised by
    a marker file with text2lora's content."""
    if (folder / "text2lora.json").is_file() and (folder / "adapter_config.json").is_file():
        return {"adapter_config.json", "adapter_model.safetensors", "text2lora.json"}
    if {"format_version", "hyper"} <= _json_keys(folder / "config.json"):
        return {"config.json", "model.safetensors"}
    with contextlib.suppress(OSError, ValueError, TypeError, KeyError, AttributeError):
        index = json.loads((folder / "index.json").read_text(encoding="utf-8"))
        return {"index.json"} | {str(row["dir"]) for row in index if set(row) == {"dir", "description"}}
    return None


def foreign_entries(path: str | os.PathLike, expected: set[str] | frozenset[str] = frozenset()) -> list[str]:
    """What ``--force`` must not replace at ``path``: the files (relative paths) that text2lora did not write
    there or that changed since it did, directories it did not make, and symbolic links; ``[]`` when ``path``
    may be replaced (it is missing, an empty directory, or only text2lora's).

    A directory lists what text2lora wrote in its :data:`MANIFEST`; GGUF adapters and model cards that
    text2lora wrote beside that are recognised by their content. A directory written before manifests existed
    is recognised by its marker files and may hold only the names text2lora wrote then (or ``expected``, the
    files about to replace them). Training checkpoints, collections and the dequantized base are text2lora's
    whole. A single file may be replaced only if it is a GGUF adapter text2lora wrote."""
    path = Path(path)
    if path.is_symlink():
        return [path.name]
    if not path.exists():
        return []
    if not path.is_dir():
        return [] if _is_t2l_gguf(path) else [path.name]
    if _only_text2lora_writes_into(path):
        return sorted(rel for rel, full in _walk(path) if full.is_symlink())
    listed = _read_manifest(path)
    legacy = _legacy_names(path) if listed is None else None
    ours: set[str] = set()
    foreign: list[str] = []
    subdirs: dict[str, bool] = {}  # a legacy directory of several adapters: sub-directory -> all text2lora's
    for rel, full in _walk(path):
        top = rel.split("/", 1)[0]
        if full.is_symlink():
            foreign.append(rel)
        elif rel.endswith("/"):
            continue  # an empty directory: decided below, once every file is known
        elif listed is not None and rel in listed:
            if file_digest(full) == listed[rel]:
                ours.add(rel)
            else:
                foreign.append(f"{rel} (changed since text2lora wrote it)")
        elif listed is not None and rel == MANIFEST or _is_t2l_gguf(full) or _is_t2l_card(full):
            ours.add(rel)
        elif legacy is not None and (rel in legacy or rel in expected):
            ours.add(rel)
        elif legacy is not None and top in legacy and (path / top).is_dir():
            if top not in subdirs:
                subdirs[top] = not foreign_entries(path / top)
            (ours.add if subdirs[top] else foreign.append)(rel)
        else:
            foreign.append(rel)
    parents = {p.as_posix() + "/" for rel in ours for p in Path(rel).parents}
    foreign += [rel for rel, _ in _walk(path) if rel.endswith("/") and rel not in parents]
    return sorted(set(foreign))


def written_by_t2l(path: str | os.PathLike) -> bool:
    """True when ``path`` is something text2lora wrote and nothing else is in it (:func:`foreign_entries`):
    what ``--force`` may replace."""
    path = Path(path)
    return (path.exists() or path.is_symlink()) and not foreign_entries(path)


def check_replaceable(path: str | os.PathLike, expected: set[str] | frozenset[str] = frozenset()) -> None:
    """Raise :class:`OutputExistsError` naming what is in the way unless ``path`` is missing, an empty directory
    or holds only what text2lora wrote (:func:`foreign_entries`): ``--force`` never deletes or overwrites a
    user's file."""
    path = Path(path)
    foreign = foreign_entries(path, expected)
    if not foreign:
        return
    if path.is_symlink():
        raise OutputExistsError(f"{path} is a symbolic link, so --force will not replace it; choose another --out, "
                                "or remove the link yourself")
    if not path.is_dir():
        raise OutputExistsError(f"{path} is a file that text2lora did not write (not a GGUF adapter it made), so "
                                "--force will not overwrite it; choose another --out, or move the file yourself")
    shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
    raise OutputExistsError(f"{path} holds what text2lora did not write: {shown}; --force replaces only "
                            "text2lora's own files and never deletes yours: move those out, or choose another --out")


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike, force: bool = False) -> Iterator[Path]:
    """Build a directory in a temporary sibling and move it to ``path`` on success.

    Yields the temporary directory to write into. If the block raises, the temporary directory is removed and
    ``path`` is untouched. On success the directory gets its :data:`MANIFEST` (what text2lora wrote there). If
    ``path`` exists, :class:`OutputExistsError` is raised unless ``force`` is true, in which case the old
    directory is replaced, once the new one is complete, only if it holds nothing but what text2lora wrote
    (:func:`foreign_entries`); otherwise the error names what is in the way and nothing is deleted.
    """
    path = Path(path)
    if path.exists() and not force:
        raise OutputExistsError(f"output path {path} already exists; choose another path or pass --force "
                                "to overwrite it")
    if path.exists() and not path.is_dir():
        raise OutputExistsError(f"output path {path} exists and is not a directory; choose another path")
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
        _write_manifest(tmp)
        for p in tmp.rglob("*"):  # what writers made 0600 (safetensors does), as the umask would have it
            if not p.is_symlink():
                _as_if_created(p, directory=p.is_dir())
        if path.exists() or path.is_symlink():
            check_replaceable(path, expected={rel for rel, _ in _walk(tmp)})
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
