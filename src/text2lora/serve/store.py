"""Adapters generated on demand: an LRU cache keyed by adapter id and weights digest, and an adapter directory.

Ids live in two namespaces that cannot meet:

- a *derived id*, ``t2l-`` + 16 hex digits of ``sha256(generator digest + NUL + description)``: what
  ``t2l:<description>`` and ``POST /v1/adapters`` give a description; the same description always
  gets the same id from the same generator;
- a *name* a client chooses (``POST /v1/adapters`` with ``name``): any ``[A-Za-z0-9_-]{1,64}`` that
  does not start with ``t2l-`` (case-insensitively) and is not ``base`` or the base model's name, so
  it can never equal a derived id or a name that means "no adapter".

What is served is always what the loaded generator makes for one description, and each entry
records that description and the generator's digest, compared on every hit:

- ``t2l:<description>`` resolves only to the adapter this process generated for exactly that
  description with the loaded generator.
- An id resolves to what was registered under it in this process, or else to the directory
  ``adapter_dir/<id>/`` (written by an earlier server, or by another process) *after verification*:
  its ``text2lora.json`` must name the loaded generator's digest and a description, a derived id must
  be that description's id, and its tensors must be what the loaded generator makes for that
  description (regenerated here and compared; equal up to float rounding). What is then served is
  the adapter generated here, never the tensors read from disk. A directory that fails is refused
  (404, with the reason) and logged once per id and modification time.

With ``adapter_dir`` set, each generated adapter is also written to ``adapter_dir/<id>/`` as a PEFT
directory, the layout vLLM's filesystem LoRA resolver reads; directories this process wrote are kept
under ``disk_quota_mb``, the least recently used deleted first (directories it did not write are
never deleted nor overwritten).

For the llama.cpp engine the store also keeps each adapter as a llama.cpp GGUF file (:meth:`AdapterStore.gguf_path`,
written once per weights digest): ``adapter.gguf`` beside the PEFT files in ``adapter_dir/<id>/`` when this
process wrote that directory (counted in the quota), else in a private temporary directory.
"""

from __future__ import annotations

import hashlib
import logging
import re
import shutil
import tempfile
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..adapter import VLLM_RANKS, LoRAAdapter
from ..encoders import check_descriptions
from ..errors import ConfigError, OutputExistsError, T2LError

__all__ = ["ADAPTER_ID_RE", "DERIVED_ID_RE", "AdapterInfo", "AdapterStore", "adapter_id_for", "generator_digest",
           "UnknownAdapter", "BadAdapterId", "InvalidDescription", "check_description", "same_weights"]

log = logging.getLogger(__name__)

ADAPTER_ID_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")
"""What every id matches (whole string): never a path separator or ``..``, so ``adapter_dir/<id>`` stays inside."""
DERIVED_ID_RE = re.compile(r"t2l-[0-9a-f]{16}")
"""What ids derived from a description look like (:func:`adapter_id_for`)."""
DERIVED_PREFIX = "t2l-"
MAX_DESCRIPTION_CHARS = 4000


class UnknownAdapter(T2LError):
    """No adapter with this id was generated (or it was forgotten), or its directory failed verification."""


class BadAdapterId(T2LError):
    """The id has characters or a length that ids never have, or a name is reserved."""


class InvalidDescription(T2LError, ValueError):
    """The task description is empty or too long."""


def adapter_id_for(description: str, gen_digest: str | None = None) -> str:
    """The id the server gives a description's adapter from the generator with digest ``gen_digest``."""
    key = description if gen_digest is None else f"{gen_digest}\0{description}"
    return DERIVED_PREFIX + hashlib.sha256(key.encode("utf-8")).hexdigest()[:16]


def generator_digest(generator: Any) -> str:
    """The generator's checkpoint digest, else a SHA-256 of its weights in memory."""
    if getattr(generator, "digest", None):
        return str(generator.digest)
    h = hashlib.sha256()
    for k, v in sorted(generator.hypernet.state_dict().items()):
        v = v.detach().to("cpu").contiguous()
        h.update(repr((k, tuple(v.shape), str(v.dtype))).encode())
        h.update(v.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def check_description(description: Any) -> str:
    """Return the stripped description, or raise :class:`InvalidDescription` saying what is wrong with it."""
    try:
        return check_descriptions([description], max_chars=MAX_DESCRIPTION_CHARS)[0].strip()
    except ConfigError as e:
        raise InvalidDescription(str(e)) from None


def same_weights(a: LoRAAdapter, b: LoRAAdapter) -> bool:
    """Whether ``a`` and ``b`` change the base model in the same way: the same modules, shapes, alpha and
    rsLoRA, and tensors equal up to the rounding of their dtype (1e-4 of each tensor's largest value in
    float32, 1e-2 in 16-bit types; a regeneration on other hardware or thread counts may differ by that)."""
    if a.digest() == b.digest():
        return True
    if set(a.A) != set(b.A) or float(a.alpha) != float(b.alpha) or bool(a.use_rslora) != bool(b.use_rslora):
        return False
    for m in a.A:
        for x, y in ((a.A[m], b.A[m]), (a.B[m], b.B[m])):
            if x.shape != y.shape:
                return False
            tol = 1e-4 if torch.float32 in (x.dtype, y.dtype) else 1e-2
            x, y = x.detach().to("cpu", torch.float32), y.detach().to("cpu", torch.float32)
            if not torch.allclose(x, y, rtol=0.0, atol=tol * float(y.abs().max().clamp_min(1e-30))):
                return False
    return True


@dataclass
class AdapterInfo:
    """What the server knows about one adapter: the description and generator it was made from."""

    id: str
    description: str
    created: int
    generation_ms: float
    path: str | None = None
    digest: str = ""
    """SHA-256 of the weights (:meth:`LoRAAdapter.digest`)."""
    generated: bool = False
    """First made for a request in this process (else found in ``adapter_dir`` and verified)."""
    generator_digest: str = ""
    """The digest of the generator that made it (compared with the loaded generator's on every hit)."""

    def to_json(self, rank: int | None = None, base_model: str | None = None) -> dict[str, Any]:
        return {"id": self.id, "object": "adapter", "description": self.description, "created": self.created,
                "generation_ms": round(self.generation_ms, 2), "rank": rank, "base_model": base_model,
                "path": self.path, "digest": self.digest, "generator_digest": self.generator_digest,
                "source": "generated" if self.generated else "directory"}


class AdapterStore:
    """Thread-safe: ``(id, digest)`` -> adapter (LRU, ``capacity`` entries) and id -> :class:`AdapterInfo`.

    Concurrent requests for the same new description generate it once; the others wait.
    ``reserved`` are names that mean something else to the server (``base``, the base model's name):
    a client cannot take them.
    """

    def __init__(self, generator: Any, capacity: int = 64, adapter_dir: str | Path | None = None,
                 max_ids: int = 100_000, gen_lock: threading.Lock | None = None,
                 disk_quota_mb: float | None = None, reserved: tuple[str, ...] = ("base",)):
        self.gen, self.capacity, self.max_ids = generator, capacity, max_ids
        self.gen_digest = generator_digest(generator)
        self.reserved = {r.lower() for r in reserved}
        self.adapter_dir = Path(adapter_dir) if adapter_dir else None
        if self.adapter_dir is not None:
            self.adapter_dir.mkdir(parents=True, exist_ok=True)
        self.disk_quota = None if disk_quota_mb is None else int(disk_quota_mb * 1024 * 1024)
        self._lru: OrderedDict[tuple[str, str], LoRAAdapter] = OrderedDict()
        self._ids: OrderedDict[str, AdapterInfo] = OrderedDict()
        self._written: OrderedDict[str, int] = OrderedDict()  # ids whose directory this process wrote -> bytes
        self._refused: dict[str, tuple[int, str]] = {}  # id -> (directory mtime_ns, why it was refused)
        self._foreign: dict[str, int] = {}  # id -> mtime_ns of a directory there that holds other weights
        self._lock = threading.Lock()
        self._gen_lock = gen_lock or threading.Lock()
        self._inflight: dict[str, threading.Event] = {}
        self._gguf: dict[str, Path] = {}  # weights digest -> the GGUF file written for it
        self._gguf_lock = threading.Lock()
        self._private: Path | None = None  # where GGUF files without an adapter directory of ours go
        self.stats = {"hits": 0, "misses": 0, "evictions": 0, "generated": 0, "disk_evictions": 0, "refused": 0}

    def generated_id(self, description: str) -> str:
        """The id of ``description``'s adapter from the loaded generator."""
        return adapter_id_for(check_description(description), self.gen_digest)

    def _made_here(self, info: AdapterInfo | None, adapter: LoRAAdapter | None, description: str) -> bool:
        """Whether ``info`` (and ``adapter``) record ``description`` and the loaded generator."""
        return (info is not None and info.description == description and info.generator_digest == self.gen_digest
                and (adapter is None or (adapter.description == description
                                         and adapter.meta.get("generator_digest") == self.gen_digest)))

    # ------------------------------------------------------------------ ids
    def check_name(self, name: Any, gid: str | None = None) -> str | None:
        """``name`` if a client may give it to an adapter (``None`` when it is ``gid``, the description's own
        derived id); raises :class:`BadAdapterId` saying why not."""
        if not isinstance(name, str) or not ADAPTER_ID_RE.fullmatch(name):
            raise BadAdapterId(f"{str(name)[:80]!r} is not a valid adapter name (use {ADAPTER_ID_RE.pattern}, "
                               f"not starting with {DERIVED_PREFIX!r})")
        if name == gid:
            return None
        if name.lower().startswith(DERIVED_PREFIX):
            raise BadAdapterId(f"adapter name {name!r} starts with {DERIVED_PREFIX!r}, which is kept for the ids the "
                               "server derives from descriptions; choose a name without that prefix")
        if name.lower() in self.reserved:
            raise BadAdapterId(f"adapter name {name!r} means the base model without an adapter; choose another name")
        return name

    def lookup(self, adapter_id: str) -> AdapterInfo:
        """The :class:`AdapterInfo` of an id; raises :class:`BadAdapterId` / :class:`UnknownAdapter`.

        An id not registered in this process may name a verified directory of ``adapter_dir``."""
        if not isinstance(adapter_id, str) or not ADAPTER_ID_RE.fullmatch(adapter_id):
            raise BadAdapterId(f"{str(adapter_id)[:80]!r} is not a valid adapter id (ids match "
                               f"{ADAPTER_ID_RE.pattern})")
        with self._lock:
            info = self._ids.get(adapter_id)
        if info is None and self.adapter_dir is not None:
            info = self._from_disk(adapter_id)
        if info is None:
            raise UnknownAdapter(f"no adapter with id {adapter_id!r}; create one with POST /v1/adapters "
                                 "or use \"model\": \"t2l:<task description>\"")
        return info

    def _load_dir(self, adapter_id: str) -> LoRAAdapter | None:
        """The adapter directory ``adapter_dir/<id>`` as it is on disk (``None`` if there is none);
        :class:`~text2lora.errors.T2LError` if it does not load."""
        assert self.adapter_dir is not None
        path = self.adapter_dir / adapter_id  # ids match ADAPTER_ID_RE: the path stays inside adapter_dir
        if not (path / "adapter_config.json").is_file():
            return None
        return LoRAAdapter.load(path, self.gen.base_spec)

    def _from_disk(self, adapter_id: str) -> AdapterInfo | None:
        """The directory ``adapter_dir/<id>`` if it verifies (see the module docstring), registered under its
        id as the adapter generated here for its description; ``None`` if there is none; else
        :class:`UnknownAdapter` with the reason.

        A derived id is bound to its description by the hash: once the provenance fits, the id gets the
        adapter generated here, and a directory holding other weights is only left alone (``_write``). A
        client name is bound to its description only by the directory, so its weights must match too."""
        path = self.adapter_dir / adapter_id  # type: ignore[operator]
        try:
            mtime = path.stat().st_mtime_ns
        except OSError:
            return None
        with self._lock:
            refused = self._refused.get(adapter_id)
        if refused is not None and refused[0] == mtime:
            raise UnknownAdapter(refused[1])
        derived = adapter_id.lower().startswith(DERIVED_PREFIX)
        try:
            on_disk = self._load_dir(adapter_id)
            if on_disk is None:
                return None
            description = self._check_provenance(adapter_id, on_disk)
            adapter, info, _ = self.get(description)
            if not derived and not same_weights(on_disk, adapter):
                raise UnknownAdapter("its weights are not what this server's generator makes for the description "
                                     "its text2lora.json names")
        except T2LError as e:
            why = (f"adapter {adapter_id!r} is not served: the directory {path} was not verified ({e}); only "
                   "directories that this server's generator would write are served")
            with self._lock:
                self._refused[adapter_id] = (mtime, why)
                self.stats["refused"] += 1
            log.warning("%s", why)
            raise UnknownAdapter(why) from None
        if derived:
            return info
        with self._lock:
            alias = self._alias(info, adapter_id, adapter, generated=False)
            alias.path = str(path)
            return alias

    def _check_provenance(self, adapter_id: str, on_disk: LoRAAdapter) -> str:
        """The description ``on_disk``'s ``text2lora.json`` names, if it names the loaded generator and fits
        ``adapter_id``; else :class:`UnknownAdapter` saying what does not fit."""
        description, digest = on_disk.meta.get("description"), on_disk.meta.get("generator_digest")
        if digest != self.gen_digest:
            raise UnknownAdapter(f"its text2lora.json names generator digest {str(digest)[:16]!r}..., not the "
                                 f"loaded generator's {self.gen_digest[:16]!r}...")
        try:
            description = check_description(description)
        except InvalidDescription as e:
            raise UnknownAdapter(f"its text2lora.json has no usable description: {e}") from None
        if adapter_id.lower().startswith(DERIVED_PREFIX) and adapter_id != adapter_id_for(description, self.gen_digest):
            raise UnknownAdapter("its id is not the one the description in its text2lora.json gets")
        if not adapter_id.lower().startswith(DERIVED_PREFIX):
            self.check_name(adapter_id)
        return description

    def list(self) -> list[AdapterInfo]:
        """Known adapters, most recently used last."""
        with self._lock:
            return list(self._ids.values())

    def _remember(self, info: AdapterInfo) -> None:
        self._ids[info.id] = info
        self._ids.move_to_end(info.id)
        while len(self._ids) > self.max_ids:
            self._ids.popitem(last=False)

    def _put(self, key: tuple[str, str], adapter: LoRAAdapter) -> None:
        self._lru[key] = adapter
        self._lru.move_to_end(key)
        while len(self._lru) > self.capacity:
            self._lru.popitem(last=False)
            self.stats["evictions"] += 1

    # ------------------------------------------------------------------ adapters
    def by_id(self, adapter_id: str) -> tuple[LoRAAdapter, AdapterInfo, bool]:
        """The adapter registered under ``adapter_id``: ``(adapter, info, cache_hit)``."""
        info = self.lookup(adapter_id)
        with self._lock:
            adapter = self._lru.get((info.id, info.digest))
            if adapter is not None and self._made_here(info, adapter, info.description):
                self._lru.move_to_end((info.id, info.digest))
                self._ids.move_to_end(info.id)
                self.stats["hits"] += 1
                self._touch(info.id)
                return adapter, info, True
        if not self._made_here(info, None, info.description):  # not this generator's: never served
            with self._lock:
                self._ids.pop(info.id, None)
            raise UnknownAdapter(f"adapter {info.id!r} was not made by the loaded generator")
        adapter, ginfo, hit = self.get(info.description)  # evicted from memory: generate it again
        with self._lock:
            info.digest = ginfo.digest
            self._put((info.id, info.digest), adapter)
        return adapter, info, hit

    def get(self, description: str, name: str | None = None) -> tuple[LoRAAdapter, AdapterInfo, bool]:
        """The adapter this process generates for ``description`` with the loaded generator (generated on
        first use): ``(adapter, info, cache_hit)``. Never anything read from disk.

        ``name`` gives the adapter an id of the client's choosing (:meth:`check_name`); it must be unused or
        already name this description's adapter (``FileExistsError`` otherwise).
        """
        description = check_description(description)
        gid = adapter_id_for(description, self.gen_digest)
        if name is not None:
            name = self.check_name(name, gid)
        if name is not None:
            with self._lock:
                other = self._ids.get(name)
            if other is None and self.adapter_dir is not None and (self.adapter_dir / name).exists():
                try:
                    other = self._from_disk(name)
                except UnknownAdapter:
                    other = None
                taken = other is None or not self._made_here(other, None, description)
            else:
                taken = other is not None and not self._made_here(other, None, description)
            if taken:
                raise FileExistsError(f"adapter name {name!r} is already used for another adapter; choose "
                                      "another name")
        while True:
            with self._lock:
                info = self._ids.get(gid)
                adapter = self._lru.get((gid, info.digest)) if info is not None else None
                if adapter is not None and not self._made_here(info, adapter, description):
                    log.error("adapter %s in memory was not made from its description by the loaded generator; "
                              "generating it again", gid)  # cannot happen: ids are derived from both
                    adapter = None
                if adapter is not None:
                    self._lru.move_to_end((gid, info.digest))
                    self._ids.move_to_end(gid)
                    self.stats["hits"] += 1
                    self._touch(gid)
                    out = self._alias(info, name, adapter) if name else info
                    hit = True
                    break
                waiter = self._inflight.get(gid)
                if waiter is None:
                    self._inflight[gid] = threading.Event()
                    self.stats["misses"] += 1
                    hit = False
                    break
            waiter.wait(timeout=300)
        if not hit:
            try:
                t0 = time.perf_counter()
                with self._gen_lock:
                    adapter = self.gen.generate(description)
                ms = (time.perf_counter() - t0) * 1000
                adapter.meta["generator_digest"] = self.gen_digest  # what it was made with, in memory and on disk
                digest = adapter.digest()
                with self._lock:
                    prev = self._ids.get(gid)
                    keep = prev is not None and self._made_here(prev, None, description)
                    info = AdapterInfo(gid, description, prev.created if keep else int(time.time()), ms,
                                       prev.path if keep and prev.digest == digest else None, digest,
                                       prev.generated if keep else True, self.gen_digest)
                    self._remember(info)
                    self._put((gid, digest), adapter)
                    self.stats["generated"] += 1
                    out = self._alias(info, name, adapter) if name else info
            finally:
                with self._lock:
                    self._inflight.pop(gid).set()
        self._write(adapter, out)
        return adapter, out, hit

    def _alias(self, info: AdapterInfo, name: str, adapter: LoRAAdapter, generated: bool = True) -> AdapterInfo:
        """Register the client name ``name`` for the adapter ``info`` (lock held)."""
        prev = self._ids.get(name)
        alias = AdapterInfo(name, info.description, prev.created if prev else int(time.time()), info.generation_ms,
                            prev.path if prev and prev.digest == info.digest else None, info.digest, generated,
                            info.generator_digest)
        self._remember(alias)
        self._put((name, info.digest), adapter)
        return alias

    def _write(self, adapter: LoRAAdapter, info: AdapterInfo) -> None:
        """Save to ``adapter_dir/<id>`` (once) for vLLM's filesystem resolver, within the disk quota. A
        directory already there is never overwritten; it becomes this adapter's path only if it holds the same
        weights (else it is logged once per modification time and left alone)."""
        if self.adapter_dir is None or info.path is not None:
            return
        path = self.adapter_dir / info.id
        try:
            adapter.save(path, vllm=adapter.r in VLLM_RANKS)
        except OutputExistsError:
            try:
                mtime = path.stat().st_mtime_ns
            except OSError:
                return
            with self._lock:
                if self._foreign.get(info.id) == mtime:
                    return
            try:
                on_disk = self._load_dir(info.id)
            except T2LError:
                on_disk = None
            if on_disk is None or not same_weights(on_disk, adapter):
                with self._lock:
                    self._foreign[info.id] = mtime
                log.warning("not writing adapter %s: %s already holds other weights; it is left alone and not "
                            "served", info.id, path)
                return
        else:
            size = sum(p.stat().st_size for p in path.iterdir() if p.is_file())
            with self._lock:
                self._written[info.id] = size
        info.path = str(path)
        self._evict_disk()

    def _touch(self, adapter_id: str) -> None:
        if adapter_id in self._written:
            self._written.move_to_end(adapter_id)

    def _evict_disk(self) -> None:
        """Delete the least recently used directories this process wrote until under the quota."""
        if self.disk_quota is None:
            return
        while True:
            with self._lock:
                if sum(self._written.values()) <= self.disk_quota or len(self._written) <= 1:
                    return
                old, _ = self._written.popitem(last=False)
                info = self._ids.get(old)
                if info is not None:
                    info.path = None
                self.stats["disk_evictions"] += 1
            shutil.rmtree(self.adapter_dir / old, ignore_errors=True)  # type: ignore[operator]

    def gguf_path(self, adapter: LoRAAdapter, info: AdapterInfo | None, base_gguf: str | Path) -> Path:
        """``adapter`` as a llama.cpp LoRA GGUF file on the base's GGUF file ``base_gguf``, written once per
        weights digest (:func:`~text2lora.formats.gguf.save_gguf`): ``adapter.gguf`` in the adapter's
        directory (``info.path``) when this store wrote it, beside the PEFT files of the same id and digest;
        else in the store's private directory, deleted by :meth:`close`."""
        from ..formats.gguf import save_gguf

        digest = adapter.digest()
        with self._gguf_lock:
            known = self._gguf.get(digest)
            if known is not None and known.is_file():
                return known
            with self._lock:
                folder = (info.path if info is not None and info.path is not None and info.digest == digest
                          and info.id in self._written else None)
            path = None
            if folder is not None:
                try:
                    path = save_gguf(adapter, Path(folder) / "adapter.gguf", base_gguf=base_gguf, force=True)
                except OSError:  # the directory was evicted meanwhile (disk quota): keep the file privately
                    folder = None
            if path is None:
                if self._private is None:
                    self._private = Path(tempfile.mkdtemp(prefix="t2l-gguf-"))
                path = save_gguf(adapter, self._private / f"{digest[:32]}.gguf", base_gguf=base_gguf, force=True)
            self._gguf[digest] = path
            if folder is not None:
                with self._lock:
                    if info.id in self._written:  # type: ignore[union-attr]
                        self._written[info.id] += path.stat().st_size  # type: ignore[union-attr]
        if folder is not None:
            self._evict_disk()
        return path

    def close(self) -> None:
        """Delete the private directory of GGUF files (the adapter directory is left as it is)."""
        with self._gguf_lock:
            if self._private is not None:
                shutil.rmtree(self._private, ignore_errors=True)
                self._private = None
            self._gguf.clear()

    def disk_bytes(self) -> int:
        """Bytes of the adapter directories this process wrote and still keeps."""
        with self._lock:
            return sum(self._written.values())

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {**self.stats, "size": len(self._lru), "capacity": self.capacity, "ids": len(self._ids),
                    "disk_bytes": sum(self._written.values()), "disk_quota_bytes": self.disk_quota}
