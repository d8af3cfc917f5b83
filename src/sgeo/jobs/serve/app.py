"""`sgeo serve`: one model loaded once, the Gradio page and the OpenAI-compatible API on one uvicorn server."""

from __future__ import annotations

import hmac
import ipaddress
import os
import re
import socket
from dataclasses import dataclass
from pathlib import Path

from ...cli_options import MODEL_HELP, option
from ...errors import SgeoError
from ...inference.loading import DEVICE_HELP, load_for_inference
from ...inference.options import MAX_NEW_TOKENS, TEMPERATURE, check_max_new_tokens, check_temperature
from .defaults import MAX_BATCH, MAX_IMAGE_MB, MAX_QUEUE, MAX_REQUEST_MB, MIB

# Heavy imports (torch, transformers, gradio) wait until the options are checked and the port is bound, so
# a mistyped option fails at once.


@dataclass
class ServeConfig:
    """The `sgeo serve` options: each field is one (`sgeo.cli_options`)."""

    model: str = option("tiny", help=MODEL_HELP)
    host: str = option("127.0.0.1", help="address to listen on (0.0.0.0 opens it to the network)")
    port: int = option(7860, help="port (0: any free one, printed at start)")
    image_root: Path | None = option(None, help="folder whose images API requests may name by path")
    temperature: float = option(TEMPERATURE, help="default temperature (0: greedy)")
    max_new_tokens: int = option(MAX_NEW_TOKENS, help="default answer length in tokens")
    max_request_mb: float = option(MAX_REQUEST_MB, help="largest request body (and upload) accepted, in MiB")
    max_image_mb: float = option(
        MAX_IMAGE_MB, help="most memory one image may take decoded, in MiB (a larger JPEG is decoded reduced)"
    )
    device: str | None = option(None, help=DEVICE_HELP)
    load_4bit: bool = option(False, flags=("--load-4bit",))
    load_8bit: bool = option(False, flags=("--load-8bit",))
    api_key: str | None = option(
        None,
        help="require 'Authorization: Bearer KEY' on /v1 and KEY as the page's password (needed off loopback)",
        envvar="SGEO_API_KEY",
        show_default=False,
    )
    no_auth: bool = option(  # serve a non-loopback --host without a key, deliberately
        False, help="serve a non-loopback --host without a key", flags=("--no-auth",)
    )
    max_batch: int = option(MAX_BATCH, help="answers generated together (continuous batching)")
    max_queue: int = option(MAX_QUEUE, help="requests that may wait beyond --max-batch; more get HTTP 429")


def _is_loopback(host: str) -> bool:
    """Whether every address `host` names is this machine's loopback (one that does not resolve is left to
    `_bind`, which says so)."""
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror:
        return True
    return all(ipaddress.ip_address(info[4][0].split("%")[0]).is_loopback for info in infos)


def _check_auth(config: ServeConfig) -> None:
    if config.api_key is not None and config.no_auth:
        raise SgeoError("--api-key (or SGEO_API_KEY) and --no-auth contradict each other; choose one")
    if config.api_key is not None and not re.fullmatch(r"[!-~]+", config.api_key):
        raise SgeoError(
            "--api-key (or SGEO_API_KEY) must be printable ASCII, without spaces (it travels in an HTTP header)"
        )
    if config.api_key is None and not config.no_auth and not _is_loopback(config.host):
        raise SgeoError(
            f"--host {config.host} opens the model to the network: pass --api-key KEY (or set SGEO_API_KEY) so "
            "clients must send 'Authorization: Bearer KEY', or --no-auth to serve it to anyone deliberately"
        )


def _check(config: ServeConfig) -> None:
    _check_auth(config)
    if not 1 <= config.max_batch <= 1024:
        raise SgeoError(f"--max-batch must be from 1 to 1024, got {config.max_batch}")
    if not 0 <= config.max_queue <= 100_000:
        raise SgeoError(f"--max-queue must be from 0 to 100000, got {config.max_queue}")
    if not 0 <= config.port <= 65535:
        raise SgeoError(f"--port must be from 0 to 65535 (0: any free port), got {config.port}")
    if config.image_root is not None and not config.image_root.is_dir():
        raise SgeoError(f"--image-root {config.image_root} is not a folder; point it at the images to serve")
    if not config.max_request_mb > 0:
        raise SgeoError(f"--max-request-mb must be positive, got {config.max_request_mb}")
    if not 1 <= config.max_image_mb <= 4096:  # also refuses nan
        raise SgeoError(f"--max-image-mb must be from 1 to 4096, got {config.max_image_mb}")
    check_max_new_tokens(config.max_new_tokens)
    check_temperature(config.temperature)


def _bind(host: str, port: int) -> socket.socket:
    """The listening socket, bound before the model loads so a taken port fails at once and clearly."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as error:
        raise SgeoError(f"--host {host!r} is not an address of this machine: {error.strerror}") from None
    family, _, _, _, address = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as error:
        sock.close()
        raise SgeoError(f"cannot listen on {host}:{port}: {error.strerror}; choose another --port") from None
    sock.listen(128)
    return sock


LOGIN_MESSAGE = "Enter the server's API key as the password (any user name)."


def _password_check(api_key: str):
    """Gradio's login check: the password is the API key (compared in constant time), the user name free."""

    def check(username: str, password: str) -> bool:
        return hmac.compare_digest(password.encode(), api_key.encode())

    return check


def build_app(
    engine,
    limits,
    max_body_bytes: int,
    examples,
    temperature: float,
    max_tokens: int,
    api_key: str | None = None,
):
    """The FastAPI app: the API routes first, the Gradio page mounted at `/` behind them; with `api_key`, the
    API wants it as a bearer token and the page as the password of its login form (any user name)."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no calls home from the server
    import gradio as gr
    from fastapi import FastAPI

    from .api import add_api
    from .web import CSS, build_page, theme

    app = FastAPI(title="sgeo", docs_url=None, redoc_url=None, openapi_url=None)
    add_api(app, engine, limits, max_body_bytes, api_key)
    page = build_page(engine, limits, examples, temperature, max_tokens)
    login = {"auth": _password_check(api_key), "auth_message": LOGIN_MESSAGE} if api_key else {}
    app = gr.mount_gradio_app(
        app, page, path="/", theme=theme(), css=CSS, ssr_mode=False, mcp_server=False, run_history=False,
        max_file_size=max_body_bytes, allowed_paths=sorted({str(p.parent) for p, _ in examples}),
        footer_links=["gradio", "settings"], **login,
    )  # fmt: skip
    # Gradio checks that a file named in a call was uploaded (and copies nothing else) only once `launch()`
    # has set `has_launched`; a mounted app never launches, so without this its call API copies any file a
    # client names into its cache and serves it back (gradio 6.31: processing_utils._check_allowed).
    page.has_launched = True
    return app


def run_serve(config: ServeConfig) -> None:
    """Load the model, bind the socket, serve until interrupted."""
    _check(config)
    sock = _bind(config.host, config.port)
    from transformers.utils import logging as hf_logging

    from .chat_request import Limits
    from .engine import Engine
    from .examples import examples

    hf_logging.disable_progress_bar()
    model, processor = load_for_inference(config.model, config.device, config.load_4bit, config.load_8bit)
    engine = Engine(model, processor, config.model, config.max_batch, config.max_queue)
    max_body = int(config.max_request_mb * MIB)
    limits = Limits(
        image_root=config.image_root.resolve() if config.image_root else None,
        temperature=config.temperature, max_tokens=config.max_new_tokens,
        max_tokens_limit=engine.max_length, max_file_bytes=max_body,
        max_decoded_bytes=int(config.max_image_mb * MIB),
    )  # fmt: skip
    app = build_app(
        engine, limits, max_body, examples(), config.temperature, config.max_new_tokens, config.api_key
    )

    import uvicorn

    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    print(
        f"sgeo serve: http://{shown}:{port}/  (API: POST http://{shown}:{port}/v1/chat/completions)",
        flush=True,
    )
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=2))
    try:
        server.run(sockets=[sock])
    finally:
        engine.close()
