"""The server's HTTP plumbing around the routes: request ids and the one 500 handler, the answers to
client errors, the optional API key, and the guard on connections (deadlines for reading a request, a
cap on open connections, repeated log records dropped).

Only the request checks (:class:`~text2lora.serve.schemas.APIError`), text2lora's user errors
(:class:`~text2lora.errors.T2LError`) and FastAPI's own validation and routing errors are answered with
a 4xx; a client that goes away before its request is read is logged as such (no traceback); any other
exception is a bug and becomes a 500 naming the request id, logged once with its traceback.
"""

from __future__ import annotations

import hmac
import json
import logging
import threading
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect

from ..errors import ConfigError, T2LError
from .schemas import APIError, error_body

__all__ = ["CLIENT_ERRORS", "RequestIds", "check_api_key", "request_id_of", "ConnectionLimits", "ConnectionGuard",
           "accept_backlog", "OncePerCause", "limit_repeats", "guarded_protocol"]

log = logging.getLogger(__name__)
conn_log = logging.getLogger("text2lora.serve.connections")
"""Records about connections and clients (timeouts, the connection cap, disconnects): one per cause a minute."""


def request_id_of(request: Request) -> str:
    """The id :class:`RequestIds` gave ``request`` (``"-"`` outside it)."""
    return request.scope.get("state", {}).get("request_id", "-")


async def _api_error(request: Request, e: APIError) -> JSONResponse:
    return JSONResponse(e.body(), status_code=e.status)


async def _user_error(request: Request, e: T2LError) -> JSONResponse:
    """A problem the client can fix, raised by the library (an adapter that does not load, ...): 400."""
    log.info("request %s: %s: %s", request_id_of(request), type(e).__name__, e)
    return JSONResponse(error_body(str(e), code="invalid_value"), 400)


async def _validation(request: Request, e: RequestValidationError) -> JSONResponse:
    return JSONResponse(error_body(f"invalid request: {e.errors()[0].get('msg')}", code="invalid_value"), 400)


async def _http(request: Request, e: HTTPException) -> JSONResponse:
    kind = "not_found_error" if e.status_code == 404 else "invalid_request_error"
    return JSONResponse(error_body(str(e.detail), kind, code=str(e.status_code)), e.status_code)


CLIENT_ERRORS = {APIError: _api_error, T2LError: _user_error, RequestValidationError: _validation,
                 HTTPException: _http}
"""The errors answered with a 4xx (or the status an :class:`APIError` names); any other exception is a 500."""


class RequestIds:
    """ASGI middleware: give every HTTP request an id, sent back in the ``x-request-id`` header, and turn
    an exception that no handler of :data:`CLIENT_ERRORS` claimed into a 500 naming that id; the log
    gets one record with the id, the route and the traceback."""

    def __init__(self, app: Any):
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = "req_" + uuid.uuid4().hex[:24]
        scope.setdefault("state", {})["request_id"] = rid
        header = (b"x-request-id", rid.encode())
        started = False

        async def send_with_id(message: dict[str, Any]) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                message = {**message, "headers": [*message.get("headers", []), header]}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except ClientDisconnect:  # the client went away (or was cut off) before its request was read
            conn_log.info("request %s: the client disconnected before sending its whole request (%s %s)", rid,
                          scope.get("method"), scope.get("path"))
        except Exception:  # noqa: BLE001 - the server's one 500 handler: a bug, shown as such with its id
            log.exception("request %s failed: %s %s", rid, scope.get("method"), scope.get("path"))
            if started:  # a stream already under way: it ends here, cut short
                return
            body = error_body(f"internal server error (request id {rid}); the server log has the details",
                              "server_error", code="internal_error")
            await JSONResponse(body, 500)(scope, receive, send_with_id)


async def check_api_key(request: Request, call_next: Any) -> Any:
    """401 for a request without ``Authorization: Bearer <api key>``, on every route but ``/health`` (the
    ``/v1`` API, and ``/docs`` and ``/openapi.json``, which describe it)."""
    if request.url.path != "/health":
        given = request.headers.get("authorization", "").encode("utf-8", "replace")
        if not hmac.compare_digest(given, request.app.state.expected_auth):
            return JSONResponse(error_body("missing or wrong API key: send the header 'Authorization: Bearer "
                                           "<key>' (the OpenAI client's api_key)", code="invalid_api_key"), 401)
    return await call_next(request)


# ----------------------------------------------------------------------------- log records

class OncePerCause(logging.Filter):
    """A logging filter that lets through the first record of each cause (logger, message template and
    exception type), then at most one per ``interval`` seconds, saying how many were dropped between.

    So a flood of clients that each trip the same error (a slowloris, a storm of malformed requests)
    writes a few lines a minute, not one per socket."""

    def __init__(self, interval: float = 60.0, max_causes: int = 1024):
        super().__init__()
        self.interval, self.max_causes = interval, max_causes
        self._seen: OrderedDict[tuple[str, str, str | None], list[float]] = OrderedDict()
        self._lock = threading.Lock()

    def clear(self) -> None:
        """Forget every cause seen so far."""
        with self._lock:
            self._seen.clear()

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[0].__name__ if record.exc_info and record.exc_info[0] else None
        cause = (record.name, str(record.msg), exc)
        now = time.monotonic()
        with self._lock:
            seen = self._seen.get(cause)
            if seen is not None and now - seen[0] < self.interval:
                seen[1] += 1
                return False
            dropped = int(seen[1]) if seen is not None else 0
            self._seen[cause] = [now, 0]
            self._seen.move_to_end(cause)
            while len(self._seen) > self.max_causes:
                self._seen.popitem(last=False)
        if dropped:
            record.msg = f"{record.msg} ({dropped} more like this in the last {self.interval:g} s not logged)"
        return True


def limit_repeats(logger: logging.Logger, interval: float = 60.0) -> None:
    """Give ``logger`` a :class:`OncePerCause` filter (once)."""
    if not any(isinstance(f, OncePerCause) for f in logger.filters):
        logger.addFilter(OncePerCause(interval))


limit_repeats(conn_log)


# ----------------------------------------------------------------------------- connections

DEFAULT_MAX_CONNECTIONS = 1000


@dataclass
class ConnectionLimits:
    """How long a client may take to send its request, and how many connections the server holds open."""

    head_timeout: float = 10.0
    """seconds to send a request's line and headers, counted from the connection's opening (on a kept-alive
    connection, from the request's first byte; idle ones are closed by uvicorn's keep-alive timeout, 5 s);
    then 408 and the connection is closed (silently when not one byte came)."""
    body_timeout: float = 30.0
    """seconds to send a request's body, counted from the end of its headers; then 408 and closed."""
    max_connections: int | None = None
    """most connections held open at once (None: half the open files the process has left, at most 1000). A new
    connection past it closes the oldest one that is idle, else still sending its request (503), so a
    client that does send a request, ``/health`` included, is served while others hold connections half
    open; only when every open connection has a request in progress is the new one refused (503)."""

    def __post_init__(self) -> None:
        for name in ("head_timeout", "body_timeout"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name} must be > 0 seconds, got {getattr(self, name)}")
        if self.max_connections is not None and self.max_connections < 1:
            raise ConfigError(f"max_connections must be >= 1, got {self.max_connections}")

    def cap(self) -> int:
        """The connection cap: ``max_connections``, else half the file descriptors the process has left under
        its soft open-file limit (at most 1000), so that the server never runs out of them."""
        if self.max_connections is not None:
            return self.max_connections
        try:
            import resource

            soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        except (ImportError, OSError, ValueError):
            return DEFAULT_MAX_CONNECTIONS
        if soft == resource.RLIM_INFINITY:
            return DEFAULT_MAX_CONNECTIONS
        return max(8, min(DEFAULT_MAX_CONNECTIONS, (soft - _fds_in_use()) // 2))


def accept_backlog(cap: int) -> int:
    """The listen queue for a server capped at ``cap`` connections, an eighth of the cap (8 to 2048). The
    event loop accepts up to this many connections a turn, a few turns before the cap closes the excess, so
    the descriptors in use stay under ``cap`` plus a few backlogs: within what :meth:`ConnectionLimits.cap`
    leaves free."""
    return max(8, min(2048, cap // 8))


def _fds_in_use() -> int:
    for d in ("/proc/self/fd", "/dev/fd"):
        try:
            import os

            return len(os.listdir(d))
        except OSError:
            continue
    return 0


class ConnectionGuard:
    """The open connections of one server, oldest first (by when each began waiting for its current
    request), and the counts of what was cut: ``head_timeouts``, ``body_timeouts``, ``evicted`` (closed to
    make room for a new connection) and ``refused`` (new connections closed because every open one had a
    request in progress). Used on the event loop thread only."""

    def __init__(self, limits: ConnectionLimits):
        self.limits, self.cap = limits, limits.cap()
        self.open: OrderedDict[Any, None] = OrderedDict()
        self.counts = {"head_timeouts": 0, "body_timeouts": 0, "evicted": 0, "refused": 0}

    def snapshot(self) -> dict[str, Any]:
        return {"open": len(self.open), "cap": self.cap, **self.counts}

    def opened(self, conn: Any) -> bool:
        """Register ``conn``; past the cap close the oldest connection still sending its request (``False``
        when that is ``conn`` itself: every other one has a request in progress)."""
        self.open[conn] = None
        if len(self.open) <= self.cap:
            return True
        victim = self._oldest("idle", conn) or self._oldest("head", conn) or self._oldest("body", conn)
        if victim is None:
            self.counts["refused"] += 1
            conn_log.warning("%d connections are open (the limit) and all have requests in progress: new "
                             "connections get 503 until one ends", self.cap)
            conn.refuse(503, f"the server has {self.cap} connections open; retry later", "server_busy")
            return False
        self.counts["evicted"] += 1
        conn_log.warning("%d connections are open (the limit): closing the oldest that has not sent its whole "
                         "request to make room for a new one", self.cap)
        victim.refuse(503, f"the server has {self.cap} connections open and closed this one, which had not "
                      "sent its whole request; send requests at once", "server_busy")
        return True

    def _oldest(self, phase: str, exclude: Any) -> Any:
        return next((c for c in self.open if c is not exclude and c.reading() == phase), None)

    def closed(self, conn: Any) -> None:
        self.open.pop(conn, None)

    def touch(self, conn: Any) -> None:
        """``conn`` begins waiting for its next request (it becomes the youngest)."""
        if conn in self.open:
            self.open.move_to_end(conn)

    def timed_out(self, phase: str, limit: float) -> None:
        self.counts[f"{phase}_timeouts"] += 1
        what = "request line and headers" if phase == "head" else "request body"
        conn_log.warning("closing connections that did not send their %s within %g s (408)", what, limit)


def guarded_protocol(limits: ConnectionLimits) -> type:
    """A subclass of uvicorn's h11 protocol for one server, with a :class:`ConnectionGuard` of its own (the
    class attribute ``guard``): deadlines for reading each request's head and body, and the connection cap.
    Pass it as ``uvicorn.Config(http=...)``."""
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    guard = ConnectionGuard(limits)

    class GuardedH11Protocol(H11Protocol):
        """uvicorn's h11 protocol with a deadline for each request's head and body and a connection cap."""

        def connection_made(self, transport: Any) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._timer: Any = None
            self._phase: str | None = None
            self._opened = self.loop.time()
            if guard.opened(self):
                self._arm()

        def connection_lost(self, exc: Exception | None) -> None:
            guard.closed(self)
            self._disarm()
            super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            self._arm()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing():
                guard.touch(self)
                self._arm()

        def handle_websocket_upgrade(self, event: Any) -> None:  # the connection leaves this protocol
            guard.closed(self)
            self._disarm()
            super().handle_websocket_upgrade(event)

        def reading(self) -> str | None:
            """``"idle"`` while no byte of a request has arrived, ``"head"`` while its line and headers
            arrive, ``"body"`` while its body arrives, else ``None`` (a request being answered)."""
            state = self.conn.their_state
            if state is h11.SEND_BODY:
                return "body"
            if state is h11.IDLE and (self.cycle is None or self.cycle.response_complete):
                return "head" if self.conn.trailing_data[0] else "idle"
            return None

        def _deadline_phase(self) -> str | None:
            phase = self.reading()
            # kept alive between requests: uvicorn's keep-alive timeout closes it if nothing comes
            return None if phase == "idle" and self.cycle is not None else phase

        def _arm(self) -> None:
            phase = self._deadline_phase()
            if phase == self._phase:
                return
            self._disarm()
            self._phase = phase
            if phase == "body":
                self._timer = self.loop.call_later(limits.body_timeout, self._expired)
            elif phase is not None:  # a new connection counts from its opening, a kept-alive one from its first byte
                start = self._opened if self.cycle is None else self.loop.time()
                self._timer = self.loop.call_at(start + limits.head_timeout, self._expired)

        def _disarm(self) -> None:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            self._phase = None

        def _expired(self) -> None:
            phase, self._timer = self._phase, None
            if self.transport.is_closing():
                return
            if self._deadline_phase() != phase:  # it moved on in the meantime
                self._phase = None
                self._arm()
                return
            what, limit, kind = (("request body", limits.body_timeout, "body") if phase == "body" else
                                 ("request line and headers", limits.head_timeout, "head"))
            guard.timed_out(kind, limit)
            self.refuse(408, f"the {what} did not arrive within {limit:g} s; send each request at once",
                        "request_timeout")

        def refuse(self, status: int, message: str, code: str) -> None:
            """Close the connection; a client part-way through sending a request first gets ``status`` with an
            OpenAI-style error (unless a response is already under way), and a request whose body was still
            arriving sees its client disconnect. A connection with no request begun is closed silently."""
            guard.closed(self)
            self._disarm()
            cycle = self.cycle
            if self.reading() in ("head", "body") and (cycle is None or cycle.response_complete
                                                        or not cycle.response_started):
                body = json.dumps(error_body(message, code=code)).encode()
                head = (f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\ncontent-type: application/json\r\n"
                        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n").encode()
                self.transport.write(head + body)
            if cycle is not None and not cycle.response_complete:
                cycle.disconnected = True
                cycle.message_event.set()
            self.transport.close()

    GuardedH11Protocol.guard = guard  # type: ignore[attr-defined]
    return GuardedH11Protocol
