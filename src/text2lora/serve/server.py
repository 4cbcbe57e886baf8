"""``t2l serve``: an OpenAI-compatible HTTP server that generates LoRA adapters from task descriptions.

Endpoints::

    GET  /v1/models                  the base model and the adapters generated so far
    POST /v1/chat/completions        OpenAI chat (stream or not)
    POST /v1/completions             OpenAI completions (stream or not)
    POST /v1/adapters                {"description", "name"?} -> adapter id (generated now, cached)
    GET  /v1/adapters[/{id}]         adapters and their descriptions
    GET  /v1/stats                   batcher and cache counters; GET /health

A request picks its adapter with ``"model"``: the base model's name (or ``"base"``)
for no adapter, an adapter id, or ``"t2l:<task description>"``; or with the extra
body fields ``t2l_description`` / ``t2l_adapter``. Every response carries a ``t2l``
object: adapter id, cache hit, and the id and size of the batch it ran in.
Errors are OpenAI-style ``{"error": {"message", "type", "param", "code"}}``: a bad request is a 4xx
(only the project's user errors, :class:`~text2lora.errors.T2LError`, and the request checks here map
to 4xx); anything else is a bug and becomes a 500 naming the request id, which the server log prints
with the traceback. Every response carries its id in the ``x-request-id`` header (the OpenAI client's
``request_id``). Request ids, error answers, the API key and the connection guard live in
:mod:`.middleware`; the routes are one :class:`fastapi.APIRouter` (``router``) over a ``_Handler`` that
holds the request logic.

What one client can make the server do is bounded before the work starts: a request's head and body
must arrive within deadlines and the open connections are capped (:class:`.middleware.ConnectionLimits`);
bodies past ``max_body_bytes`` or nested deeper than :data:`MAX_JSON_DEPTH` are refused before they
are parsed; prompts longer than ``max_prompt_tokens`` can be are refused before they are tokenised, and
tokenising runs off the event loop.

FastAPI and uvicorn are needed (``pip install 'text-to-lora[apps]'``); nothing in the core imports this module.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import threading
import time
import uuid
from typing import Annotated, Any, AsyncIterator

import numpy as np
from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from .batcher import Event
from .engine import AdapterLoadError, ServingEngine
from .store import BadAdapterId, InvalidDescription, UnknownAdapter
from .middleware import (CLIENT_ERRORS, ConnectionLimits, RequestIds, accept_backlog, check_api_key, conn_log,
                         guarded_protocol, limit_repeats, request_id_of)
from .schemas import AdapterCreate, APIError, ChatRequest, CompletionRequest, validation_message

__all__ = ["create_app", "router", "serve", "ServerThread", "uvicorn_config", "json_depth", "DEFAULT_MAX_BODY_BYTES",
           "MAX_JSON_DEPTH"]

log = logging.getLogger(__name__)

DEFAULT_MAX_BODY_BYTES = 1 << 20
MAX_JSON_DEPTH = 400
"""Deepest nesting of arrays and objects a request body may have (Python's JSON parser, and code that
walks what it returns, recurse once per level)."""

_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.S)
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_BRACKET_STEP = np.zeros(256, np.int8)
_BRACKET_STEP[list(b"[{")], _BRACKET_STEP[list(b"]}")] = 1, -1


def json_depth(raw: bytes) -> int:
    """How deep arrays and objects nest in the JSON text ``raw`` (brackets inside strings do not count),
    found without parsing it (C-speed passes: a regular expression, ``bytes.translate``, a NumPy sum)."""
    skeleton = _JSON_STRING.sub(b"", raw).translate(None, _NOT_BRACKETS)
    if not skeleton:
        return 0
    return int(np.cumsum(_BRACKET_STEP[np.frombuffer(skeleton, np.uint8)], dtype=np.int64).max())


async def _read_json(request: Any, limit: int) -> dict[str, Any]:
    """The request body as a JSON object; 413 past ``limit`` bytes, 400 when not a JSON object."""
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        raise APIError(413, f"request body is {length} bytes; the limit is {limit}", code="request_too_large")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise APIError(413, f"request body is over the limit of {limit} bytes", code="request_too_large")
        chunks.append(chunk)
    raw = b"".join(chunks)
    depth = json_depth(raw)
    if depth > MAX_JSON_DEPTH:
        raise APIError(400, f"the request body nests arrays and objects {depth} deep; the limit is {MAX_JSON_DEPTH}",
                       code="invalid_json")
    try:
        body = json.loads(raw or b"null")
    except (ValueError, UnicodeDecodeError) as e:
        raise APIError(400, f"the request body is not valid JSON ({e})", code="invalid_json") from None
    if not isinstance(body, dict):
        raise APIError(400, "the request body must be a JSON object", code="invalid_json")
    _check_unicode(body)
    return body


def _check_unicode(value: Any, where: str = "") -> None:
    """400 for a string holding a lone UTF-16 surrogate (JSON allows "\\ud800"; no tokenizer reads it)."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as e:
            raise APIError(400, f"{where or 'a string'} holds a lone UTF-16 surrogate "
                           f"({value[e.start]!r} at character {e.start}); send valid Unicode text",
                           param=where.split("[")[0].split(".")[0] or None, code="invalid_value") from None
    elif isinstance(value, dict):
        for k, v in value.items():
            _check_unicode(k, where)
            _check_unicode(v, f"{where}.{k}" if where else str(k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _check_unicode(v, f"{where}[{i}]")


def _parse(model_cls: type, body: dict[str, Any]) -> Any:
    try:
        return model_cls.model_validate(body)
    except ValidationError as e:
        msg, param = validation_message(e)
        raise APIError(400, msg, param=param, code="invalid_value") from None


class _Handler:
    """The request logic, apart from the FastAPI wiring."""

    def __init__(self, engine: ServingEngine):
        self.engine = engine
        self.requests = 0
        self.disconnects = 0

    async def resolve(self, req: Any) -> tuple[Any, str, dict[str, Any]]:
        """``(adapter or None, model name to report, t2l info)`` for a generation request."""
        eng = self.engine
        desc, aid, param = req.t2l_description, req.t2l_adapter, "t2l_description"
        if desc is None and aid is None:
            if req.model.startswith("t2l:"):
                desc, param = req.model[4:], "model"
            elif req.model in (eng.base_name, "base"):
                return None, eng.base_name, {"adapter": None, "cache_hit": None}
            else:
                aid = req.model
        try:
            if desc is not None:
                ad, info, hit = await run_in_threadpool(eng.adapter, desc)
            else:
                ad, info, hit = await run_in_threadpool(eng.adapter, None, aid)
        except InvalidDescription as e:
            raise APIError(400, str(e), param=param, code="invalid_description") from None
        except (UnknownAdapter, BadAdapterId) as e:
            raise APIError(404, f"model {str(aid)[:80]!r} does not exist: {e}", param="model",
                           code="model_not_found") from None
        except AdapterLoadError as e:
            raise _not_loaded(e, param) from None
        return ad, info.id, {"adapter": info.id, "cache_hit": hit}

    def check_size(self, texts: list[str], param: str) -> None:
        """400 for a prompt that is over ``max_prompt_tokens`` whatever it says, before it is tokenised: more
        messages than tokens allowed, or more characters than that many tokens can hold."""
        cfg, limit = self.engine.config, self.engine.max_prompt_chars
        if len(texts) > cfg.max_prompt_tokens:
            raise APIError(400, f"the prompt has {len(texts)} messages; this server accepts at most "
                           f"{cfg.max_prompt_tokens} tokens (--max-prompt-tokens); send fewer messages",
                           param=param, code="context_length_exceeded")
        chars = sum(len(t) for t in texts)
        if limit is not None and chars > limit:
            raise APIError(400, f"the prompt has {chars} characters, more than {cfg.max_prompt_tokens} tokens can "
                           f"hold with this tokenizer ({limit}); this server accepts at most {cfg.max_prompt_tokens} "
                           "tokens (--max-prompt-tokens); shorten the prompt", param=param,
                           code="context_length_exceeded")

    def limits(self, req: Any, prompt_ids: list[int], chat: bool) -> int:
        cfg, n = self.engine.config, req.token_limit()
        param = "messages" if chat else "prompt"
        if not prompt_ids:
            raise APIError(400, "the prompt is empty; send at least one token of text", param=param,
                           code="invalid_value")
        if len(prompt_ids) > cfg.max_prompt_tokens:
            raise APIError(400, f"the prompt has {len(prompt_ids)} tokens; this server accepts at most "
                           f"{cfg.max_prompt_tokens} (--max-prompt-tokens); shorten the prompt", param=param,
                           code="context_length_exceeded")
        if n is not None and n > cfg.max_tokens_limit:
            raise APIError(400, f"max_tokens is {n}; this server allows at most {cfg.max_tokens_limit}",
                           param="max_tokens", code="max_tokens_exceeded")
        n = n or cfg.default_max_tokens
        ctx = self.engine.max_context
        if ctx is not None and len(prompt_ids) + n > ctx:
            raise APIError(400, f"the prompt has {len(prompt_ids)} tokens and max_tokens is {n}, over the "
                           f"model's context of {ctx} tokens; shorten the prompt or lower max_tokens",
                           param=param, code="context_length_exceeded")
        return n

    async def events(self, prompt_ids: list[int], adapter: Any, req: Any, max_tokens: int, request_id: str,
                     client: Request | None = None) -> AsyncIterator[Event]:
        """Submit to the batcher and yield its events on this event loop; with ``client``, the generation
        is cancelled as soon as that client disconnects (a streaming response is cancelled by Starlette).
        A failed generation (the batcher logs its traceback) is a 500 naming ``request_id``."""
        loop = asyncio.get_running_loop()
        q: asyncio.Queue[Event] = asyncio.Queue()

        def sink(ev: Event) -> None:
            try:
                loop.call_soon_threadsafe(q.put_nowait, ev)
            except RuntimeError:  # the loop is gone (server shutting down)
                pass

        gen_req = self.engine.submit(prompt_ids, adapter, sink, max_tokens, req.temperature, req.top_p, req.stops())
        watcher = asyncio.create_task(self._watch(client, gen_req, q)) if client is not None else None
        try:
            while True:
                ev = await q.get()
                if ev.kind == "error":
                    if isinstance(ev.error, AdapterLoadError):
                        raise _not_loaded(ev.error, "model")
                    log.error("request %s: generation failed: %r", request_id, ev.error)
                    raise APIError(500, f"generation failed (request id {request_id}): {ev.error}",
                                   type="server_error", code="generation_failed")
                yield ev
                if ev.kind == "done":
                    return
        finally:
            gen_req.cancelled.set()
            if watcher is not None:
                watcher.cancel()

    async def _watch(self, client: Request, gen_req: Any, q: asyncio.Queue) -> None:
        """Cancel ``gen_req`` when ``client`` disconnects, and end its event stream."""
        while not gen_req.cancelled.is_set():
            if await client.is_disconnected():
                gen_req.cancelled.set()
                self.disconnects += 1
                log.info("client disconnected; generation cancelled")
                q.put_nowait(Event("done", finish_reason="cancelled"))
                return
            await asyncio.sleep(0.2)

    async def prepare(self, req: Any, chat: bool) -> tuple[list[int], Any, str, dict[str, Any], int]:
        param = "messages" if chat else "prompt"
        try:  # the request models' own checks (content parts, one prompt, stop strings) raise ValueError
            msgs = ([{"role": m.role if m.role != "developer" else "system", "content": m.text()}
                     for m in req.messages] if chat else None)
            text = None if chat else req.prompt_text()
        except ValueError as e:
            raise APIError(400, str(e), param=param, code="invalid_value") from None
        if not chat and not text:
            raise APIError(400, "the prompt is empty; send at least one token of text", param=param,
                           code="invalid_value")
        self.check_size([m["content"] for m in msgs] if chat else [text], param)  # type: ignore[union-attr]
        # off the event loop (the tokenizer releases the GIL); a ValueError from tokenising is a bug, not the
        # client's: it becomes a 500 with a request id
        if chat:
            ids = await run_in_threadpool(self.engine.chat_ids, msgs)
        else:
            ids = await run_in_threadpool(self.engine.completion_ids, text)
        max_tokens = self.limits(req, ids, chat)
        try:
            req.stops()
        except ValueError as e:
            raise APIError(400, str(e), param="stop", code="invalid_value") from None
        adapter, model, ext = await self.resolve(req)
        self.requests += 1
        return ids, adapter, model, ext, max_tokens

    # ---------------------------------------------------------------- models and adapters
    def model_card(self, mid: str, created: int, description: str | None = None) -> dict[str, Any]:
        card = {"id": mid, "object": "model", "created": created, "owned_by": "text2lora"}
        if description is not None:
            card.update(parent=self.engine.base_name, t2l_description=description)
        return card

    def models(self) -> dict[str, Any]:
        data = [self.model_card(self.engine.base_name, 0)]
        data += [self.model_card(i.id, i.created, i.description) for i in self.engine.store.list()]
        return {"object": "list", "data": data}

    async def model(self, model_id: str) -> dict[str, Any]:
        if model_id in (self.engine.base_name, "base"):
            return self.model_card(self.engine.base_name, 0)
        info = await self.lookup(model_id)
        return self.model_card(info.id, info.created, info.description)

    async def lookup(self, aid: str) -> Any:
        """The adapter registered under ``aid`` (an adapter directory is verified, off the event loop); 400 for
        an ill-formed id, 404 for an unknown or unverified one."""
        try:
            return await run_in_threadpool(self.engine.store.lookup, aid)
        except BadAdapterId as e:
            raise APIError(400, str(e), param="id", code="invalid_adapter_id") from None
        except UnknownAdapter as e:
            raise APIError(404, str(e), param="id", code="adapter_not_found") from None

    def adapter_json(self, info: Any, **extra: Any) -> dict[str, Any]:
        return {**info.to_json(self.engine.gen.hyper_config.rank, self.engine.base_name), **extra}

    async def create_adapter(self, body: dict[str, Any]) -> dict[str, Any]:
        req = _parse(AdapterCreate, body)
        try:
            _, info, hit = await run_in_threadpool(self.engine.adapter, req.description, None, req.name)
        except BadAdapterId as e:
            raise APIError(400, str(e), param="name", code="invalid_adapter_id") from None
        except FileExistsError as e:
            raise APIError(409, str(e), param="name", code="adapter_exists") from None
        except InvalidDescription as e:
            raise APIError(400, str(e), param="description", code="invalid_description") from None
        except AdapterLoadError as e:
            raise _not_loaded(e, "description") from None
        return self.adapter_json(info, cached=hit)

    def stats(self) -> dict[str, Any]:
        return {**self.engine.stats(), "requests": self.requests, "disconnects": self.disconnects}

    # ---------------------------------------------------------------- generation
    async def complete(self, body: dict[str, Any], chat: bool, client: Request) -> Any:
        """A chat or completion response (streamed when asked) for the request ``body`` sent by ``client``."""
        req = _parse(ChatRequest if chat else CompletionRequest, body)
        ids, adapter, model, ext, max_tokens = await self.prepare(req, chat)
        rid = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex[:24]
        created = int(time.time())
        request_id = request_id_of(client)
        if req.stream:
            gen = self._sse(self.events(ids, adapter, req, max_tokens, request_id), rid, created, model, ext, chat,
                            bool(req.stream_options and req.stream_options.include_usage))
            return StreamingResponse(gen, media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
        parts, done = [], None
        async for ev in self.events(ids, adapter, req, max_tokens, request_id, client):
            if ev.kind == "text":
                parts.append(ev.text)
            else:
                done = ev
        assert done is not None
        text = "".join(parts)
        if not chat and req.echo:
            text = req.prompt_text() + text
        choice = ({"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": done.finish_reason,
                   "logprobs": None} if chat else
                  {"index": 0, "text": text, "finish_reason": done.finish_reason, "logprobs": None})
        return JSONResponse({"id": rid, "object": "chat.completion" if chat else "text_completion",
                             "created": created, "model": model, "choices": [choice], "usage": _usage(done),
                             "t2l": {**ext, "batch_id": done.batch_id, "batch_size": done.batch_size}})

    async def _sse(self, events: AsyncIterator[Event], rid: str, created: int, model: str, ext: dict[str, Any],
                   chat: bool, include_usage: bool) -> AsyncIterator[bytes]:
        obj = "chat.completion.chunk" if chat else "text_completion"

        def chunk(delta: str | None, finish: str | None = None, **extra: Any) -> bytes:
            if chat:
                d = {"role": "assistant", "content": ""} if delta is None else ({"content": delta} if delta else {})
                choice = {"index": 0, "delta": d, "finish_reason": finish, "logprobs": None}
            else:
                choice = {"index": 0, "text": delta or "", "finish_reason": finish, "logprobs": None}
            payload = {"id": rid, "object": obj, "created": created, "model": model, "choices": [choice], **extra}
            return f"data: {json.dumps(payload)}\n\n".encode()

        if chat:
            yield chunk(None)
        try:
            async for ev in events:
                if ev.kind == "text":
                    yield chunk(ev.text)
                else:
                    t2l = {**ext, "batch_id": ev.batch_id, "batch_size": ev.batch_size}
                    yield chunk("", ev.finish_reason, t2l=t2l)
                    if include_usage:
                        payload = {"id": rid, "object": obj, "created": created, "model": model, "choices": [],
                                   "usage": _usage(ev)}
                        yield f"data: {json.dumps(payload)}\n\n".encode()
        except APIError as e:
            yield f"data: {json.dumps(e.body())}\n\n".encode()
        yield b"data: [DONE]\n\n"


def _not_loaded(e: AdapterLoadError, param: str) -> APIError:
    """422 for an adapter the engine could not load (the others are still served)."""
    log.warning("%s", e)
    return APIError(422, f"{e}; this request cannot be served with it, the other adapters still are", param=param,
                    code="adapter_load_failed")


def _usage(ev: Event) -> dict[str, int]:
    return {"prompt_tokens": ev.prompt_tokens, "completion_tokens": ev.completion_tokens,
            "total_tokens": ev.prompt_tokens + ev.completion_tokens}


# ----------------------------------------------------------------------------- routes

def _handler(request: Request) -> _Handler:
    return request.app.state.handler


async def _json_body(request: Request) -> dict[str, Any]:
    return await _read_json(request, request.app.state.max_body_bytes)


Handler = Annotated[_Handler, Depends(_handler)]
JSONBody = Annotated[dict[str, Any], Depends(_json_body)]

router = APIRouter()


@router.get("/health")
async def health() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/v1/stats")
async def stats(request: Request, h: Handler) -> dict[str, Any]:
    guard = getattr(request.app.state, "connections", None)
    return {**h.stats(), "connections": guard.snapshot() if guard is not None else None}


@router.get("/v1/models")
async def list_models(h: Handler) -> dict[str, Any]:
    return h.models()


@router.get("/v1/models/{model_id:path}")
async def get_model(model_id: str, h: Handler) -> dict[str, Any]:
    return await h.model(model_id)


@router.post("/v1/adapters")
async def create_adapter(h: Handler, body: JSONBody) -> dict[str, Any]:
    return await h.create_adapter(body)


@router.get("/v1/adapters")
async def list_adapters(h: Handler) -> dict[str, Any]:
    return {"object": "list", "data": [h.adapter_json(i) for i in h.engine.store.list()]}


@router.get("/v1/adapters/{adapter_id:path}")
async def get_adapter(adapter_id: str, h: Handler) -> dict[str, Any]:
    return h.adapter_json(await h.lookup(adapter_id))


@router.post("/v1/chat/completions")
async def chat_completions(request: Request, h: Handler, body: JSONBody) -> Any:
    return await h.complete(body, chat=True, client=request)


@router.post("/v1/completions")
async def completions(request: Request, h: Handler, body: JSONBody) -> Any:
    return await h.complete(body, chat=False, client=request)


def _loop_error(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """The event loop's own errors (``accept()`` out of file descriptors, ...): once per cause a minute."""
    exc = context.get("exception")
    conn_log.error("event loop: " + str(context.get("message", "error")),
                   exc_info=(type(exc), exc, exc.__traceback__) if isinstance(exc, BaseException) else None)


@contextlib.asynccontextmanager
async def _lifespan(app: Any) -> AsyncIterator[None]:
    asyncio.get_running_loop().set_exception_handler(_loop_error)
    yield
    app.state.engine.close()


def create_app(engine: ServingEngine, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES, api_key: str | None = None) -> Any:
    """The FastAPI application serving ``engine``; with ``api_key``, every request but ``/health`` (the
    ``/v1`` API, ``/docs``, ``/openapi.json``) must carry ``Authorization: Bearer <api_key>`` (what OpenAI
    clients send), else 401."""
    from .._version import __version__

    app = FastAPI(title="text2lora", version=__version__, lifespan=_lifespan,
                  description="OpenAI-compatible server that generates LoRA adapters from task descriptions.")
    app.state.engine, app.state.handler, app.state.max_body_bytes = engine, _Handler(engine), max_body_bytes
    app.include_router(router)
    for exc, handler in CLIENT_ERRORS.items():
        app.add_exception_handler(exc, handler)
    if api_key:
        app.state.expected_auth = f"Bearer {api_key}".encode()
        app.middleware("http")(check_api_key)
    app.add_middleware(RequestIds)  # added last: the outermost, so 401s and 500s carry an id too
    return app


def uvicorn_config(app: Any, host: str = "127.0.0.1", port: int = 8000, log_level: str = "info",
                   limits: ConnectionLimits | None = None) -> Any:
    """The ``uvicorn.Config`` every server here runs with: uvicorn's h11 protocol with the connection guard
    (``limits``: deadlines for each request's head and body, the connection cap; its counts in
    ``app.state.connections`` and ``/v1/stats``), a listen backlog to match the cap, no WebSocket upgrades,
    and uvicorn's own records limited to one per cause a minute."""
    import uvicorn

    protocol = guarded_protocol(limits or ConnectionLimits())
    app.state.connections = protocol.guard
    config = uvicorn.Config(app, host=host, port=port, log_level=log_level, lifespan="on", http=protocol, ws="none",
                            backlog=accept_backlog(protocol.guard.cap))
    limit_repeats(logging.getLogger("uvicorn.error"))  # after Config: it sets up uvicorn's logging
    return config


class ServerThread:
    """Run a uvicorn server for ``app`` in a background thread (tests, benchmarks, notebooks).

    Example::

        with ServerThread(create_app(engine)) as srv:
            client = openai.OpenAI(base_url=srv.url + "/v1", api_key="none")
    """

    def __init__(self, app: Any, host: str = "127.0.0.1", port: int = 0, limits: ConnectionLimits | None = None):
        import uvicorn

        self.config = uvicorn_config(app, host, port, "warning", limits)
        self.server = uvicorn.Server(self.config)
        self.thread = threading.Thread(target=self.server.run, name="t2l-uvicorn", daemon=True)
        self.url = ""

    def start(self, timeout: float = 30.0) -> "ServerThread":
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the server did not start")
            time.sleep(0.02)
        sock = self.server.servers[0].sockets[0]
        host, port = sock.getsockname()[:2]
        self.url = f"http://{host}:{port}"
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)

    def __enter__(self) -> "ServerThread":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def serve(engine: ServingEngine, host: str = "127.0.0.1", port: int = 8000,
          max_body_bytes: int = DEFAULT_MAX_BODY_BYTES, log_level: str = "info", api_key: str | None = None,
          limits: ConnectionLimits | None = None) -> None:
    """Serve until interrupted (blocking)."""
    import uvicorn

    app = create_app(engine, max_body_bytes, api_key)
    uvicorn.Server(uvicorn_config(app, host, port, log_level, limits)).run()
