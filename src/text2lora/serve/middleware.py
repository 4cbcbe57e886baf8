"""The server's HTTP plumbing around the routes: request ids and the one 500 handler, the answers to
client errors, and the optional API key.

Only the request checks (:class:`~text2lora.serve.schemas.APIError`), text2lora's user errors
(:class:`~text2lora.errors.T2LError`) and FastAPI's own validation and routing errors are answered with
a 4xx; any other exception is a bug and becomes a 500 naming the request id, logged once with its
traceback.
"""

from __future__ import annotations

import hmac
import logging
import uuid
from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from ..errors import T2LError
from .schemas import APIError, error_body

__all__ = ["CLIENT_ERRORS", "RequestIds", "check_api_key", "request_id_of"]

log = logging.getLogger(__name__)


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
        except Exception:  # noqa: BLE001 - the server's one 500 handler: a bug, shown as such with its id
            log.exception("request %s failed: %s %s", rid, scope.get("method"), scope.get("path"))
            if started:  # a stream already under way: it ends here, cut short
                return
            body = error_body(f"internal server error (request id {rid}); the server log has the details",
                              "server_error", code="internal_error")
            await JSONResponse(body, 500)(scope, receive, send_with_id)


async def check_api_key(request: Request, call_next: Any) -> Any:
    """401 for a ``/v1`` request without ``Authorization: Bearer <api key>``."""
    if request.url.path.startswith("/v1"):
        given = request.headers.get("authorization", "").encode("utf-8", "replace")
        if not hmac.compare_digest(given, request.app.state.expected_auth):
            return JSONResponse(error_body("missing or wrong API key: send the header 'Authorization: Bearer "
                                           "<key>' (the OpenAI client's api_key)", code="invalid_api_key"), 401)
    return await call_next(request)
