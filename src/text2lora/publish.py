"""Publish a generator or an adapter on the Hugging Face Hub: save it into a folder with a model card, and
hand the folder to :func:`text2lora.hub.upload`.

This sits above the generator, the adapter and the exporters (an adapter may go up with its llama.cpp GGUF
file too), so that none of them needs to know about publishing::

    from text2lora.publish import push_adapter, push_generator
    push_generator(gen, "org/my-generator")
    push_adapter(gen.generate("Answer yes or no."), "org/yes-no-lora", gguf=True)
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from ._io import atomic_write_text
from .adapter import LoRAAdapter
from .embedded import upstream_id
from .formats.gguf import save_gguf
from .generator import TextToLoRA
from .hub import adapter_card, generator_card, upload

__all__ = ["push_generator", "push_adapter", "prepare_generator_folder", "prepare_adapter_folder"]


def prepare_generator_folder(gen: TextToLoRA, folder: str | Path, repo_id: str | None = None) -> Path:
    """Write what :func:`push_generator` uploads: the checkpoint plus its model card (README.md)."""
    folder = Path(folder)
    gen.save_pretrained(folder)
    config = gen.config_dict()
    source = Path(gen.source) if gen.source else None
    card = generator_card(config, upstream_id(str(config["base"]["name"])), source, repo_id)
    atomic_write_text(folder / "README.md", card)
    return folder


def push_generator(gen: TextToLoRA, repo_id: str, private: bool | None = None, token: str | None = None,
                   commit_message: str = "Upload Text-to-LoRA generator") -> str:
    """Upload a generator (``config.json`` + ``model.safetensors`` + README.md card); returns the repo URL."""
    with tempfile.TemporaryDirectory(prefix="t2l-push-") as tmp:
        folder = prepare_generator_folder(gen, Path(tmp) / "repo", repo_id)
        return upload(folder, repo_id, private, token, commit_message)


def prepare_adapter_folder(adapter: LoRAAdapter, folder: str | Path, repo_id: str | None = None,
                           gguf: bool = False, base_gguf: str | Path | None = None) -> Path:
    """Write what :func:`push_adapter` uploads: the PEFT directory, its model card, and with ``gguf`` the
    llama.cpp adapter file ``adapter.gguf`` (on the base's GGUF file ``base_gguf``: by default the embedded
    base's, or the ``.gguf`` the base was loaded from)."""
    folder = Path(folder)
    adapter.save(folder)
    if gguf:
        save_gguf(adapter, folder / "adapter.gguf", base_gguf=base_gguf)
    card = adapter_card(adapter.description or "", upstream_id(adapter.base.name), list(adapter.A), adapter.r,
                        adapter.alpha, adapter.use_rslora, str(adapter.meta.get("generator") or ""), repo_id)
    atomic_write_text(folder / "README.md", card)
    return folder


def push_adapter(adapter: LoRAAdapter, repo_id: str, private: bool | None = None, token: str | None = None,
                 gguf: bool = False, base_gguf: str | Path | None = None,
                 commit_message: str = "Upload Text-to-LoRA adapter") -> str:
    """Upload an adapter as a PEFT directory with a model card (and ``adapter.gguf`` with ``gguf``); returns the
    repo URL."""
    with tempfile.TemporaryDirectory(prefix="t2l-push-") as tmp:
        folder = prepare_adapter_folder(adapter, Path(tmp) / "repo", repo_id, gguf=gguf, base_gguf=base_gguf)
        return upload(folder, repo_id, private, token, commit_message)
