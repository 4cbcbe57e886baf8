"""On-disk adapter formats other than PEFT (which lives in ``adapter.py``).

The exporters read a :class:`~text2lora.adapter.LoRAAdapter`; nothing below this package knows they exist.
:func:`save_adapter` writes an adapter in a format named by string (``t2l generate/export --format``).

- ``gguf``: the LoRA-adapter GGUF file that llama.cpp (``--lora``), llama-cpp-python
  (``Llama(..., lora_path=...)``), Ollama (``ADAPTER``) and LM Studio load on top of the base
  model's own GGUF file (:mod:`text2lora.formats.gguf`).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import AdapterError

if TYPE_CHECKING:
    from ..adapter import LoRAAdapter

FORMATS = ("peft", "gguf")
"""Names accepted by :func:`save_adapter` and ``t2l generate/export --format``."""

__all__ = ["FORMATS", "save_adapter"]


def save_adapter(adapter: "LoRAAdapter", path: str | Path, format: str = "peft", *,
                 base_gguf: str | Path | None = None, force: bool = False) -> Path:
    """Write ``adapter`` to ``path`` as a PEFT directory (``peft``) or a llama.cpp adapter file (``gguf``, on the
    base's GGUF file ``base_gguf``: by default the embedded base's, or the ``.gguf`` the base was loaded from)."""
    if format == "peft":
        return adapter.save(path, force=force)
    if format == "gguf":
        from .gguf import save_gguf

        return save_gguf(adapter, path, base_gguf=base_gguf, force=force)
    raise AdapterError(f"unknown adapter format {format!r}; use 'peft' (a PEFT directory) or 'gguf' (a llama.cpp "
                       "adapter file)")
