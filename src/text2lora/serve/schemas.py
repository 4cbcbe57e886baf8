"""Request bodies of the OpenAI-compatible server, and OpenAI-style error objects.

Only the fields the server acts on are declared; other OpenAI fields (``user``,
``logprobs=false``, ``frequency_penalty=0``, ...) are accepted and ignored.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

__all__ = ["ChatRequest", "CompletionRequest", "AdapterCreate", "APIError", "error_body", "validation_message"]


class _Body(BaseModel):
    model_config = ConfigDict(extra="allow")


class ChatMessage(_Body):
    role: Literal["system", "user", "assistant", "developer", "tool"]
    content: str | list[dict[str, Any]] | None = ""

    def text(self) -> str:
        """The message's text (OpenAI content parts of type ``text`` are joined)."""
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        parts = []
        for p in self.content:
            if p.get("type") != "text" or not isinstance(p.get("text"), str):
                raise ValueError("only text content parts ({'type': 'text', 'text': ...}) are supported")
            parts.append(p["text"])
        return "".join(parts)


class StreamOptions(_Body):
    include_usage: bool = False


class _Generation(_Body):
    model: str = Field(min_length=1, description="base model name, adapter id, or 't2l:<task description>'")
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    temperature: float = Field(default=0.0, ge=0.0, le=2.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    n: int = Field(default=1, ge=1, le=1, description="only one choice per request")
    stream: bool = False
    stream_options: StreamOptions | None = None
    stop: str | list[str] | None = None
    seed: int | None = None
    t2l_description: str | None = Field(default=None, description="task description to generate the adapter from")
    t2l_adapter: str | None = Field(default=None, description="adapter id (overrides model)")

    def stops(self) -> list[str]:
        if self.stop is None:
            return []
        stops = [self.stop] if isinstance(self.stop, str) else list(self.stop)
        if len(stops) > 4 or any(not s for s in stops):
            raise ValueError("stop takes up to 4 non-empty strings")
        return stops

    def token_limit(self) -> int | None:
        return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens


class ChatRequest(_Generation):
    messages: list[ChatMessage] = Field(min_length=1)


class CompletionRequest(_Generation):
    prompt: str | list[str]
    echo: bool = False

    def prompt_text(self) -> str:
        if isinstance(self.prompt, str):
            return self.prompt
        if len(self.prompt) != 1:
            raise ValueError("only one prompt per request is supported; send a request per prompt")
        return self.prompt[0]


class AdapterCreate(_Body):
    description: str
    name: str | None = Field(default=None, description="id to give the adapter ([A-Za-z0-9_-]{1,64}, not starting "
                             "with 't2l-', which derived ids have, and not 'base' or the base model's name)")


class APIError(Exception):
    """An error the server answers with an OpenAI-style error object."""

    def __init__(self, status: int, message: str, type: str = "invalid_request_error", param: str | None = None,
                 code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code

    def body(self) -> dict[str, Any]:
        return error_body(self.message, self.type, self.param, self.code)


def error_body(message: str, type: str = "invalid_request_error", param: str | None = None,
               code: str | None = None) -> dict[str, Any]:
    """``{"error": {"message", "type", "param", "code"}}`` as the OpenAI API returns it."""
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def validation_message(e: ValidationError) -> tuple[str, str | None]:
    """A one-line message and the offending parameter of a pydantic validation error."""
    err = e.errors()[0]
    loc = ".".join(str(x) for x in err.get("loc", ()))
    msg = err.get("msg", "invalid value")
    if err.get("type") == "missing":
        return f"missing required parameter: {loc!r}", loc or None
    return f"invalid value for {loc!r}: {msg}", loc or None
