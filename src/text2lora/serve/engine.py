"""The serving engines that ``t2l serve`` and ``t2l ui`` run on.

:class:`ServingEngine` is what the apps use: the base model's tokenizer and limits, the generator, the
:class:`~.store.AdapterStore` of generated adapters, and ``submit`` / ``stream`` of one generation whose
tokens are reported through :class:`~.batcher.RowRouter` (stop strings, ``max_tokens``, usage counts and
finish reasons mean the same in every engine). Two engines implement the generation:

- :class:`Engine` (``--engine torch``): PyTorch, requests with different adapters in one batched forward
  pass (:class:`~.batcher.Batcher`);
- :class:`~.llama_cpp.LlamaCppEngine` (``--engine llama.cpp``): llama.cpp on the base's GGUF file, each
  adapter exported to GGUF and loaded once, requests run one after another.
"""

from __future__ import annotations

import queue
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from ..adapter import LoRAAdapter
from ..base import BaseModel
from ..errors import ConfigError, T2LError
from .batcher import Batcher, Event, GenRequest
from .store import AdapterInfo, AdapterStore

__all__ = ["ENGINES", "EngineConfig", "ServingEngine", "Engine", "AdapterLoadError", "load_engine",
           "longest_token_bytes"]

ENGINES = ("torch", "llama.cpp")
"""The engines ``--engine`` names."""


class AdapterLoadError(T2LError):
    """An engine could not load an adapter (llama.cpp refused its GGUF file); the server answers 422 naming the
    adapter and goes on serving the others."""


@dataclass
class EngineConfig:
    """Settings of the serving engine. Each field is the ``t2l serve`` / ``t2l ui`` flag of the same name
    (``max_batch``: ``--max-batch``), which takes its default and help from here."""

    max_batch: int = 16
    """most requests in one forward pass."""
    batch_wait_ms: float = 25.0
    """how long a request waits for others to share its batch (debounced; at most 4x after the first)."""
    cache_size: int = 64
    """adapters kept in memory, least recently used dropped first."""
    adapter_dir: str | None = None
    """also write each generated adapter to DIR/<id>/ as a PEFT directory (vLLM's filesystem LoRA resolver
    layout)."""
    max_tokens_limit: int = 1024
    """largest max_tokens a request may ask for."""
    max_prompt_tokens: int = 2048
    """longest prompt in tokens a request may send; longer ones get 400 context_length_exceeded. Bounds the
    compute and memory one request can take."""
    adapter_dir_quota_mb: float | None = 2048.0
    """most megabytes of adapter directories this server writes to the adapter directory; the least recently
    used of them are deleted first (0 or None: no limit)."""
    default_max_tokens: int = 256
    """max_tokens when a request gives none."""

    def __post_init__(self) -> None:
        if self.max_batch < 1:
            raise ConfigError(f"--max-batch must be >= 1, got {self.max_batch}")
        if self.batch_wait_ms < 0:
            raise ConfigError(f"--batch-wait-ms must be >= 0, got {self.batch_wait_ms}")
        if self.cache_size < 1:
            raise ConfigError(f"--cache-size must be >= 1, got {self.cache_size}")
        if self.max_tokens_limit < 1:
            raise ConfigError(f"--max-tokens-limit must be >= 1, got {self.max_tokens_limit}")
        if self.max_prompt_tokens < 1:
            raise ConfigError(f"--max-prompt-tokens must be >= 1, got {self.max_prompt_tokens}")
        if self.adapter_dir_quota_mb is not None and self.adapter_dir_quota_mb < 0:
            raise ConfigError(f"--adapter-dir-quota-mb must be >= 0 (0 = no limit), got {self.adapter_dir_quota_mb}")
        self.default_max_tokens = min(self.default_max_tokens, self.max_tokens_limit)


class ServingEngine:
    """The engine interface: adapters by description or id, prompt tokens, one generation at a time submitted
    (``submit``, events to a sink) or streamed (``stream``), counters and ``close``. Subclasses run the
    generations: :meth:`_run` takes a :class:`GenRequest` and reports its events through
    :class:`~.batcher.RowRouter`; :meth:`generation_stats` gives their counters.

    Example::

        engine = Engine(base, TextToLoRA.from_pretrained(ckpt, base=base))
        ad, info, hit = engine.adapter("Answer with yes or no.")
        text = "".join(ev.text for ev in engine.stream(engine.chat_ids("Is water wet?"), ad))
    """

    kind = ""
    """The ``--engine`` name."""

    def __init__(self, base: BaseModel, generator: Any, config: EngineConfig | None = None):
        self.base, self.gen = base, generator
        self.config = config or EngineConfig()
        self.model_lock = threading.Lock()
        # a base-lm description encoder runs the base model: it must not overlap a batch (adapter hooks)
        shares_model = getattr(getattr(generator, "encoder_spec", None), "kind", "") == "base-lm"
        self.store = AdapterStore(generator, self.config.cache_size, self.config.adapter_dir,
                                  gen_lock=self.model_lock if shares_model else None,
                                  disk_quota_mb=self.config.adapter_dir_quota_mb or None,
                                  reserved=("base", base.spec.name))
        # a prompt longer than this many characters is over max_prompt_tokens whatever its text (no token
        # stands for more bytes than the longest vocabulary entry, no character for less than a byte), so it
        # is refused before tokenising; None when the tokenizer does not list its vocabulary
        longest = longest_token_bytes(base.tokenizer)
        self.max_prompt_chars = self.config.max_prompt_tokens * longest if longest else None
        cfg = getattr(base.model, "config", None)
        self.max_context = int(getattr(cfg, "max_position_embeddings", 0) or 0) or None

    @property
    def base_name(self) -> str:
        return self.base.spec.name

    def adapter(self, description: str | None = None, adapter_id: str | None = None,
                name: str | None = None) -> tuple[LoRAAdapter, AdapterInfo, bool]:
        """An adapter by description (generated here with the loaded generator, on first use) or by id (what
        is registered under it), ready for this engine: ``(adapter, info, cache_hit)``. Raises
        :class:`AdapterLoadError` when the engine cannot load it."""
        if description is None:
            adapter, info, hit = self.store.by_id(adapter_id or "")
        else:
            adapter, info, hit = self.store.get(description, name=name)
        self._prepare(adapter, info)
        return adapter, info, hit

    def _prepare(self, adapter: LoRAAdapter, info: AdapterInfo) -> None:
        """Make ``adapter`` ready to run (the PyTorch engine needs nothing)."""

    def chat_ids(self, messages: list[dict[str, str]] | str) -> list[int]:
        """Token ids of a chat prompt (the tokenizer's chat template, generation prompt added)."""
        prompt = self.base.chat_prompt(messages)
        return list(self.base.tokenizer(prompt, add_special_tokens=False)["input_ids"])

    def completion_ids(self, prompt: str) -> list[int]:
        """Token ids of a raw completion prompt."""
        return list(self.base.tokenizer(prompt)["input_ids"])

    def submit(self, prompt_ids: list[int], adapter: LoRAAdapter | None, sink: Callable[[Event], None],
               max_tokens: int | None = None, temperature: float = 0.0, top_p: float = 1.0,
               stop: list[str] | None = None) -> GenRequest:
        """Queue one generation; events go to ``sink`` (called from the engine's worker thread). Setting the
        returned request's ``cancelled`` stops it."""
        req = GenRequest(list(prompt_ids), adapter, sink, max_tokens or self.config.default_max_tokens,
                         temperature, top_p, list(stop or []))
        self._run(req)
        return req

    def _run(self, req: GenRequest) -> None:
        raise NotImplementedError

    def stream(self, prompt_ids: list[int], adapter: LoRAAdapter | None, **kwargs: Any) -> Iterator[Event]:
        """Blocking iterator over the events of one generation (for threads, e.g. the web UI)."""
        q: queue.Queue[Event] = queue.Queue()
        req = self.submit(prompt_ids, adapter, q.put, **kwargs)
        try:
            while True:
                ev = q.get()
                if ev.kind == "error":
                    raise ev.error or RuntimeError("generation failed")
                yield ev
                if ev.kind == "done":
                    return
        finally:
            req.cancelled.set()

    def generation_stats(self) -> dict[str, Any]:
        """Counters of the generations run: ``batches``, ``rows``, ``max_batch_size``, ``tokens``, ``busy_s``."""
        raise NotImplementedError

    def stats(self) -> dict[str, Any]:
        return {"engine": self.kind, "batcher": self.generation_stats(), "adapters": self.store.snapshot(),
                "base_model": self.base_name}

    def close(self) -> None:
        """Stop the worker once the generations in progress are done; delete the files only it needed."""
        self.store.close()


class Engine(ServingEngine):
    """The PyTorch engine (``--engine torch``): requests run in dynamic batches, one adapter per row
    (:class:`~.batcher.Batcher`)."""

    kind = "torch"

    def __init__(self, base: BaseModel, generator: Any, config: EngineConfig | None = None):
        super().__init__(base, generator, config)
        self.batcher = Batcher(base, self.config.max_batch, self.config.batch_wait_ms, lock=self.model_lock)

    def _run(self, req: GenRequest) -> None:
        self.batcher.submit(req)

    def generation_stats(self) -> dict[str, Any]:
        return self.batcher.snapshot()

    def close(self) -> None:
        self.batcher.close()
        super().close()


def longest_token_bytes(tokenizer: Any) -> int | None:
    """An upper bound on the UTF-8 bytes of text one token of ``tokenizer`` stands for: the longest
    vocabulary entry in UTF-8 bytes (byte-level and SentencePiece entries spell a byte or a space with at
    least one byte, so this never undercounts). ``None`` when the tokenizer has no ``get_vocab``."""
    try:
        vocab = tokenizer.get_vocab()
    except (AttributeError, NotImplementedError, TypeError):
        return None
    return max((len(t.encode("utf-8", "surrogatepass")) for t in vocab), default=0) or None


def load_engine(model: str | None = None, base: str | None = None, config: EngineConfig | None = None,
                device: str | None = None, engine: str = "torch", base_gguf: str | None = None,
                threads: int | None = None) -> ServingEngine:
    """Load a generator checkpoint (``None`` = the shipped default) and its base model into a serving engine:
    ``engine="torch"`` (:class:`Engine`) or ``"llama.cpp"`` (:class:`~.llama_cpp.LlamaCppEngine`, on
    ``base_gguf``: by default the embedded base's GGUF file, or the ``.gguf`` file ``base`` names; ``threads``
    are llama.cpp's CPU threads)."""
    from ..base import load_base
    from ..errors import CheckpointError
    from ..generator import DEFAULT_GENERATOR_DIR, TextToLoRA, read_checkpoint_config

    if engine not in ENGINES:
        raise ConfigError(f"unknown engine {engine!r}; use one of {', '.join(ENGINES)}")
    if engine == "llama.cpp":
        import torch

        from .llama_cpp import require_llama_cpp

        require_llama_cpp()  # before minutes of loading
        torch.set_num_threads(1)  # before any torch work: see LlamaCppEngine
    ckpt = Path(model) if model else DEFAULT_GENERATOR_DIR
    cfg_path = ckpt / "config.json"
    if not cfg_path.is_file():
        TextToLoRA.from_pretrained(model)  # raises the checkpoint error with its hint
        raise CheckpointError(f"{ckpt} is not a generator checkpoint")
    cfg = read_checkpoint_config(cfg_path)
    spec = cfg["base"]
    modules = [str(m.get("name")) for m in spec["modules"]] or ["q_proj", "v_proj"]
    b = load_base(base or spec.get("name"), target_modules=modules, device=device)
    gen = TextToLoRA.from_pretrained(model, base=b, device=b.device)
    if engine == "llama.cpp":
        from .llama_cpp import LlamaCppEngine

        return LlamaCppEngine(b, gen, config, base_gguf=base_gguf, n_threads=threads)
    return Engine(b, gen, config)
