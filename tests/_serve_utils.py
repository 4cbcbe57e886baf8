"""Helpers for the serving tests: a tiny base model and a generator whose adapters are not zero, the engines
the server tests run on (``engine_kind``: PyTorch, and llama.cpp when llama-cpp-python is installed), and
each engine's oracle of a greedy reply (:func:`greedy_reply`)."""

from __future__ import annotations

import contextlib
import importlib.util
import socket
import tempfile
from pathlib import Path

import pytest
import torch

needs_llama_cpp = pytest.mark.skipif(importlib.util.find_spec("llama_cpp") is None,
                                     reason="llama-cpp-python is not installed (pip install llama-cpp-python, or "
                                            "T2L_LLAMA_CPP=1 bash scripts/setup.sh)")
ENGINES = [pytest.param("torch"), pytest.param("llama.cpp", marks=needs_llama_cpp)]
"""The engines the server tests run on, as parameters (the llama.cpp ones skipped without the package)."""


@pytest.fixture(scope="module", params=ENGINES)
def engine_kind(request) -> str:
    """The ``--engine`` a module's server runs (each test using it runs once per engine)."""
    return request.param


def tiny_generator(root: Path, scale: float = 2.0, seed: int = 0, context: int | None = None):
    """Write a tiny llama base to ``root/base`` and a fresh generator with random heads to ``root/gen``.

    Returns ``(base, generator)``. Random head weights make each description's adapter
    different and non-zero (a fresh generator's adapters change nothing). ``context`` raises
    the model's ``max_position_embeddings`` (RoPE needs no new weights), e.g. for DSPy's long prompts.
    """
    import json

    from text2lora import TextToLoRA, load_base
    from text2lora.testing import save_tiny_base

    save_tiny_base(root / "base")
    if context is not None:
        cfg_path = root / "base" / "config.json"
        cfg = json.loads(cfg_path.read_text())
        cfg["max_position_embeddings"] = context
        cfg_path.write_text(json.dumps(cfg))
    base = load_base(str(root / "base"), device="cpu")
    gen = TextToLoRA.init(base, latent_dim=16, head_in=32)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in gen.hypernet.heads.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * scale)
    gen.save_pretrained(root / "gen")
    gen.eval()
    return base, gen


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def base_gguf(base) -> Path:
    """The tiny base as a GGUF file llama.cpp runs, written once beside its directory (or into a temporary one
    for a base built in memory)."""
    name = Path(base.spec.name)
    path = name.with_suffix(".gguf") if name.is_dir() else Path(tempfile.mkdtemp(prefix="t2l-test-")) / "base.gguf"
    if not path.is_file():
        from text2lora.testing import save_tiny_gguf

        save_tiny_gguf(base.model, base.tokenizer, path)
    return path


def make_engine(kind: str, base, gen, config=None):
    """A serving engine of ``kind`` (``torch`` or ``llama.cpp``, on :func:`base_gguf`) over ``base`` and ``gen``."""
    if kind == "llama.cpp":
        from text2lora.serve.llama_cpp import LlamaCppEngine

        return LlamaCppEngine(base, gen, config, base_gguf=base_gguf(base), n_threads=1)
    from text2lora.serve.engine import Engine

    return Engine(base, gen, config)


def _reply_text(base, tokens: list[int], n: int) -> str:
    """The reply ``tokens`` spell: up to the first end-of-answer token, at most ``n`` tokens."""
    end = set(base.end_ids)
    cut = next((i for i, t in enumerate(tokens) if t in end), len(tokens))
    return base.tokenizer.decode(tokens[:min(cut, n)], skip_special_tokens=True)


def llama_cpp_greedy(gguf, ids: list[int], adapter, n: int, n_threads: int = 1) -> list[int]:
    """llama.cpp's own greedy tokens after ``ids``: the argmax of its logits, one step at a time, with
    ``adapter`` exported to GGUF and loaded by ``Llama(lora_path=...)`` in a model of its own."""
    from text2lora.formats.gguf import save_gguf
    from text2lora.serve.llama_cpp import new_llama

    with tempfile.TemporaryDirectory() as tmp:
        lora = str(save_gguf(adapter, Path(tmp) / "adapter.gguf", base_gguf=gguf)) if adapter is not None else None
        llm = new_llama(gguf, lora_path=lora, n_ctx=len(ids) + n + 8, n_threads=n_threads, n_threads_batch=n_threads,
                        logits_all=True)
        try:
            out: list[int] = []
            llm.eval(ids)
            for _ in range(n):
                out.append(int(llm.scores[llm.n_tokens - 1].argmax()))
                llm.eval([out[-1]])
            return out
        finally:
            llm.close()


def greedy_reply(engine, ids: list[int], adapter, n: int) -> str:
    """The oracle of a greedy reply of ``n`` tokens at most to the prompt ``ids`` under ``adapter`` (or none),
    computed apart from the engine: for PyTorch, plain ``transformers`` ``generate`` with the adapter attached
    (holding the model lock the engine's batcher holds); for llama.cpp, :func:`llama_cpp_greedy`."""
    base = engine.base
    if engine.kind == "llama.cpp":
        return _reply_text(base, llama_cpp_greedy(engine.gguf, ids, adapter, n), n)
    from text2lora.inject import apply_adapters

    applied = apply_adapters(base.model, adapter, base.spec) if adapter is not None else contextlib.nullcontext()
    with engine.model_lock, torch.inference_mode(), applied:
        out = base.model.generate(torch.tensor([ids], device=base.device), max_new_tokens=n, do_sample=False,
                                  pad_token_id=base.tokenizer.pad_token_id)[0, len(ids):].tolist()
    return _reply_text(base, out, n)
