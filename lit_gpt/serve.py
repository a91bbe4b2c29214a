"""Serve a checkpoint over HTTP with LitServe: OpenAI's completions and chat completions protocol, and a page.

    python serve.py --checkpoint runs/shakespeare_char/checkpoints/last.ckpt [--host 127.0.0.1] [--port 8000]

``POST /v1/completions`` and ``POST /v1/chat/completions`` answer as OpenAI's API does, so its clients work
unchanged (lit_gpt/openai_protocol.py: the fields, how chat messages become a script, ``stop``, ``n``, streaming
as server-sent events); ``GET /v1/models`` lists the served checkpoint; ``GET /`` is the page. The same prompt,
settings and seed give the text ``sample.py`` gives. A bad request gets a 4xx answer in OpenAI's error shape. The
command line is in ``serve_cli.py``.
"""

import json
import math
import os
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import litserve as ls
import torch
from starlette.responses import HTMLResponse, JSONResponse

from lit_gpt.files import read_checkpoint
from lit_gpt.generate import TextGenerator, resolve_device
from lit_gpt.openai_protocol import (
    OpenAIError, UntilStop, check_job, choice_delta, envelope, final_choice, model_card, sse, usage,
)
from lit_gpt.tokenizer import CharTokenizer

API_PATH = "/v1/completions"  # LitServe's endpoint: both protocols' jobs reach the workers here
ROUTES = {"/v1/completions": "text_completion", "/v1/chat/completions": "chat.completion"}
PAGE = Path(__file__).with_name("page.html")
BODY_BYTES = 1_000_000  # the stated limit of a request body
FLUSH_SECONDS = 0.02  # a streamed answer sends what was generated at most this often


class OpenAIRoutes:
    """ASGI middleware: checks every completion request before LitServe queues it, answering 4xx in OpenAI's error
    shape, and hands LitServe the checked job; answers ``/v1/models`` itself.

    LitServe answers a body that is not JSON with 500 and a streaming API can only report an error after its 200 has
    gone out; checked here, every bad request gets its 4xx. LitServe's own OpenAISpec covers chat only, reports every
    finish_reason as "stop" and its errors in FastAPI's shape, so both protocols are translated here.
    """

    def __init__(self, app: Any, vocab: list[str], model: str, created: int) -> None:
        self.app, self.tokenizer, self.model, self.created = app, CharTokenizer(vocab), model, created

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or (path not in ROUTES and not path.startswith("/v1/models")):
            return await self.app(scope, receive, send)
        try:
            if path.startswith("/v1/models"):
                return await JSONResponse(self.models(path))(scope, receive, send)
            if scope["method"] != "POST":
                raise OpenAIError(f"use POST with a JSON body on {path}", status=405)
            body = await read_body(receive)
            try:
                job = check_job(json.loads(body), ROUTES[path], self.tokenizer, self.model)
            except (json.JSONDecodeError, UnicodeDecodeError) as err:
                raise OpenAIError(f"the body is not JSON ({err})") from None
        except OpenAIError as err:
            return await JSONResponse(err.body(), status_code=err.status)(scope, receive, send)
        await self.app(*as_litserve_request(scope, job, receive, send))

    def models(self, path: str) -> dict[str, Any]:
        card = model_card(self.model, self.created)
        if path.rstrip("/") == "/v1/models":
            return {"object": "list", "data": [card]}
        if path[len("/v1/models/"):] != self.model:
            raise OpenAIError(f"The model '{path[len('/v1/models/'):]}' does not exist; this server serves "
                              f"'{self.model}'", "model", 404, "model_not_found")
        return card


def as_litserve_request(scope: dict, job: dict[str, Any], receive: Any, send: Any) -> tuple[dict, Any, Any]:
    """(scope, receive, send) for LitServe's endpoint with the job as the body, the answer typed as an event stream
    or JSON (LitServe's streaming answer has no type of its own)."""
    checked = json.dumps(job).encode()
    sent = False

    async def replay() -> dict:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": checked, "more_body": False}
        return await receive()  # the client's disconnect, if it goes away

    kind = b"text/event-stream" if job["stream"] else b"application/json"

    async def send_typed(message: dict) -> None:
        if message["type"] == "http.response.start" and message["status"] == 200:
            headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"content-type"]
            message = {**message, "headers": [*headers, (b"content-type", kind)]}
        await send(message)

    headers = [(k, v) for k, v in scope["headers"] if k.lower() not in (b"content-type", b"content-length")]
    headers += [(b"content-type", b"application/json"), (b"content-length", str(len(checked)).encode())]
    return {**scope, "path": API_PATH, "raw_path": API_PATH.encode(), "headers": headers}, replay, send_typed


async def read_body(receive: Any) -> bytes:
    """The whole request body, or OpenAIError (413) once it passes the stated limit."""
    body, more = b"", True
    while more:
        message = await receive()
        body += message.get("body", b"")
        more = message.get("more_body", False)
        if len(body) > BODY_BYTES:
            raise OpenAIError(f"the body is over {BODY_BYTES} bytes", status=413)
    return body


class Page:
    """ASGI middleware: ``GET /`` is the page (LitServe's own ``/`` only says that it runs)."""

    def __init__(self, app: Any) -> None:
        self.app, self.html = app, PAGE.read_text(encoding="utf-8")

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] == "/" and scope["method"] == "GET":
            return await HTMLResponse(self.html)(scope, receive, send)
        await self.app(scope, receive, send)


def in_chunks(pieces: Iterable[str], seconds: float) -> Iterator[str]:
    """The text generated since the last chunk: the first piece at once, then at most one chunk every ``seconds`` (a
    message per character would cost LitServe's queue more than generating it)."""
    chunk, last = [], -math.inf
    for piece in pieces:
        chunk.append(piece)
        if time.perf_counter() - last >= seconds:
            yield "".join(chunk)
            chunk, last = [], time.perf_counter()
    if chunk:
        yield "".join(chunk)


class CompletionAPI(ls.LitAPI):
    """Generates the choices of checked jobs, one job at a time per worker; each request has its own seed and settings,
    so requests are not batched together (a batch would give other text for a seed than sample.py does)."""

    def __init__(self, checkpoint: str, workers: int = 1) -> None:
        super().__init__(api_path=API_PATH, stream=True)
        self.checkpoint, self.workers = checkpoint, workers

    def setup(self, device: str) -> None:
        if device == "cpu":  # the workers share the cores: more threads than cores would make each one crawl
            torch.set_num_threads(max(1, (os.cpu_count() or 1) // self.workers))
        self.generator = TextGenerator.from_checkpoint(self.checkpoint, device)

    def decode_request(self, request: dict[str, Any]) -> dict[str, Any]:
        return request  # a job checked by OpenAIRoutes

    def predict(self, job: dict[str, Any]) -> Iterator[str]:
        """Server-sent events as the text comes, or the whole answer as one JSON object."""
        choices, completion_chars = [], 0
        for p, prompt in enumerate(job["prompts"]):
            for i in range(job["n"]):
                index = p * job["n"] + i
                chars = self.generator.stream(prompt, job["max_tokens"], temperature=job["temperature"],
                                              top_k=job["top_k"], top_p=job["top_p"], seed=job["seed"] + index)
                pieces = UntilStop(chars, job["stop"])
                text = [prompt] if job["echo"] else []
                if job["stream"] and job["object"] == "chat.completion":
                    yield sse(envelope(job, True, choices=[choice_delta(job, index, None, first=True)]))
                if job["stream"] and text:
                    yield sse(envelope(job, True, choices=[choice_delta(job, index, prompt)]))
                for piece in in_chunks(pieces, FLUSH_SECONDS) if job["stream"] else pieces:
                    text.append(piece)
                    completion_chars += len(piece)
                    if job["stream"]:
                        yield sse(envelope(job, True, choices=[choice_delta(job, index, piece)]))
                choices.append(final_choice(job, index, "".join(text), pieces.finish))
                if job["stream"]:
                    yield sse(envelope(job, True, choices=[choice_delta(job, index, None, pieces.finish)]))
        totals = usage(sum(map(len, job["prompts"])), completion_chars)
        if not job["stream"]:
            yield json.dumps(envelope(job, False, choices=choices, usage=totals))
            return
        if job["include_usage"]:
            yield sse(envelope(job, True, choices=[], usage=totals))
        yield sse("[DONE]")

    def encode_response(self, outputs: Iterator[str]) -> Any:  # Any: FastAPI reads this
        yield from outputs


def model_name(checkpoint: str) -> str:
    """The served model's name: its run and file, ``shakespeare_char_cpu/last`` for
    ``runs/shakespeare_char_cpu/checkpoints/last.ckpt``."""
    path = Path(checkpoint).resolve()
    run = path.parent.parent if path.parent.name == "checkpoints" else path.parent
    return f"{run.name}/{path.stem}"


def build_server(checkpoint: str, device: str = "auto", workers: int = 1, timeout: float = 120.0) -> ls.LitServer:
    """The LitServer for ``checkpoint``, read here once (its vocabulary for the checks): one ``error:`` line if it is
    not a lit_gpt checkpoint, here rather than in a worker."""
    vocab = read_checkpoint(checkpoint)["hyper_parameters"]["vocab"]
    resolved = resolve_device(device)
    accelerator = resolved.type if resolved.type in ("cpu", "cuda", "mps") else "auto"
    devices = 1 if resolved.index is None else [resolved.index]
    routes = {"vocab": vocab, "model": model_name(checkpoint), "created": int(Path(checkpoint).stat().st_mtime)}
    return ls.LitServer(CompletionAPI(checkpoint, workers), accelerator=accelerator, devices=devices,
                        workers_per_device=workers, timeout=timeout, middlewares=[(OpenAIRoutes, routes), Page])
