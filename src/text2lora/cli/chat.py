"""``t2l chat``: a terminal chat with the base model, under an adapter generated from a description, a saved
adapter directory, or none."""

from __future__ import annotations

import argparse
import sys
import threading
import time
from functools import partial
from pathlib import Path
from typing import Iterable, Iterator, TextIO

from .._io import lone_surrogate
from ..errors import AdapterError, ConfigError
from ._args import add_engine_args, add_model_arg, check_engine_args


def waiting(pieces: Iterable[str], out: TextIO | None = None, every: float = 0.25) -> Iterator[str]:
    """Yield ``pieces``; until the first one comes, show on ``out`` (default: stderr), when it is a terminal,
    that the model is working and for how long, then erase that line. Elsewhere (a log, a pipe) print nothing."""
    out = sys.stderr if out is None else out
    if not out.isatty():
        yield from pieces
        return
    first = threading.Event()
    shown = threading.Event()

    def show() -> None:
        t0 = time.monotonic()
        frames = "|/-\\"
        i = 0
        while not first.wait(every):
            out.write(f"\r{frames[i % 4]} waiting for the model... {time.monotonic() - t0:.0f} s")
            out.flush()
            shown.set()
            i += 1

    thread = threading.Thread(target=show, daemon=True)
    thread.start()

    def stop() -> None:
        if not first.is_set():
            first.set()
            thread.join()
            if shown.is_set():
                out.write("\r\033[K")  # erase the line before the reply goes on the same terminal
                out.flush()

    try:
        for piece in pieces:
            stop()
            yield piece
    finally:
        stop()


def check_adapter_path(path: str) -> None:
    """Refuse in one line an ``--adapter`` that cannot be an adapter directory, before anything loads: a
    missing path, a file, a generator checkpoint. A Hub repo id ``org/name`` that is not a local path passes
    (:meth:`LoRAAdapter.load` downloads it)."""
    from ..hub import is_repo_id

    p = Path(path).expanduser()
    if not p.exists():
        if is_repo_id(path):
            return
        raise AdapterError(f"--adapter {path} does not exist; pass the adapter directory that `t2l generate --out` "
                           "(or PEFT's save_pretrained) wrote")
    if not p.is_dir():
        raise AdapterError(f"--adapter {path} is a file, not an adapter directory; pass the PEFT directory that "
                           "`t2l generate --out` wrote")
    if not (p / "adapter_config.json").exists() and (p / "config.json").is_file() \
            and (p / "model.safetensors").is_file():
        raise AdapterError(f"--adapter {path} is a generator checkpoint, not an adapter; pass it as --model, or "
                           "pass the adapter directory that `t2l generate --out` wrote")


def cmd_chat(args: argparse.Namespace) -> int:
    from ..adapter import LoRAAdapter
    from ..base import load_base
    from ..generator import TextToLoRA
    from ..serve.chat import stream_chat

    if args.adapter is not None and args.description is not None:
        raise ConfigError("--adapter and --description both choose the adapter; pass one of them (--adapter DIR "
                          "loads a saved adapter, --description TEXT generates one)")
    check_engine_args(args)  # before minutes of loading
    if args.adapter is not None:
        check_adapter_path(args.adapter)
    gen = TextToLoRA.from_pretrained(args.model)
    adapter = None
    if args.adapter is not None:  # checked against the generator's base before that base loads
        adapter = LoRAAdapter.load(args.adapter, gen.base_spec)
    base = load_base(args.base or gen.base_spec.name, target_modules=gen.base_spec.module_names)
    gen = TextToLoRA.from_pretrained(args.model, base=base)
    if args.engine == "llama.cpp":
        from ..serve.llama_cpp import LlamaCppChat

        stream = LlamaCppChat(base, args.base_gguf).stream  # writes the adapter as a GGUF LoRA
    else:
        stream = partial(stream_chat, base)
    if adapter is not None:
        adapter = adapter.validate(base.spec).to(base.device)  # --base: the model it runs on
        made_for = f"; made for: {adapter.description}" if adapter.description else ""
        print(f"[adapter loaded from {args.adapter}{made_for}]", file=sys.stderr)
    elif args.description:
        adapter = gen.generate(args.description)
        print(f"[adapter generated for: {args.description}]", file=sys.stderr)
    history: list[dict[str, str]] = []

    def reply(msg: str) -> None:
        history.append({"role": "user", "content": msg})
        parts = []
        pieces = stream(history, adapter, max_new_tokens=args.max_new_tokens, temperature=args.temperature)
        for piece in waiting(pieces):
            parts.append(piece)
            print(piece, end="", flush=True)
        print()
        history.append({"role": "assistant", "content": "".join(parts)})

    if args.message:
        reply(args.message)
        return 0
    # stdout carries the replies only; the prompt and the help go to the terminal (stderr), and only when a
    # person types (stdin a terminal), so `t2l chat < questions.txt > answers.txt` gives the answers alone
    interactive = sys.stdin.isatty()
    if interactive:
        print("Type a message; /describe TEXT sets a new task description; /reset clears history; /quit exits.",
              file=sys.stderr)
    while True:
        try:
            if interactive:
                print("> ", end="", file=sys.stderr, flush=True)
            line = input().strip()
        except EOFError:
            return 0
        except UnicodeDecodeError:
            line = "\udcff"  # refused just below, as a line the locale decoded with surrogates is
        if lone_surrogate(line):
            print("t2l: that line is not UTF-8 text; type it again (or save the input as UTF-8)", file=sys.stderr)
            continue
        if not line:
            continue
        if line in ("/quit", "/exit"):
            return 0
        if line == "/reset":
            history.clear()
            continue
        if line.startswith("/describe"):
            desc = line[len("/describe"):].strip()
            if not desc:
                print("usage: /describe TEXT", file=sys.stderr)
                continue
            adapter = gen.generate(desc)
            history.clear()
            print(f"[adapter generated for: {desc}]", file=sys.stderr)
            continue
        reply(line)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("chat", help="chat in the terminal with the base model under a generated or saved adapter",
                       description="Terminal chat, streaming, with the base model plus an adapter generated "
                                   "from --description or loaded from --adapter (neither: the plain base model).")
    add_model_arg(p)
    p.add_argument("--base", help="base model (default: the generator's)")
    p.add_argument("--description", help="task description to generate the adapter from")
    p.add_argument("--adapter", metavar="DIR",
                   help="a saved adapter to chat with instead of generating one: the PEFT directory `t2l generate "
                        "--out` wrote, or any PEFT LoRA directory for the same base")
    p.add_argument("--message", help="send one message, print the reply and exit")
    p.add_argument("--max-new-tokens", type=int, default=256, help="reply length limit")
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    add_engine_args(p, "PyTorch float32 on the dequantized base")
    p.set_defaults(func=cmd_chat)
