"""``t2l chat``: a terminal chat with the base model, under an adapter generated from a description or none."""

from __future__ import annotations

import argparse
import sys
import threading
import time
from functools import partial
from typing import Iterable, Iterator, TextIO

from .._io import lone_surrogate
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


def cmd_chat(args: argparse.Namespace) -> int:
    from ..base import load_base
    from ..serve.chat import stream_chat
    from ..generator import TextToLoRA

    check_engine_args(args)  # before minutes of loading
    gen = TextToLoRA.from_pretrained(args.model)
    base = load_base(args.base or gen.base_spec.name, target_modules=gen.base_spec.module_names)
    gen = TextToLoRA.from_pretrained(args.model, base=base)
    if args.engine == "llama.cpp":
        from ..serve.llama_cpp import LlamaCppChat

        stream = LlamaCppChat(base, args.base_gguf).stream
    else:
        stream = partial(stream_chat, base)
    adapter = None
    if args.description:
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
    p = sub.add_parser("chat", help="chat in the terminal with the base model under a generated adapter",
                       description="Terminal chat, streaming, with the base model plus an adapter generated "
                                   "from --description (none: the plain base model).")
    add_model_arg(p)
    p.add_argument("--base", help="base model (default: the generator's)")
    p.add_argument("--description", help="task description to generate the adapter from")
    p.add_argument("--message", help="send one message, print the reply and exit")
    p.add_argument("--max-new-tokens", type=int, default=256, help="reply length limit")
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    add_engine_args(p, "PyTorch float32 on the dequantized base")
    p.set_defaults(func=cmd_chat)
