"""`POST /v1/chat/completions` (OpenAI's format, streamed as server-sent events or not) and `GET /v1/models`.

Requests are stateless: each carries its whole conversation and its one image. Bodies over the size cap are
refused before they are read in full; every refusal is a 4xx with one line of JSON,
`{"error": {"message": ..., "type": ...}}`, and the server goes on serving.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator, Iterator

import anyio
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.concurrency import iterate_in_threadpool, run_in_threadpool
from starlette.exceptions import HTTPException

from ...errors import SgeoError
from .chat_request import ApiError, ChatRequest, Limits, parse_chat_request
from .engine import Engine

DRAIN = 4


def add_api(app: FastAPI, engine: Engine, limits: Limits, max_body_bytes: int) -> None:
    """Add the OpenAI-compatible routes and their JSON error handlers to `app`."""

    @app.get("/v1/models")
    def models() -> dict:
        return {"object": "list", "data": [{"id": engine.name, "object": "model", "owned_by": "sgeo"}]}

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        body = await _read_body(request, max_body_bytes)
        chat_request = await run_in_threadpool(parse_chat_request, body, limits)
        chat, prompt_tokens = await run_in_threadpool(_prepare, engine, chat_request)
        reply = engine.reply(chat, chat_request.question, chat_request.temperature, chat_request.max_tokens)
        completion = _Completion(engine.name, prompt_tokens)
        if chat_request.stream:
            return StreamingResponse(
                _closing_on_disconnect(completion.events(reply)),
                media_type="text/event-stream",
                headers={"Cache-Control": "no-cache"},
            )
        return await run_in_threadpool(completion.whole, reply)

    @app.api_route("/v1/{rest:path}", methods=["GET", "POST", "PUT", "PATCH", "DELETE"])
    def elsewhere(rest: str, request: Request):  # /v1 is the API's: no fall-through to the page
        if rest in ("models", "chat/completions"):
            raise ApiError(405, f"{request.method} is not allowed on /v1/{rest}")
        raise ApiError(
            404,
            f"no endpoint /v1/{rest}; this server has POST /v1/chat/completions and GET /v1/models",
            "not_found_error",
        )

    @app.exception_handler(ApiError)
    async def api_error(request: Request, error: ApiError):
        return JSONResponse(error.body(), status_code=error.status)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, error: HTTPException):  # 404, 405 of the API's own routes
        kind = "not_found_error" if error.status_code == 404 else "invalid_request_error"
        return JSONResponse(ApiError(error.status_code, str(error.detail), kind).body(), error.status_code)

    @app.exception_handler(Exception)
    async def server_error(request: Request, error: Exception):
        return JSONResponse(ApiError(500, f"{type(error).__name__}: {error}", "server_error").body(), 500)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, error: RequestValidationError):
        return JSONResponse(ApiError(400, f"invalid request: {error.errors()[:1]}").body(), 400)


async def _read_body(request: Request, limit: int) -> bytes:
    """The body, or a 413. Up to `DRAIN` times the limit is read and dropped first, so that the client, which
    is still sending, can read the refusal; a larger body is refused at once and its connection dropped."""
    declared = request.headers.get("content-length", "")
    over = f"the request body is over the server's limit of {limit} bytes"
    if declared.isdigit() and int(declared) > DRAIN * limit:
        raise ApiError(413, over)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > DRAIN * limit:
            break
        if size <= limit:
            chunks.append(chunk)
    if size > limit:
        raise ApiError(413, over)
    return b"".join(chunks)


async def _closing_on_disconnect(events: Iterator[str]) -> AsyncIterator[str]:
    """`events`, read on worker threads; when the client goes away mid-answer (the response is cancelled), the
    generator is closed here, which stops its generation at the next token, instead of being left to the
    garbage collector on whatever thread it runs."""
    try:
        async for event in iterate_in_threadpool(events):
            yield event
    finally:
        with anyio.CancelScope(shield=True):
            await run_in_threadpool(events.close)


def _prepare(engine: Engine, chat_request: ChatRequest):
    """Encode the image and count the prompt (both queue on the model), so a refusal is a 4xx before any output."""
    chat = engine.open_chat(chat_request.image, chat_request.history)
    try:
        return chat, engine.prompt_tokens(chat, chat_request.question)
    except SgeoError as error:
        raise ApiError(400, str(error)) from None


class _Completion:
    """One completion's id and counts, written as a whole response or as `chat.completion.chunk` events."""

    def __init__(self, model: str, prompt_tokens: int):
        self.id, self.created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
        self.model, self.prompt_tokens = model, prompt_tokens

    def _head(self, kind: str) -> dict:
        return {"id": self.id, "object": kind, "created": self.created, "model": self.model}

    def _usage(self, reply) -> dict:
        total = self.prompt_tokens + reply.tokens
        return {"prompt_tokens": self.prompt_tokens, "completion_tokens": reply.tokens, "total_tokens": total}

    def whole(self, reply) -> dict:
        for _ in reply:
            pass
        message = {"role": "assistant", "content": reply.answer}
        choice = {"index": 0, "message": message, "finish_reason": reply.finish_reason}
        return {**self._head("chat.completion"), "choices": [choice], "usage": self._usage(reply)}

    def events(self, reply) -> Iterator[str]:
        def chunk(delta: dict, finish_reason: str | None = None, **extra) -> str:
            choice = {"index": 0, "delta": delta, "finish_reason": finish_reason}
            return f"data: {json.dumps({**self._head('chat.completion.chunk'), 'choices': [choice], **extra})}\n\n"

        yield chunk({"role": "assistant", "content": ""})
        try:
            for piece in reply:
                yield chunk({"content": piece})
        except Exception as error:  # the status line is sent: say it in the stream, then end it
            yield f"data: {json.dumps(ApiError(500, f'generation failed: {error}', 'server_error').body())}\n\n"
        else:
            yield chunk({}, reply.finish_reason, usage=self._usage(reply))
        yield "data: [DONE]\n\n"
