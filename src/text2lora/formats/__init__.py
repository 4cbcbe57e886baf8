"""On-disk adapter formats other than PEFT (which lives in ``adapter.py``).

``LoRAAdapter.save(path, format=...)`` dispatches here; nothing else needs to know the formats.

- ``gguf``: the LoRA-adapter GGUF file that llama.cpp (``--lora``), llama-cpp-python
  (``Llama(..., lora_path=...)``), Ollama (``ADAPTER``) and LM Studio load on top of the base
  model's own GGUF file.
"""

FORMATS = ("peft", "gguf")
"""Names accepted by ``LoRAAdapter.save(format=...)`` and ``t2l generate/export --format``."""

__all__ = ["FORMATS"]
