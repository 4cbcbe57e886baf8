"""Arguments several commands share, and flags made from a config dataclass's fields.

A setting that the library keeps in a config dataclass (``HyperConfig``, ``EvalConfig``, ``EngineConfig``,
``WatchConfig``) becomes a flag through :func:`add_config_flags`: its default is the field's default and its
help is the docstring written under the field, so the two are written once, in the library.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import functools
import inspect
import re
import textwrap
import typing
from pathlib import Path
from typing import Any, Iterable

from .._io import check_replaceable
from ..errors import ConfigError

FORCE_HELP = ("replace --out if it exists and holds only what text2lora wrote there (an earlier output); a "
              "directory with any other file, or a file text2lora did not write, is refused and left as it is")


def check_out(out: Path, force: bool) -> None:
    """Refuse an existing ``--out`` unless ``--force``, and with ``--force`` anything text2lora did not write."""
    if out.exists() and not force:
        raise ConfigError(f"output path {out} already exists; choose another --out or pass --force")
    if force:
        check_replaceable(out)  # only what text2lora wrote (a GGUF adapter, for a single file)


def add_model_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", metavar="CKPT", default=None,
                   help="generator checkpoint directory or Hugging Face Hub repo id org/name (default: the shipped "
                        "generator)")


def add_output_args(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument("--out", required=True, help=f"output {what} directory")
    p.add_argument("--force", action="store_true", help=FORCE_HELP)
    p.add_argument("--quiet", action="store_true", help="print nothing on success")


def add_format_args(p: argparse.ArgumentParser, formats: tuple[str, ...] = ("peft", "gguf")) -> None:
    """--format / --base-gguf, shared by generate and export (the first format is the default)."""
    what = {"peft": "peft: a PEFT adapter directory at --out",
            "gguf": "gguf: one llama.cpp/Ollama LoRA adapter file at --out"}
    if "peft" in formats:
        what["gguf"] += (" instead of the PEFT directory (to keep both, write the directory, then "
                         "`t2l export DIR --out FILE.gguf`)")
    p.add_argument("--format", choices=list(formats), default=formats[0],
                   help="; ".join(what[f] for f in formats) + f" (default: {formats[0]})")
    p.add_argument("--base-gguf", metavar="FILE", default=None,
                   help="with --format gguf: the base model's GGUF file (default: the embedded base's, or the "
                        ".gguf the base was loaded from)")


def add_engine_args(p: argparse.ArgumentParser, torch_help: str) -> None:
    """``--engine torch|llama.cpp`` and ``--base-gguf`` (``t2l chat``, ``t2l serve``, ``t2l ui``)."""
    p.add_argument("--engine", choices=["torch", "llama.cpp"], default="torch",
                   help=f"torch: {torch_help} (default); llama.cpp: the base's GGUF file with the adapter as a GGUF "
                        "LoRA, through llama-cpp-python (faster on a CPU)")
    p.add_argument("--base-gguf", help="--engine llama.cpp: the base's GGUF file (default: the embedded base's, or "
                                       "the .gguf file --base names)")


def check_engine_args(args: argparse.Namespace) -> None:
    """Refuse a bad engine choice in one line before anything loads."""
    if args.engine == "llama.cpp":
        from ..serve.llama_cpp import require_llama_cpp

        require_llama_cpp()
    elif args.base_gguf:
        raise ConfigError("--base-gguf is the llama.cpp engine's base file; add --engine llama.cpp or drop it")


def modules_arg(text: str) -> list[str]:
    """``--target-modules q_proj,v_proj`` as a list; empty is refused."""
    mods = [m.strip() for m in text.split(",") if m.strip()]
    if not mods:
        raise ConfigError("--target-modules is empty; pass names like q_proj,v_proj")
    return mods


# ----------------------------------------------------------------------------- flags from config fields

def _plain(doc: str) -> str:
    """A field docstring as one line of plain text (reStructuredText roles and literals unwrapped)."""
    doc = re.sub(r":[a-z]+:`~?([^`]+)`", lambda m: m.group(1).rsplit(".", 1)[-1], doc)
    return " ".join(doc.replace("``", "").split()).rstrip(".")


@functools.cache
def field_docs(cls: type) -> dict[str, str]:
    """The docstrings written under a dataclass's fields (``x: int = 1`` then a string), by field name."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        body = ast.parse(textwrap.dedent(inspect.getsource(klass))).body[0].body
        for stmt, nxt in zip(body, body[1:]):
            if (isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name) and isinstance(nxt, ast.Expr)
                    and isinstance(nxt.value, ast.Constant) and isinstance(nxt.value.value, str)):
                docs[stmt.target.id] = _plain(nxt.value.value)
    return docs


def config_default(cls: type, name: str) -> Any:
    """The default of field ``name`` of dataclass ``cls``."""
    f = {f.name: f for f in dataclasses.fields(cls)}[name]
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return f.default


def csv_arg(text: str) -> list[str]:
    """A comma list given on the command line, as a list of its non-empty items."""
    return [item.strip() for item in text.split(",") if item.strip()]


def _is_list(kind: Any) -> bool:
    return typing.get_origin(kind) is list


def add_config_flags(p: argparse.ArgumentParser, cls: type, names: Iterable[str], *, show: bool = True,
                     short: dict[str, str] | None = None, choices: dict[str, Iterable[str]] | None = None,
                     shown: dict[str, str] | None = None) -> None:
    """Add ``--field-name`` for each field in ``names`` of dataclass ``cls``, with the field's default and its
    docstring as the help, ``(default: X)`` added (``shown`` replaces X; ``short`` gives a field a short flag).

    A ``bool`` field that defaults to false becomes a switch; one that defaults to true becomes ``--no-NAME``.
    A list field takes a comma list and stays ``None`` when not given (:func:`config_from_args` then leaves the
    field's default). ``show=False`` hides the flags from ``--help`` (aliases of an older form).
    """
    hints = typing.get_type_hints(cls)
    docs = field_docs(cls)
    for name in names:
        doc = docs.get(name)
        if not doc:
            raise AssertionError(f"{cls.__name__}.{name} has no docstring to serve as its --help")
        default = config_default(cls, name)
        flags = ["--" + name.replace("_", "-"), *([short[name]] if short and name in short else [])]
        kind = hints[name]
        if kind is bool:
            if default:
                flags[0] = "--no-" + name.replace("_", "-")
            p.add_argument(*flags, dest=name, action="store_false" if default else "store_true",
                           help=(f"turn off: {doc}" if default else doc) if show else argparse.SUPPRESS)
            continue
        listed = _is_list(kind)  # a comma list, split by config_from_args
        value = (shown or {}).get(name, ",".join(default) if listed else default)
        if not listed:
            kind = next((t for t in typing.get_args(kind) if t is not type(None)), kind)  # X | None -> X
        extra: dict[str, Any] = {"choices": list(choices[name])} if choices and name in choices else {}
        p.add_argument(*flags, dest=name, type=str if listed else kind, default=None if listed else default,
                       help=f"{doc} (default: {value})" if show else argparse.SUPPRESS, **extra)


def config_from_args(cls: type, args: argparse.Namespace, **values: Any) -> Any:
    """``cls(**fields)`` from the parsed flags named after its fields (comma lists split; a list flag not given
    leaves the field's default), then ``values``."""
    hints = typing.get_type_hints(cls)
    given = {}
    for f in dataclasses.fields(cls):
        value = getattr(args, f.name, None)
        if _is_list(hints[f.name]):
            if value is None:
                continue
            value = csv_arg(value) if isinstance(value, str) else value
        elif not hasattr(args, f.name):
            continue
        given[f.name] = value
    return cls(**{**given, **values})
