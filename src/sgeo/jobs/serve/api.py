"""`POST /v1/chat/completions` (OpenAI's format, streamed as server-sent events or not) and `GET /v1/models`.

Requests are stateless: each carries its whole conversation and its one image. With an API key, every `/v1/`
route wants `Authorization: Bearer KEY` (compared in constant time). A request takes one of the engine's
slots once its body is read, and gives it back when its answer ends or its client goes away (which stops
its generation); with none free it gets 429 and `Retry-After`. Bodies over the size cap are refused before
they are read in full; every refusal is a 4xx with one line of JSON, `{"error": {"message": ..., "type":
...}}`, and the server goes on serving.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import time
import uuid
from collections.abc import AsyncIterator

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect

from ...errors import SgeoError
from .chat_request import ApiError, ChatRequest, Limits, parse_chat_request
from .engine import Busy, Engine
from .reply import Chat, Reply

DRAIN = 4


def add_api(
    app: FastAPI, engine: Engine, limits: Limits, max_body_bytes: int, api_key: str | None = None
) -> None:
    """Add the OpenAI-compatible routes (behind `api_key` when given) and their JSON error handlers to `app`."""
    router = APIRouter(dependencies=[Depends(_authorize(api_key))])

    @router.get("/v1/models")
    def models() -> dict:
        return {"object": "list", "data": [{"id": engine.name, "object": "model", "owned_by": "sgeo"}]}

    @router.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        try:
            body = await _read_body(request, max_body_bytes)
        except ClientDisconnect:  # gone before its question arrived: nothing to answer, nothing to log
            return Response(status_code=499)
        # a place is taken once the body is in: a client sending slowly holds none
        try:
            slot = engine.admit()
        except Busy as busy:
            raise ApiError(
                429, str(busy), "rate_limit_error", {"Retry-After": str(busy.retry_after)}
            ) from None
        try:
            chat_request = await run_in_threadpool(parse_chat_request, body, limits)
            template = await run_in_threadpool(_template, engine, chat_request.system)
            chat = await engine.open_chat_async(chat_request.image, chat_request.history, template)
            prompt = await run_in_threadpool(_prompt, engine, chat, chat_request)
            reply = engine.reply(
                chat, chat_request.question, chat_request.temperature, chat_request.max_tokens,
                seed=chat_request.seed, slot=slot, prompt_ids=prompt, stop=chat_request.stop,
            )  # fmt: skip
        except BaseException:
            slot.release()
            raise
        completion = _Completion(engine.name, len(prompt))
        if chat_request.stream:
            return _ReplyStream(
                reply,
                completion.events(reply),
                media_type="text/event-stream",
                headers={"Cache-Control": "no-cache"},
            )
        return await _whole(request, reply, completion)

    @router.api_route("/v1/{rest:path}", methods=["GET", "POST", "PUT", "PATCH", "DELETE"])
    def elsewhere(rest: str, request: Request):  # /v1 is the API's: no fall-through to the page
        if rest in ("models", "chat/completions"):
            raise ApiError(405, f"{request.method} is not allowed on /v1/{rest}")
        raise ApiError(
            404,
            f"no endpoint /v1/{rest}; this server has POST /v1/chat/completions and GET /v1/models",
            "not_found_error",
        )

    app.include_router(router)

    @app.exception_handler(ApiError)
    async def api_error(request: Request, error: ApiError):
        return JSONResponse(error.body(), status_code=error.status, headers=error.headers)

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


def _authorize(api_key: str | None):
    """The dependency every /v1 route runs first: without a key configured, nothing to check."""
    expected = f"Bearer {api_key}".encode() if api_key else None

    def check(request: Request) -> None:
        if expected is None:
            return
        given = request.headers.get("authorization", "").encode()
        if not hmac.compare_digest(given, expected):  # constant time: the key cannot be guessed byte by byte
            what = "a wrong API key" if given else "no API key"
            raise ApiError(
                401, f"{what}: send the server's key as the header 'Authorization: Bearer KEY'",
                "authentication_error", {"WWW-Authenticate": "Bearer"},
            )  # fmt: skip

    return check


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


def _template(engine: Engine, system: str | None):
    """The model's template with the request's system prompt, or a 400 (a template without one)."""
    try:
        return engine.template_for(system)
    except SgeoError as error:
        raise ApiError(400, f"the system message cannot be used: {error}") from None


def _prompt(engine: Engine, chat: Chat, chat_request: ChatRequest) -> list[int]:
    """The prompt's token ids, or a 400 for a conversation the model cannot hold: a refusal before any output."""
    try:
        return engine.prompt_ids(chat, chat_request.question)
    except SgeoError as error:
        raise ApiError(400, str(error)) from None


async def _gone(receive) -> None:
    """Returns when the client has gone away (once the body is read, the next message says so)."""
    while (await receive())["type"] != "http.disconnect":
        pass


async def _whole(request: Request, reply: Reply, completion: _Completion):
    """The whole completion; if the client goes away first, its generation is stopped and its slot freed."""
    answer = asyncio.ensure_future(completion.whole(reply))
    gone = asyncio.ensure_future(_gone(request.receive))
    try:
        await asyncio.wait({answer, gone}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        gone.cancel()
        if not answer.done():
            answer.cancel()
            reply.close()
            await asyncio.gather(answer, return_exceptions=True)  # its reader unwound before we go on
    if answer.cancelled():
        return Response(status_code=499)  # nobody is there to read it
    return answer.result()


class _ReplyStream(StreamingResponse):
    """A streamed answer whose reply is closed however the response ends, and as soon as its client goes
    away, even while the answer waits for a place in the batch (no token to send, so no failed send to tell)."""

    def __init__(self, reply: Reply, content, **kwargs):
        super().__init__(content, **kwargs)
        self.reply = reply

    async def __call__(self, scope, receive, send) -> None:
        async def watch() -> None:
            await _gone(receive)
            self.reply.close()

        watcher = asyncio.ensure_future(watch())
        try:
            await super().__call__(scope, receive, send)
        except ClientDisconnect:  # a send found the client gone: a normal end, not a server error to log
            pass
        finally:
            watcher.cancel()
            self.reply.close()


class _Completion:
    """One completion's id and counts, written as a whole response or as `chat.completion.chunk` events."""

    def __init__(self, model: str, prompt_tokens: int):
        self.id, self.created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
        self.model, self.prompt_tokens = model, prompt_tokens

    def _head(self, kind: str) -> dict:
        return {"id": self.id, "object": kind, "created": self.created, "model": self.model}

    def _usage(self, reply: Reply) -> dict:
        total = self.prompt_tokens + reply.tokens
        return {"prompt_tokens": self.prompt_tokens, "completion_tokens": reply.tokens, "total_tokens": total}

    async def whole(self, reply: Reply) -> dict:
        async for _ in reply.stream():
            pass
        message = {"role": "assistant", "content": reply.answer}
        choice = {"index": 0, "message": message, "finish_reason": reply.finish_reason}
        return {**self._head("chat.completion"), "choices": [choice], "usage": self._usage(reply)}

    async def events(self, reply: Reply) -> AsyncIterator[str]:
        def chunk(delta: dict, finish_reason: str | None = None, **extra) -> str:
            choice = {"index": 0, "delta": delta, "finish_reason": finish_reason}
            return f"data: {json.dumps({**self._head('chat.completion.chunk'), 'choices': [choice], **extra})}\n\n"

        yield chunk({"role": "assistant", "content": ""})
        try:
            async for piece in reply.stream():
                yield chunk({"content": piece})
        except Exception as error:  # the status line is sent: say it in the stream, then end it
            yield f"data: {json.dumps(ApiError(500, f'generation failed: {error}', 'server_error').body())}\n\n"
        else:
            if reply.answer is None:  # closed: the client has gone
                return
            yield chunk({}, reply.finish_reason, usage=self._usage(reply))
        yield "data: [DONE]\n\n"
