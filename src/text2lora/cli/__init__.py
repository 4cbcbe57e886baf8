"""The ``t2l`` command: one entry point with subcommands.

Each subcommand lives in a module of this package that defines
``register(subparsers)``; the module adds its parser and sets ``func`` to a
function taking the parsed ``argparse.Namespace`` and returning an exit code.
The CLI is thin: it parses, calls the library and prints. Any
:class:`~text2lora.errors.T2LError` (a user error) becomes one line on stderr and
exit code 2, with no traceback (``-v`` shows it); any other exception is a bug and
keeps its traceback. Ctrl-C anywhere exits 130 with one line. A
:class:`~text2lora.errors.T2LWarning` prints as one line ``t2l: warning: ...``.
Heavy commands (train, eval, watch) warn when another one is already running on
the same CPU.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import logging
import os
import signal
import sys
import threading
import traceback
import warnings

from ..errors import T2LError, T2LWarning

# Modules that register subcommands, in the order they appear in --help.
COMMAND_MODULES = ["generator", "chat", "export", "data", "train", "eval", "watch", "map", "serve"]


class _Parser(argparse.ArgumentParser):
    """ArgumentParser whose errors are one line and exit code 2."""

    def error(self, message: str) -> None:  # noqa: D401
        self.print_usage(sys.stderr)
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="t2l", description="Text-to-LoRA: generate LoRA adapters from task descriptions.")
    from .._version import __version__

    parser.add_argument("--version", action="version", version=f"text2lora {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="show debug logging, and the traceback of an error too")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name in COMMAND_MODULES:
        try:
            mod = importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as e:
            if e.name and e.name.startswith(f"{__name__}.{name}"):
                continue  # subcommand module not present in this build
            raise
        mod.register(sub)
    return parser


def _plain_warnings(show):
    """A ``warnings.showwarning`` that prints a :class:`T2LWarning` as one plain line and passes others to
    ``show`` (Python's: file, line, category and source line)."""

    def showwarning(message, category, filename, lineno, file=None, line=None) -> None:
        if issubclass(category, T2LWarning):
            print(f"t2l: warning: {message}", file=sys.stderr if file is None else file)
        else:
            show(message, category, filename, lineno, file, line)

    return showwarning


def _check_text(argv: list[str]) -> None:
    """Refuse, in one line, an argument holding bytes that are not UTF-8 (the shell passes them through;
    Python keeps them as lone surrogates, which no tokenizer, JSON file or terminal can take)."""
    from .._io import lone_surrogate

    for i, arg in enumerate(argv):
        bad = lone_surrogate(arg)
        if bad is None:
            continue
        if "\udc80" <= bad <= "\udcff":  # a byte the shell passed that is not UTF-8
            shown = os.fsencode(arg).decode("utf-8", "backslashreplace")
            raise T2LError(f"argument {i + 1} (\"{shown}\") holds bytes that are not UTF-8 text; pass it in UTF-8 (set "
                           "the terminal or the script to UTF-8, e.g. LANG=C.UTF-8, or convert the text with iconv; "
                           "rename a file whose name is not UTF-8)")
        shown = arg.encode("utf-8", "backslashreplace").decode()
        raise T2LError(f"argument {i + 1} (\"{shown}\") holds a lone surrogate, which is not text; pass the text "
                       "itself")


def main(argv: list[str] | None = None) -> int:
    """Run ``t2l``; returns the process exit code."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # transformers' "Loading weights" bars are noise on a CLI that prints its own progress
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    verbose = False
    try:  # everything, imports included: Ctrl-C during start-up is one line too
        _check_text(sys.argv[1:] if argv is None else argv)
        parser = build_parser()
        args = parser.parse_args(argv)
        verbose = args.verbose
        logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                            format="%(levelname)s %(name)s: %(message)s")
        if not getattr(args, "func", None):
            parser.print_help()
            return 2
        from . import _busy

        heavy = _busy.is_heavy(args)
        with warnings.catch_warnings():
            warnings.showwarning = _plain_warnings(warnings.showwarning)
            with _busy.registered(sys.argv[1:] if argv is None else list(argv)) if heavy else contextlib.nullcontext():
                if heavy:
                    _busy.warn_if_busy()
                return int(args.func(args) or 0)
    except T2LError as e:  # a user error; anything else is a bug and keeps its traceback
        if verbose:
            traceback.print_exc()
        print(f"t2l: error: {e}", file=sys.stderr)
        return 2
    except UnicodeError as e:
        # text that is not UTF-8 where text2lora reads text (a file a library reads without a name to give)
        if verbose:
            traceback.print_exc()
        print(f"t2l: error: some input is not UTF-8 text ({e}); save files as UTF-8 and pass text in UTF-8 "
              "(-v shows where)", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        if argv is None and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C while exiting: no traceback either
        print("t2l: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # the reader of the output went away (`t2l data list | head`): stop quietly, as a shell tool
        # killed by SIGPIPE does; what is still buffered goes to /dev/null instead of a second error
        with contextlib.suppress(OSError, ValueError, AttributeError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except OSError as e:
        # a path the user gave that cannot be read or written (`--out afile.txt/lora`, `--out /proc/x`,
        # a full disk): one line naming it; an OSError with no file is not about the user's input
        if e.filename is None:
            raise
        if verbose:
            traceback.print_exc()
        names = " -> ".join(str(f) for f in (e.filename, e.filename2) if f is not None)
        print(f"t2l: error: {names}: {e.strerror or e}; check the path and its permissions", file=sys.stderr)
        return 2
