"""text2lora: Text-to-LoRA hypernetworks that turn a task description into a LoRA adapter.

Public API::

    import text2lora as t2l
    base = t2l.load_base()                            # the embedded default, t2l.DEFAULT_BASE
    gen = t2l.TextToLoRA.from_pretrained()            # shipped default generator
    adapter = gen.generate("Answer math word problems step by step.")
    adapter.save("my_lora")                           # a standard PEFT adapter directory
    with t2l.apply_adapters(base.model, [adapter]):
        logits = base.model(input_ids).logits
"""

from typing import TYPE_CHECKING, Any

from ._version import __version__

# Public names -> the module that defines them, imported on first use: ``import text2lora.cli`` (the ``t2l``
# command) starts without torch, so Ctrl-C during start-up reaches the CLI's handler and ``--help`` is quick.
_LAZY = {
    "VLLM_RANKS": "adapter", "AdapterBatch": "adapter", "LoRAAdapter": "adapter",
    "DEFAULT_BASE": "embedded", "BaseModel": "base", "BaseSpec": "base", "ModuleSpec": "base", "load_base": "base",
    "EncoderSpec": "encoders", "load_encoder": "encoders",
    "T2LError": "errors",
    "TextToLoRA": "generator",
    "HyperConfig": "hypernet",
    "apply_adapters": "inject",
}

__all__ = [
    "__version__", "load_base", "BaseModel", "BaseSpec", "ModuleSpec", "DEFAULT_BASE",
    "TextToLoRA", "HyperConfig", "EncoderSpec", "load_encoder",
    "LoRAAdapter", "AdapterBatch", "VLLM_RANKS", "apply_adapters", "T2LError",
]

if TYPE_CHECKING:
    from .adapter import VLLM_RANKS, AdapterBatch, LoRAAdapter
    from .base import BaseModel, BaseSpec, ModuleSpec, load_base
    from .embedded import DEFAULT_BASE
    from .encoders import EncoderSpec, load_encoder
    from .errors import T2LError
    from .generator import TextToLoRA
    from .hypernet import HyperConfig
    from .inject import apply_adapters


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
