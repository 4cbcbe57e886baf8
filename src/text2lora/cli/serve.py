"""``t2l serve`` (OpenAI-compatible HTTP server) and ``t2l ui`` (Gradio web UI), the apps over the serving engine.

FastAPI, uvicorn and Gradio are imported only when these commands run
(``pip install 'text-to-lora[apps]'``).
"""

from __future__ import annotations

import argparse
import os
import sys

from ..errors import ConfigError
from ._args import add_config_flags, add_engine_args, check_engine_args, config_from_args


def _require(*modules: str) -> None:
    import importlib.util

    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        raise ConfigError(f"this command needs {', '.join(missing)}; install with: pip install 'text-to-lora[apps]'")


def _engine(args: argparse.Namespace):
    from ..serve.engine import EngineConfig, load_engine

    if args.threads is not None:
        if args.threads < 1:
            raise ConfigError(f"--threads must be >= 1, got {args.threads}")
        if args.engine == "torch":
            import torch

            torch.set_num_threads(args.threads)
    return load_engine(args.model, args.base, config_from_args(EngineConfig, args), device=args.device,
                       engine=args.engine, base_gguf=args.base_gguf, threads=args.threads)


def cmd_serve(args: argparse.Namespace) -> int:
    _require("fastapi", "uvicorn")
    from ..serve.server import serve

    check_engine_args(args)  # before minutes of loading
    if args.max_body_bytes < 1024:
        raise ConfigError(f"--max-body-bytes must be >= 1024, got {args.max_body_bytes}")
    engine = _engine(args)
    print(f"serving {engine.base_name} with the {engine.kind} engine at http://{args.host}:{args.port}/v1 (model "
          "'t2l:<description>' generates an adapter)", file=sys.stderr)
    serve(engine, args.host, args.port, args.max_body_bytes, log_level="warning" if args.quiet else "info",
          api_key=args.api_key or os.environ.get("T2L_API_KEY") or None)
    return 0


def cmd_ui(args: argparse.Namespace) -> int:
    _require("gradio")
    from ..serve.ui import launch

    check_engine_args(args)  # before minutes of loading
    launch(_engine(args), host=args.host, port=args.port, share=False, max_new_tokens=args.default_max_tokens)
    return 0


# EngineConfig's fields that both apps take as flags (defaults and help from the dataclass)
ENGINE_FLAGS = ("max_batch", "batch_wait_ms", "cache_size", "max_tokens_limit", "default_max_tokens",
                "max_prompt_tokens")


def _common(p: argparse.ArgumentParser, port: int) -> None:
    from ..serve.engine import EngineConfig

    p.add_argument("--model", metavar="CKPT", default=None,
                   help="generator checkpoint directory (default: the shipped generator)")
    p.add_argument("--base", default=None, help="base model (default: the generator's)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: CUDA when available)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=port, help=f"port (default {port})")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads of the engine (default: torch's; llama.cpp: half the cores). Threads on every "
                        "core are fastest on a quiet machine but collapse when another process holds a core; 1 "
                        "holds up on a shared one")
    add_config_flags(p, EngineConfig, ENGINE_FLAGS)
    add_engine_args(p, "PyTorch, requests with different adapters batched in one forward pass")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="OpenAI-compatible HTTP server that generates adapters from descriptions",
                       description="Serve /v1/chat/completions, /v1/completions, /v1/models and /v1/adapters. "
                       "Pick an adapter with \"model\": \"t2l:<task description>\" or an adapter id.")
    _common(p, 8000)
    from ..serve.engine import EngineConfig

    add_config_flags(p, EngineConfig, ("adapter_dir", "adapter_dir_quota_mb"))
    p.add_argument("--api-key", default=None,
                   help="require 'Authorization: Bearer KEY' (what OpenAI clients send) on every /v1 request "
                   "(default: $T2L_API_KEY, else none)")
    p.add_argument("--max-body-bytes", type=int, default=1 << 20, help="largest request body (default 1 MiB)")
    p.add_argument("--quiet", action="store_true", help="log warnings only")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("ui", help="web UI: describe a task, generate an adapter, chat with base vs adapted",
                       description="Gradio app: type a task description, click Generate, and chat with the "
                       "base model and the adapted model side by side.")
    _common(p, 7860)
    p.set_defaults(func=cmd_ui)
