"""Serve a checkpoint over HTTP with LitServe: a completion API that can stream, and a page to write with it.

    python serve.py --checkpoint runs/shakespeare_char/checkpoints/last.ckpt [--host 127.0.0.1] [--port 8000]

``POST /v1/completions`` takes JSON: ``prompt`` (required), ``max_new_tokens`` (500), ``temperature`` (0.8),
``top_k`` (200), ``top_p`` (null), ``seed`` (null: a random one, returned so the text can be had again) and
``stream`` (false). It answers ``{"text": ..., "seed": ...}`` (application/json), or with ``"stream": true`` one JSON
object per line as the characters are generated (application/x-ndjson): ``{"text": "R"}`` (the first character at
once, then what was generated in each 20 ms), ..., then ``{"done": true, "seed": ...}``. ``text`` is the
continuation only; the same prompt, settings and seed give the text ``sample.py`` gives. ``GET /`` is the page. A bad
request gets a 4xx answer ``{"error": "..."}`` naming the problem. The command line is in ``serve_cli.py``.
"""

import json
import math
import os
import random
import time
from pathlib import Path
from collections.abc import Callable
from typing import Any, Iterator

import litserve as ls
import torch
from starlette.responses import HTMLResponse, JSONResponse

from lit_gpt.generate import TextGenerator, resolve_device

API_PATH = "/v1/completions"
PAGE = Path(__file__).with_name("page.html")
LIMITS = {"prompt": 10_000, "max_new_tokens": 10_000, "body_bytes": 1_000_000}  # the stated limits of a request
FLUSH_SECONDS = 0.02  # a streamed answer sends what was generated at most this often
DEFAULTS = {"max_new_tokens": 500, "temperature": 0.8, "top_k": 200, "top_p": None, "seed": None, "stream": False}


class BadRequest(Exception):
    """A request that cannot be served: its HTTP status and a message for the client."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def check_request(body: Any, vocab: set[str]) -> dict[str, Any]:
    """The request with defaults filled in, or BadRequest naming every problem found."""
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object, e.g. {\"prompt\": \"ROMEO:\"}")
    unknown = sorted(set(body) - {"prompt", *DEFAULTS})
    if unknown:
        raise BadRequest(f"unknown field(s): {', '.join(unknown)}; the fields are prompt, {', '.join(DEFAULTS)}")
    request = {**DEFAULTS, **body}
    problems = []
    prompt = request.get("prompt")

    def number(name: str, kind: type | tuple[type, ...], ok: Callable[[Any], bool], rule: str,
               nullable: bool = False) -> None:
        value = request[name]
        if value is None and nullable:
            return
        if isinstance(value, bool) or not isinstance(value, kind) or not ok(value):
            problems.append(f"{name} must be {rule}, got {json.dumps(value)}")

    if not isinstance(prompt, str):
        problems.append(f"prompt must be a string, got {json.dumps(prompt)}")
    elif len(prompt) > LIMITS["prompt"]:
        raise BadRequest(f"prompt has {len(prompt)} characters; the limit is {LIMITS['prompt']}", 413)
    else:
        missing = sorted(set(prompt) - vocab)
        if missing:
            problems.append(f"prompt has {len(missing)} character(s) outside the model's vocabulary: "
                            + ", ".join(json.dumps(c, ensure_ascii=False) for c in missing))
    number("max_new_tokens", int, lambda n: 1 <= n <= LIMITS["max_new_tokens"],
           f"an integer from 1 to {LIMITS['max_new_tokens']}")
    number("temperature", (int, float), lambda t: 0 <= t <= 100, "a number from 0 to 100")
    number("top_k", int, lambda k: k >= 1, "an integer >= 1 or null", nullable=True)
    number("top_p", (int, float), lambda p: 0 < p <= 1, "a number in (0, 1] or null", nullable=True)
    number("seed", int, lambda s: 0 <= s < 2**63, "an integer from 0 to 2**63 - 1 or null", nullable=True)
    if not isinstance(request["stream"], bool):
        problems.append(f"stream must be true or false, got {json.dumps(request['stream'])}")
    if problems:
        raise BadRequest("; ".join(problems))
    if request["seed"] is None:
        request["seed"] = random.randrange(2**31)
    return request


class CompletionChecks:
    """ASGI middleware: checks every completion request before LitServe queues it, answering 4xx with a JSON error.

    LitServe answers a body that is not JSON with 500, and a streaming API can only report an error after its 200 has
    gone out; checked here, every bad request gets its 4xx. It also sets the content type of the answer (LitServe's
    streaming answer has none): application/json, or application/x-ndjson for ``"stream": true``.
    """

    def __init__(self, app: Any, vocab: list[str]) -> None:
        self.app, self.vocab = app, set(vocab)

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] != API_PATH:
            return await self.app(scope, receive, send)
        try:
            if scope["method"] != "POST":
                raise BadRequest(f"use POST with a JSON body on {API_PATH}", 405)
            body = await read_body(receive)
            try:
                request = check_request(json.loads(body), self.vocab)
            except (json.JSONDecodeError, UnicodeDecodeError) as err:
                raise BadRequest(f"the body is not JSON ({err})") from None
        except BadRequest as err:
            return await JSONResponse({"error": str(err)}, status_code=err.status)(scope, receive, send)
        checked = json.dumps(request).encode()  # with the defaults and the seed filled in
        sent = False

        async def replay() -> dict:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": checked, "more_body": False}
            return await receive()

        kind = b"application/x-ndjson" if request["stream"] else b"application/json"

        async def send_typed(message: dict) -> None:
            if message["type"] == "http.response.start" and message["status"] == 200:
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"content-type"]
                message = {**message, "headers": [*headers, (b"content-type", kind)]}
            await send(message)

        headers = [(k, v) for k, v in scope["headers"] if k.lower() not in (b"content-type", b"content-length")]
        headers += [(b"content-type", b"application/json"), (b"content-length", str(len(checked)).encode())]
        await self.app({**scope, "headers": headers}, replay, send_typed)


async def read_body(receive: Any) -> bytes:
    """The whole request body, or BadRequest (413) once it passes the stated limit."""
    body, more = b"", True
    while more:
        message = await receive()
        body += message.get("body", b"")
        more = message.get("more_body", False)
        if len(body) > LIMITS["body_bytes"]:
            raise BadRequest(f"the body is over {LIMITS['body_bytes']} bytes", 413)
    return body


class Page:
    """ASGI middleware: ``GET /`` is the page (LitServe's own ``/`` only says that it runs)."""

    def __init__(self, app: Any) -> None:
        self.app, self.html = app, PAGE.read_text(encoding="utf-8")

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] == "/" and scope["method"] == "GET":
            return await HTMLResponse(self.html)(scope, receive, send)
        await self.app(scope, receive, send)


def in_chunks(chars: Iterator[str], seconds: float) -> Iterator[dict[str, str]]:
    """``{"text": ...}`` with the characters generated since the last one: the first at once, then at most one every
    ``seconds`` (a message per character would cost LitServe's queue more than generating it)."""
    chunk, last = [], -math.inf
    for ch in chars:
        chunk.append(ch)
        if time.perf_counter() - last >= seconds:
            yield {"text": "".join(chunk)}
            chunk, last = [], time.perf_counter()
    if chunk:
        yield {"text": "".join(chunk)}


class CompletionAPI(ls.LitAPI):
    """Generates text for checked requests, one at a time per worker; each request has its own seed and settings, so
    requests are not batched together (a batch would give other text for a seed than sample.py does)."""

    def __init__(self, checkpoint: str, workers: int = 1) -> None:
        super().__init__(api_path=API_PATH, stream=True)
        self.checkpoint, self.workers = checkpoint, workers

    def setup(self, device: str) -> None:
        if device == "cpu":  # the workers share the cores: more threads than cores would make each one crawl
            torch.set_num_threads(max(1, (os.cpu_count() or 1) // self.workers))
        self.generator = TextGenerator.from_checkpoint(self.checkpoint, device)

    def decode_request(self, request: dict[str, Any]) -> dict[str, Any]:
        return request  # checked by CompletionChecks

    def predict(self, request: dict[str, Any]) -> Iterator[dict[str, Any]]:
        chars = self.generator.stream(request["prompt"], request["max_new_tokens"], temperature=request["temperature"],
                                      top_k=request["top_k"], top_p=request["top_p"], seed=request["seed"])
        if request["stream"]:
            yield from in_chunks(chars, FLUSH_SECONDS)
            yield {"done": True, "seed": request["seed"]}
        else:
            yield {"text": "".join(chars), "seed": request["seed"]}

    def encode_response(self, outputs: Iterator[dict[str, Any]]) -> Any:  # lines of JSON (Any: FastAPI reads this)
        for output in outputs:
            yield json.dumps(output) + "\n"


def build_server(checkpoint: str, device: str = "auto", workers: int = 1, timeout: float = 120.0) -> ls.LitServer:
    """The LitServer for ``checkpoint``, loaded here once (its vocabulary for the checks): one ``error:`` line if it
    is not a lit_gpt checkpoint, here rather than in a worker."""
    vocab = TextGenerator.from_checkpoint(checkpoint, "cpu").tokenizer.chars
    resolved = resolve_device(device)
    accelerator = resolved.type if resolved.type in ("cpu", "cuda", "mps") else "auto"
    devices = 1 if resolved.index is None else [resolved.index]
    return ls.LitServer(CompletionAPI(checkpoint, workers), accelerator=accelerator, devices=devices,
                        workers_per_device=workers, timeout=timeout,
                        middlewares=[(CompletionChecks, {"vocab": vocab}), Page])
