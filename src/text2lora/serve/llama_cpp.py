"""Chat through llama.cpp: the base model's GGUF file with a generated adapter written as a GGUF LoRA.

The faster CPU path of ``t2l chat --engine llama.cpp``. The prompt is rendered and tokenised exactly as the
PyTorch path does (:meth:`BaseModel.chat_prompt`, the base's own tokenizer), the adapter is written with
:func:`~text2lora.formats.gguf.save_gguf` into a private temporary directory, and llama-cpp-python
(``pip install llama-cpp-python``, or ``T2L_LLAMA_CPP=1 bash scripts/setup.sh``) decodes. An answer ends
at the same end-of-answer ids as everywhere else (:attr:`BaseModel.end_ids`).
"""

from __future__ import annotations

import importlib.util
import tempfile
from collections import OrderedDict
from pathlib import Path
from typing import Any, Iterator

from ..adapter import LoRAAdapter
from ..base import BaseModel
from ..errors import ConfigError
from ..formats.gguf import find_base_gguf, read_base, save_gguf

__all__ = ["LlamaCppChat", "require_llama_cpp"]


def require_llama_cpp() -> None:
    """Raise a one-line :class:`ConfigError` saying how to install llama-cpp-python when it is missing."""
    if importlib.util.find_spec("llama_cpp") is None:
        raise ConfigError("the llama.cpp engine needs llama-cpp-python, which is not installed; build it once with "
                          "T2L_LLAMA_CPP=1 bash scripts/setup.sh (or pip install llama-cpp-python), or use "
                          "--engine torch")


class LlamaCppChat:
    """Streams chat replies from llama.cpp for ``base`` (loaded with :func:`~text2lora.load_base`), with or
    without a generated adapter.

    Args:
        base: the loaded base (its tokenizer, chat template and end-of-answer ids are used).
        base_gguf: the base's GGUF file; default: the embedded base's file, or the ``.gguf`` it was loaded
            from (:func:`~text2lora.formats.gguf.find_base_gguf`).
        n_threads: CPU threads for llama.cpp (default: what llama.cpp picks).
        n_ctx: context length (0: the model's own).
    """

    def __init__(self, base: BaseModel, base_gguf: str | Path | None = None, n_threads: int | None = None,
                 n_ctx: int = 0):
        require_llama_cpp()
        self.base = base
        self.gguf = Path(base_gguf) if base_gguf is not None else find_base_gguf(base.spec)
        read_base(self.gguf)  # a missing or unreadable file: one line naming it, before llama.cpp sees it
        self.n_threads, self.n_ctx = n_threads, n_ctx
        self._tmp = tempfile.TemporaryDirectory(prefix="t2l-llama-cpp-")
        # adapter digest (None: no adapter) -> Llama, the two most recently used: the web UI alternates
        # between the base and one adapter
        self._loaded: OrderedDict[str | None, Any] = OrderedDict()

    def close(self) -> None:
        """Free the model and delete the adapter files this object wrote."""
        self._loaded.clear()
        self._tmp.cleanup()

    def __enter__(self) -> "LlamaCppChat":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _llm(self, adapter: LoRAAdapter | None) -> Any:
        from llama_cpp import Llama

        key = adapter.digest() if adapter is not None else None
        if key in self._loaded:
            self._loaded.move_to_end(key)
            return self._loaded[key]
        lora = None
        if adapter is not None:
            lora = Path(self._tmp.name) / f"{key}.gguf"
            if not lora.exists():
                save_gguf(adapter, lora, base_gguf=self.gguf)
        while len(self._loaded) >= 2:  # free the least recently used model before loading another
            self._loaded.popitem(last=False)
        llm = Llama(model_path=str(self.gguf), lora_path=str(lora) if lora else None, n_ctx=self.n_ctx,
                    n_threads=self.n_threads, verbose=False)
        self._loaded[key] = llm
        return llm

    def stream(self, messages: list[dict[str, str]] | str, adapter: LoRAAdapter | None = None,
               max_new_tokens: int = 256, temperature: float = 0.0, seed: int = 0) -> Iterator[str]:
        """Yield the reply to ``messages`` piece by piece (greedy unless ``temperature > 0``, then plain
        temperature sampling, as the PyTorch path does)."""
        tok = self.base.tokenizer
        ids = tok(self.base.chat_prompt(messages), add_special_tokens=False)["input_ids"]
        llm = self._llm(adapter)
        if len(ids) + max_new_tokens > llm.n_ctx():
            raise ConfigError(f"the conversation ({len(ids)} tokens) and --max-new-tokens {max_new_tokens} do not fit "
                              f"llama.cpp's context of {llm.n_ctx()} tokens; start a new chat or lower "
                              "--max-new-tokens")
        llm.set_seed(seed)
        end = set(self.base.end_ids)
        out: list[int] = []
        sent = ""
        for token in llm.generate(ids, temp=temperature, top_k=0, top_p=1.0, min_p=0.0, repeat_penalty=1.0,
                                  reset=True):
            if token in end:
                break
            out.append(int(token))
            text = tok.decode(out, skip_special_tokens=True)
            if not text.endswith("\ufffd") and text.startswith(sent) and len(text) > len(sent):
                yield text[len(sent):]
                sent = text
            if len(out) >= max_new_tokens:
                break
        text = tok.decode(out, skip_special_tokens=True)
        if text.startswith(sent) and len(text) > len(sent):
            yield text[len(sent):]
