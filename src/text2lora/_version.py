"""The version of text2lora: the one place it is written (packaging reads it, ``text2lora.__version__`` is it)."""

__version__ = "0.1.0"
