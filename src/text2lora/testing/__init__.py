"""Helpers for the tests of text2lora and of code built on it; nothing here downloads anything.

:mod:`text2lora.testing.tiny`: tiny random models of each supported family, built from small configs, and
an in-memory tokenizer with a ChatML template; a tiny Llama as a GGUF file llama.cpp runs. Nothing in the library imports this package.
"""

from .tiny import TINY_FAMILIES, save_tiny_base, save_tiny_gguf, tiny_model, tiny_tokenizer

__all__ = ["TINY_FAMILIES", "tiny_tokenizer", "tiny_model", "save_tiny_base", "save_tiny_gguf"]
