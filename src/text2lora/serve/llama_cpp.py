"""llama.cpp on the base model's GGUF file, with generated adapters as GGUF LoRA files: the faster CPU path.

- :func:`new_llama`: a ``llama_cpp.Llama`` whose weights stay in plain CPU buffers on a llama.cpp built with
  AMX (its AMX kernels crash on this project's Q4_1 base, and a LoRA cannot use them).
- :class:`LlamaCppModel`: one llama.cpp model (llama-cpp-python) with LoRA adapters each loaded once
  (``llama_adapter_lora_init``) and set on its context for the generation that needs it
  (``llama_set_adapters_lora``).
- :class:`LlamaCppEngine`: the serving engine of ``t2l serve --engine llama.cpp`` and ``t2l ui --engine
  llama.cpp`` (:class:`~.engine.ServingEngine`): adapters come from the same :class:`~.store.AdapterStore`
  as in the PyTorch engine (ids, verification, the adapter directory), are exported to GGUF once
  (:meth:`~.store.AdapterStore.gguf_path`) and loaded once; requests run one after another on one worker
  thread.
- :class:`LlamaCppChat`: ``t2l chat --engine llama.cpp``.

Prompts are rendered and tokenised exactly as in the PyTorch path (:meth:`BaseModel.chat_prompt`, the base's
own tokenizer), and an answer ends at the same end-of-answer ids (:attr:`BaseModel.end_ids`). Needs
llama-cpp-python (``pip install llama-cpp-python``, or ``T2L_LLAMA_CPP=1 bash scripts/setup.sh``).
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import importlib.util
import itertools
import logging
import os
import queue
import secrets
import tempfile
import threading
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any, Iterator

from ..adapter import LoRAAdapter
from ..base import BaseModel
from ..errors import ConfigError, T2LError
from ..formats.gguf import find_base_gguf, read_base, save_gguf
from .batcher import Event, GenRequest, Row, RowRouter
from .engine import AdapterLoadError, EngineConfig, ServingEngine
from .store import AdapterInfo

__all__ = ["LlamaCppModel", "LlamaCppEngine", "LlamaCppChat", "new_llama", "require_llama_cpp"]

log = logging.getLogger(__name__)


def require_llama_cpp() -> None:
    """Raise a one-line :class:`ConfigError` saying how to install llama-cpp-python when it is missing."""
    if importlib.util.find_spec("llama_cpp") is None:
        raise ConfigError("the llama.cpp engine needs llama-cpp-python, which is not installed; build it once with "
                          "T2L_LLAMA_CPP=1 bash scripts/setup.sh (or pip install llama-cpp-python), or use "
                          "--engine torch")


_LOADING = threading.Lock()


@functools.lru_cache(maxsize=1)
def _has_amx() -> bool:
    import llama_cpp

    return b"AMX_INT8 = 1" in llama_cpp.llama_print_system_info()


@contextlib.contextmanager
def _plain_cpu_buffers() -> Iterator[None]:
    """While a model loads: llama.cpp's model parameters with ``use_extra_bufts`` off, which llama-cpp-python's
    ``Llama`` has no argument for (it reads its defaults from ``llama_model_default_params``)."""
    import llama_cpp.llama_cpp as lib

    default = lib.llama_model_default_params

    def params() -> Any:
        p = default()
        p.use_extra_bufts = False
        return p

    with _LOADING:
        lib.llama_model_default_params = params
        try:
            yield
        finally:
            lib.llama_model_default_params = default


def new_llama(model_path: str | Path, **kwargs: Any) -> Any:
    """``llama_cpp.Llama(model_path, verbose=False, **kwargs)``. On a llama.cpp built with AMX (a native build on
    a recent Xeon) the weights are loaded into plain CPU buffers rather than AMX's: its AMX matrix kernels
    crash with a segmentation fault on the Q4_1 weights of the embedded base (as in llama.cpp issue 20824),
    and LoRA adapters cannot use AMX buffers anyway."""
    from llama_cpp import Llama

    kwargs.setdefault("verbose", False)
    if not _has_amx():
        return Llama(model_path=str(model_path), **kwargs)
    with _plain_cpu_buffers():
        return Llama(model_path=str(model_path), **kwargs)


class LlamaCppModel:
    """The GGUF model ``gguf`` in llama.cpp, with LoRA adapters loaded once each and applied per generation.

    Each generation (:meth:`tokens`) sets its adapter on the context (or none) and reads its whole prompt into
    an emptied KV cache, so nothing of one generation, its adapter's keys and values included, reaches the
    next. Past ``max_adapters`` loaded adapters the least recently used is freed. One thread at a time may
    use it.

    Args:
        gguf: the base model's GGUF file.
        n_ctx: context length (0: the model's own).
        n_threads: CPU threads, for the prompt and for each new token (default: half the cores, as
            llama-cpp-python picks for new tokens: threads on every core collapse when another process
            holds one of them).
        max_adapters: adapters kept loaded.
    """

    def __init__(self, gguf: str | Path, n_ctx: int = 0, n_threads: int | None = None, max_adapters: int = 64):
        n_threads = n_threads or max(1, (os.cpu_count() or 2) // 2)
        self.llm = new_llama(gguf, n_ctx=n_ctx, n_threads=n_threads, n_threads_batch=n_threads)
        self.max_adapters = max(1, max_adapters)
        self._adapters: OrderedDict[str, Any] = OrderedDict()  # key -> llama.cpp adapter handle
        self._active: str | None = None
        self.stats = {"adapters_loaded": 0, "adapters_freed": 0, "load_failures": 0}

    @property
    def n_ctx(self) -> int:
        return int(self.llm.n_ctx())

    def has(self, key: str) -> bool:
        """Whether the adapter ``key`` is loaded."""
        return key in self._adapters

    def load(self, key: str, path: str | Path, name: str) -> None:
        """Load the LoRA GGUF file ``path`` as ``key`` (once; later calls only mark it used). Raises
        :class:`~.engine.AdapterLoadError` naming ``name`` when llama.cpp refuses the file."""
        import llama_cpp

        if key in self._adapters:
            self._adapters.move_to_end(key)
            return
        handle = llama_cpp.llama_adapter_lora_init(self.llm.model, str(path).encode())
        if not handle:
            self.stats["load_failures"] += 1
            raise AdapterLoadError(f"adapter {name!r} could not be loaded into llama.cpp: it refused the GGUF file "
                                   f"{path} (damaged, or made for another base)")
        self._adapters[key] = handle
        self.stats["adapters_loaded"] += 1
        for old in [k for k in self._adapters if k != self._active][: max(0, len(self._adapters) - self.max_adapters)]:
            llama_cpp.llama_adapter_lora_free(self._adapters.pop(old))
            self.stats["adapters_freed"] += 1

    def _apply(self, key: str | None) -> None:
        import llama_cpp

        if key is None:
            rc = llama_cpp.llama_set_adapters_lora(self.llm.ctx, None, 0, None)
        else:
            handles = (llama_cpp.llama_adapter_lora_p_ctypes * 1)(self._adapters[key])
            rc = llama_cpp.llama_set_adapters_lora(self.llm.ctx, handles, 1, (ctypes.c_float * 1)(1.0))
        if rc != 0:
            raise AdapterLoadError(f"llama.cpp could not apply adapter {key!r} (error {rc})")
        self._active = key

    def tokens(self, ids: list[int], key: str | None = None, temperature: float = 0.0, top_p: float = 1.0,
               seed: int = 0) -> Iterator[int]:
        """llama.cpp's next tokens after the prompt ``ids`` under the loaded adapter ``key`` (``None``: the base
        alone): greedy (the argmax of llama.cpp's logits at each step), or with ``temperature > 0`` sampled
        with llama.cpp's sampler (top-p, then temperature) seeded with ``seed``. Ends only when the caller
        stops reading."""
        if key is not None and key not in self._adapters:
            raise KeyError(f"adapter {key!r} is not loaded")
        self._apply(key)
        self.llm.reset()  # the whole prompt is read again under this adapter: no KV entry is reused
        self.llm.set_seed(seed)
        sampled = temperature > 0
        yield from self.llm.generate(ids, temp=temperature if sampled else 0.0, top_p=top_p if sampled else 1.0,
                                     top_k=0, min_p=0.0, typical_p=1.0, repeat_penalty=1.0, reset=True)

    def close(self) -> None:
        """Free the adapters and the model."""
        import llama_cpp

        if self.llm is None:
            return
        self._apply(None)
        for handle in self._adapters.values():
            llama_cpp.llama_adapter_lora_free(handle)
        self._adapters.clear()
        self.llm.close()
        self.llm = None


def _base_gguf(base: BaseModel, base_gguf: str | Path | None) -> Path:
    """The base's GGUF file: ``base_gguf``, else the embedded base's, or the ``.gguf`` it was loaded from; read
    once, so a missing or unreadable file is one line naming it before llama.cpp sees it."""
    path = Path(base_gguf) if base_gguf is not None else find_base_gguf(base.spec)
    read_base(path)
    return path


class LlamaCppEngine(ServingEngine):
    """The llama.cpp serving engine (``--engine llama.cpp``): the base's GGUF file in llama.cpp.

    An adapter is generated through the same :class:`~.store.AdapterStore` as in the PyTorch engine, exported
    to GGUF once (beside its PEFT files when the store wrote them) and loaded into llama.cpp once, when a
    request first resolves it (:meth:`adapter`), so a file llama.cpp refuses is an
    :class:`~.engine.AdapterLoadError` before the request starts. One worker thread runs the requests one
    after another, in the order they came, each with its own adapter set on the context; their tokens go
    through the same :class:`~.batcher.RowRouter` as the PyTorch engine's (stop strings, ``max_tokens``,
    usage, finish reasons), and a client that goes away stops its generation at the next token.

    PyTorch (which only generates the adapters here) runs on one thread in a process with this engine: PyTorch
    and llama.cpp share one OpenMP runtime (``libgomp.so.1``), and once PyTorch has run a team of threads on
    another thread, the runtime counts more threads than cores and stops llama.cpp's threads from spinning
    between steps, which makes decoding 2-3 times slower. :func:`~.engine.load_engine` sets that before
    loading anything; constructed directly, the engine sets it (and gives PyTorch its threads back on
    :meth:`close`), warning if PyTorch had more.

    Args:
        base: the loaded base (its tokenizer, chat template and end-of-answer ids are used).
        generator: the generator (its base is ``base``).
        config: the engine settings; the llama.cpp context holds ``max_prompt_tokens + max_tokens_limit``
            tokens (at most the model's context).
        base_gguf: the base's GGUF file (default: the embedded base's, or the ``.gguf`` it was loaded from).
        n_threads: llama.cpp's CPU threads (default: half the cores).
    """

    kind = "llama.cpp"

    def __init__(self, base: BaseModel, generator: Any, config: EngineConfig | None = None,
                 base_gguf: str | Path | None = None, n_threads: int | None = None):
        import torch

        require_llama_cpp()
        self._torch_threads = torch.get_num_threads()
        if self._torch_threads > 1:
            log.warning("PyTorch had %d threads; the llama.cpp engine sets it to 1 (llama.cpp decodes 2-3x slower "
                        "beside a multi-threaded PyTorch); call torch.set_num_threads(1) before loading the base "
                        "to avoid it entirely", self._torch_threads)
            torch.set_num_threads(1)
        super().__init__(base, generator, config)
        self.gguf = _base_gguf(base, base_gguf)
        cfg = self.config
        n_ctx = cfg.max_prompt_tokens + cfg.max_tokens_limit
        self.model = LlamaCppModel(self.gguf, min(n_ctx, self.max_context or n_ctx), n_threads, cfg.cache_size)
        self.eos_ids = set(base.end_ids)
        self._lock = threading.Lock()  # held around every use of the llama.cpp model
        self._queue: queue.Queue[GenRequest | None] = queue.Queue()
        self._ids = itertools.count(1)
        self._stats_lock = threading.Lock()
        self._stats = {"batches": 0, "rows": 0, "max_batch_size": 0, "tokens": 0, "busy_s": 0.0}
        self._stopped = False
        self._thread = threading.Thread(target=self._loop, name="t2l-llama-cpp", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ adapters
    def _prepare(self, adapter: LoRAAdapter, info: AdapterInfo) -> None:
        if self.model.has(adapter.digest()):
            return
        try:
            self.store.gguf_path(adapter, info, self.gguf)  # exported outside the model's lock
        except T2LError as e:  # a module llama.cpp has no tensor for, ...
            raise AdapterLoadError(f"adapter {info.id!r} cannot be exported for llama.cpp: {e}") from None
        with self._lock:
            self._load(adapter, info)

    def _load(self, adapter: LoRAAdapter | None, info: AdapterInfo | None) -> str | None:
        """The key of ``adapter`` in llama.cpp, loaded (and exported) if it is not; the model's lock held."""
        if adapter is None:
            return None
        key = adapter.digest()
        if not self.model.has(key):
            name = info.id if info is not None else adapter.description or key[:16]
            self.model.load(key, self.store.gguf_path(adapter, info, self.gguf), name)
        return key

    # ------------------------------------------------------------------ generation
    def _run(self, req: GenRequest) -> None:
        if self._stopped:
            raise RuntimeError("the engine is stopped")
        self._queue.put(req)

    def _loop(self) -> None:
        while True:
            req = self._queue.get()
            if req is None:
                return
            if not req.cancelled.is_set():  # a client that went away before its turn is not served
                self._generate(req)

    def _generate(self, req: GenRequest) -> None:
        row = Row(req)
        router = RowRouter([row], self.base.tokenizer, self.eos_ids, next(self._ids))
        with self._stats_lock:
            s = self._stats
            s["batches"] += 1
            s["rows"] += 1
            s["max_batch_size"] = 1
        t0 = time.perf_counter()
        tokens = None
        try:
            if len(req.prompt_ids) + req.max_tokens > self.model.n_ctx:
                raise ConfigError(f"the prompt ({len(req.prompt_ids)} tokens) and max_tokens {req.max_tokens} do "
                                  f"not fit llama.cpp's context of {self.model.n_ctx} tokens; shorten the prompt "
                                  "or lower max_tokens")
            seed = secrets.randbits(31) if req.temperature > 0 else 0
            with self._lock:
                key = self._load(req.adapter, None)
                tokens = self.model.tokens(req.prompt_ids, key, req.temperature, req.top_p, seed)
            while True:
                with self._lock:
                    tok = next(tokens, None)
                if tok is None or router.step(row, int(tok)):
                    break
            if row.finish is None:  # the model stopped giving tokens
                router.finish(row, "length" if len(row.ids) >= req.max_tokens else "stop")
        except Exception as e:  # noqa: BLE001 - reported to the request; the worker goes on
            if not isinstance(e, AdapterLoadError):
                log.exception("llama.cpp generation failed")
            if row.finish is None:
                row.finish = "error"
                req.sink(Event("error", error=e))
        finally:
            if tokens is not None:
                with self._lock:
                    tokens.close()
            with self._stats_lock:
                self._stats["tokens"] += len(row.ids)
                self._stats["busy_s"] += time.perf_counter() - t0

    def generation_stats(self) -> dict[str, Any]:
        with self._stats_lock:
            return {**self._stats, **self.model.stats}

    def close(self) -> None:
        if not self._stopped:
            self._stopped = True
            self._queue.put(None)
            self._thread.join(timeout=60)
            if not self._thread.is_alive():  # else a generation still runs: its model is left to the process
                with self._lock:
                    self.model.close()
            import torch

            torch.set_num_threads(self._torch_threads)
        super().close()


class LlamaCppChat:
    """Streams chat replies from llama.cpp for ``base`` (loaded with :func:`~text2lora.load_base`), with or
    without a generated adapter (``t2l chat --engine llama.cpp``).

    Args:
        base: the loaded base (its tokenizer, chat template and end-of-answer ids are used).
        base_gguf: the base's GGUF file; default: the embedded base's file, or the ``.gguf`` it was loaded
            from (:func:`~text2lora.formats.gguf.find_base_gguf`).
        n_threads: CPU threads for llama.cpp (default: half the cores).
        n_ctx: context length (0: the model's own).
    """

    def __init__(self, base: BaseModel, base_gguf: str | Path | None = None, n_threads: int | None = None,
                 n_ctx: int = 0):
        require_llama_cpp()
        self.base = base
        self.gguf = _base_gguf(base, base_gguf)
        self.model = LlamaCppModel(self.gguf, n_ctx, n_threads, max_adapters=8)
        self._tmp = tempfile.TemporaryDirectory(prefix="t2l-llama-cpp-")  # the adapter files written here

    def close(self) -> None:
        """Free the model and delete the adapter files this object wrote."""
        self.model.close()
        self._tmp.cleanup()

    def __enter__(self) -> "LlamaCppChat":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _key(self, adapter: LoRAAdapter | None) -> str | None:
        if adapter is None:
            return None
        key = adapter.digest()
        if not self.model.has(key):
            path = Path(self._tmp.name) / f"{key[:32]}.gguf"
            if not path.exists():
                save_gguf(adapter, path, base_gguf=self.gguf)
            self.model.load(key, path, adapter.description or key[:16])
        return key

    def stream(self, messages: list[dict[str, str]] | str, adapter: LoRAAdapter | None = None,
               max_new_tokens: int = 256, temperature: float = 0.0, seed: int = 0) -> Iterator[str]:
        """Yield the reply to ``messages`` piece by piece (greedy unless ``temperature > 0``, then plain
        temperature sampling, as the PyTorch path does)."""
        tok = self.base.tokenizer
        ids = tok(self.base.chat_prompt(messages), add_special_tokens=False)["input_ids"]
        if len(ids) + max_new_tokens > self.model.n_ctx:
            raise ConfigError(f"the conversation ({len(ids)} tokens) and --max-new-tokens {max_new_tokens} do not fit "
                              f"llama.cpp's context of {self.model.n_ctx} tokens; start a new chat or lower "
                              "--max-new-tokens")
        end = set(self.base.end_ids)
        out: list[int] = []
        sent = ""
        tokens = self.model.tokens(ids, self._key(adapter), temperature, seed=seed)
        try:
            for token in tokens:
                if token in end:
                    break
                out.append(int(token))
                text = tok.decode(out, skip_special_tokens=True)
                if not text.endswith("\ufffd") and text.startswith(sent) and len(text) > len(sent):
                    yield text[len(sent):]
                    sent = text
                if len(out) >= max_new_tokens:
                    break
        finally:
            tokens.close()
        text = tok.decode(out, skip_special_tokens=True)
        if text.startswith(sent) and len(text) > len(sent):
            yield text[len(sent):]
