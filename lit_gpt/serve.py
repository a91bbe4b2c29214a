"""Serve a checkpoint over HTTP with LitServe: OpenAI's completions and chat completions protocol, and a page.

    python serve.py --checkpoint runs/shakespeare_char/checkpoints/last.ckpt [--host 127.0.0.1] [--port 8000]

``POST /v1/completions`` and ``POST /v1/chat/completions`` answer as OpenAI's API does, so its clients work
unchanged (lit_gpt/openai_protocol.py: the fields, how chat messages become a script, ``stop``, ``n``, streaming
as server-sent events); ``GET /v1/models`` lists the served checkpoint; ``GET /`` is the page; ``GET /health`` says
the server's settings. A bad request gets a 4xx answer in OpenAI's error shape. The command line is in
``serve_cli.py``.

Each worker generates every request it holds at once (``BatchedLoop``): every choice of every request is a row of one
batch (lit_gpt/decoder.py), advanced by one character per step; a request joins at the next step and its rows leave
as they finish, stop or their client goes away. The same prompt, settings and seed give the text ``sample.py`` gives,
whatever else the worker is generating.
"""

import asyncio
import json
import logging
import math
import multiprocessing as mp
import os
import time
from pathlib import Path
from queue import Empty
from typing import Any, Optional

import litserve as ls
import torch
from litserve.loops.base import _SENTINEL_VALUE, LitLoop
from litserve.utils import LitAPIStatus, LoopResponseType
from starlette.responses import HTMLResponse, JSONResponse

from lit_gpt.decoder import Decoder, Row
from lit_gpt.errors import LitGPTError
from lit_gpt.files import forget, read_checkpoint
from lit_gpt.generate import TextGenerator, resolve_device
from lit_gpt.openai_protocol import (
    OpenAIError, StopFilter, check_job, choice_delta, envelope, final_choice, model_card, sse, usage,
)
from lit_gpt.sampling import RowSettings
from lit_gpt.tokenizer import CharTokenizer

log = logging.getLogger(__name__)

API_PATH = "/v1/completions"  # LitServe's endpoint: both protocols' jobs reach the workers here
ROUTES = {"/v1/completions": "text_completion", "/v1/chat/completions": "chat.completion"}
PAGE = Path(__file__).with_name("page.html")
BODY_BYTES = 1_000_000  # the stated limit of a request body
FLUSH_SECONDS = 0.02  # a streamed answer sends what was generated at most this often
# ... and a worker sends at most about this many messages a second in all: each costs LitServe's queue and the API
# process more than generating a character, which would starve the batch (docs/serving.md)
MESSAGES_PER_SECOND = 160
# A worker's answer that is an error, not text: OpenAIRoutes turns it into its status and OpenAI's error shape
# (LitServe starts a streaming answer with 200 before the worker answers, and ends it empty on a worker's error).
ERROR_MARK = "\x00lit_gpt error\x00"
POLL_SECONDS = 0.01  # while generating, a worker looks for new requests and departed clients this often


class OpenAIRoutes:
    """ASGI middleware: checks every completion request before LitServe queues it, answering 4xx in OpenAI's error
    shape, and hands LitServe the checked job; tells the workers when its client goes away; answers ``/v1/models``
    itself and ``/health`` with the server's settings.

    LitServe answers a body that is not JSON with 500 and a streaming API can only report an error after its 200 has
    gone out; checked here, every bad request gets its 4xx. LitServe's own OpenAISpec covers chat only, reports every
    finish_reason as "stop" and its errors in FastAPI's shape, so both protocols are translated here. LitServe does
    not tell a worker that a client left, so this does, through ``departures`` (one queue per worker).
    """

    def __init__(self, app: Any, vocab: list[str], model: str, created: int, block_size: int,
                 window_shift: Optional[int], departures: list, settings: dict[str, Any]) -> None:
        self.app, self.tokenizer, self.model, self.created = app, CharTokenizer(vocab), model, created
        self.block_size, self.window_shift, self.departures, self.settings = block_size, window_shift, departures, \
            settings

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        path = scope.get("path", "")
        if scope["type"] == "http" and path == "/health":
            return await self.app(scope, receive, with_settings(send, self.settings))
        if scope["type"] != "http" or (path not in ROUTES and not path.startswith("/v1/models")):
            return await self.app(scope, receive, send)
        try:
            if path.startswith("/v1/models"):
                return await JSONResponse(self.models(path))(scope, receive, send)
            if scope["method"] != "POST":
                raise OpenAIError(f"use POST with a JSON body on {path}", status=405)
            body = await read_body(receive)
            try:
                job = check_job(json.loads(body), ROUTES[path], self.tokenizer, self.model, self.block_size,
                                self.window_shift)
            except (json.JSONDecodeError, UnicodeDecodeError) as err:
                raise OpenAIError(f"the body is not JSON ({err})") from None
        except OpenAIError as err:
            return await JSONResponse(err.body(), status_code=err.status)(scope, receive, send)
        await self.serve(scope, job, receive, send)

    async def serve(self, scope: dict, job: dict[str, Any], receive: Any, send: Any) -> None:
        """LitServe answers the job; a client that goes away before the answer is complete is reported to the
        workers, which drop its rows at once."""
        answered, gone, disconnect = False, asyncio.Event(), {}

        async def watch() -> None:  # the only reader of the client's messages once the body is read
            message = await receive()
            while message["type"] != "http.disconnect":
                message = await receive()
            disconnect.update(message)
            if not answered:
                for queue in self.departures:
                    queue.put(job["id"])
            gone.set()

        async def wait_for_disconnect() -> dict:
            await gone.wait()
            return disconnect

        async def sent(message: dict) -> None:
            nonlocal answered
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                answered = True
            await send(message)

        watcher = asyncio.create_task(watch())
        try:
            await self.app(*as_litserve_request(scope, job, wait_for_disconnect, sent))
        finally:
            watcher.cancel()

    def models(self, path: str) -> dict[str, Any]:
        card = model_card(self.model, self.created)
        if path.rstrip("/") == "/v1/models":
            return {"object": "list", "data": [card]}
        if path[len("/v1/models/"):] != self.model:
            raise OpenAIError(f"The model '{path[len('/v1/models/'):]}' does not exist; this server serves "
                              f"'{self.model}'", "model", 404, "model_not_found")
        return card


def with_settings(send: Any, settings: dict[str, Any]) -> Any:
    """``send`` for LitServe's ``/health``: where it answers ok (200), the answer is the settings as JSON."""
    body = json.dumps({"status": "ok", **settings}).encode()
    status = 0

    async def send_settings(message: dict) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
            if status == 200:
                message = {**message, "headers": [(b"content-type", b"application/json"),
                                                  (b"content-length", str(len(body)).encode())]}
        elif status == 200:
            message = {**message, "body": body, "more_body": False}
        await send(message)

    return send_settings


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
    start: dict = {}

    async def send_typed(message: dict) -> None:
        """The answer as LitServe sends it, typed; its start held back until the first body, which may be an error."""
        if message["type"] == "http.response.start":
            start.update(message)
            return
        if start.get("status") == 200 and message.get("body", b"").startswith(ERROR_MARK.encode()):
            error = json.loads(message["body"][len(ERROR_MARK):])
            body = json.dumps({"error": error["error"]}).encode()
            headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
            await send({"type": "http.response.start", "status": error["status"], "headers": headers})
            await send({"type": "http.response.body", "body": body, "more_body": False})
            start["status"] = "sent"
            return
        if start.get("status") == "sent":  # an error was the answer: the rest of LitServe's is dropped
            return
        if start:
            headers = [(k, v) for k, v in start.get("headers", []) if k.lower() != b"content-type"]
            await send({**start, "headers": [*headers, (b"content-type", kind)]} if start["status"] == 200 else start)
            start.clear()
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


class Choice:
    """One choice of a request: its row in the decoder, its text up to a stop sequence, what is not yet sent."""

    def __init__(self, index: int, row: Row, stops: list[str], echo: str) -> None:
        self.index, self.row, self.stop = index, row, StopFilter(stops)
        self.text, self.unsent, self.chars = [], echo, 0  # text: sent; chars: generated, up to a stop sequence
        self.finish: Optional[str] = None  # "stop" or "length" once it is done
        self.finish_sent = False


class Job:
    """A request in a worker: its choices (rows of the decoder, seed + i for choice i), and what it has sent."""

    def __init__(self, uid: str, queue_id: int, job: dict[str, Any], generator: TextGenerator) -> None:
        self.uid, self.queue_id, self.job = uid, queue_id, job
        settings = RowSettings(job["temperature"], job["top_k"], job["top_p"])
        self.choices = []
        for p, prompt in enumerate(job["prompts"]):
            for i in range(job["n"]):
                index = p * job["n"] + i
                row = Row(generator.encode_prompt(prompt), job["max_tokens"], settings,
                          generator.random_stream(job["seed"], index), job["window_shift"])
                self.choices.append(Choice(index, row, job["stop"], prompt if job["echo"] else ""))
        self.waiting = [choice.row for choice in self.choices]  # rows not yet in the decoder
        self.started, self.last_sent = False, -math.inf

    @property
    def done(self) -> bool:
        return all(choice.finish is not None for choice in self.choices)

    def take(self, choice: Choice, ch: str) -> None:
        """Choice's next character: its text grows by what the stop sequences release; it finishes at one, or when
        its characters run out."""
        text = choice.stop.push(ch)
        if choice.stop.stopped:
            choice.finish = "stop"
        elif choice.row.done:
            text += choice.stop.flush()
            choice.finish = "length"
        choice.unsent += text
        choice.chars += len(text)

    def message(self, now: float, interval: float) -> str:
        """What to send now: the new text of every choice, at once for the first, then at most every ``interval``
        seconds; the whole answer at the end."""
        if not self.job["stream"]:
            return self.answer() if self.done else ""
        if not self.done and now - self.last_sent < interval:
            return ""
        events = []
        for choice in self.choices:
            if not self.started and self.job["object"] == "chat.completion":
                events.append(sse(envelope(self.job, True, choices=[choice_delta(self.job, choice.index, None,
                                                                                 first=True)])))
            if choice.unsent:
                events.append(sse(envelope(self.job, True, choices=[choice_delta(self.job, choice.index,
                                                                                 choice.unsent)])))
                choice.text.append(choice.unsent)
                choice.unsent = ""
            if choice.finish is not None and not choice.finish_sent:
                events.append(sse(envelope(self.job, True, choices=[choice_delta(self.job, choice.index, None,
                                                                                 choice.finish)])))
                choice.finish_sent = True
        self.started = self.started or bool(events)
        if self.done:
            if self.job["include_usage"]:
                events.append(sse(envelope(self.job, True, choices=[], usage=self.usage())))
            events.append(sse("[DONE]"))
        if events:
            self.last_sent = now
        return "".join(events)

    def answer(self) -> str:
        """The whole answer as one JSON object."""
        choices = [final_choice(self.job, c.index, "".join(c.text) + c.unsent, c.finish) for c in self.choices]
        return json.dumps(envelope(self.job, False, choices=choices, usage=self.usage()))

    def usage(self) -> dict[str, int]:
        return usage(sum(map(len, self.job["prompts"])), sum(choice.chars for choice in self.choices))


class BatchedLoop(LitLoop):
    """A worker's loop: every request it holds is generated at once, one character of each choice per step.

    Requests join between steps while the worker has free rows (``max_batch``); the rest wait in LitServe's queue,
    where another worker may take them, and one that waited longer than the timeout gets 504. A choice leaves the batch
    when it finishes or stops, and every choice of a request whose client went away at once. LitServe's own
    ContinuousBatchingLoop polls an idle worker in a busy loop, gives a queued request no timeout and hears of no
    departed client, so this small loop is ours.
    """

    def __init__(self, max_batch: int, departures: list) -> None:
        super().__init__()
        self.max_batch, self.departures = max_batch, departures

    def __call__(self, lit_api: ls.LitAPI, device: str, worker_id: int, request_queue: Any, transport: Any,
                 workers_setup_status: dict, callback_runner: Any) -> None:
        self.lit_api, self.queue, self.transport = lit_api, request_queue, transport
        self.departed = self.departures[worker_id]
        self.decoder = Decoder(lit_api.generator.model, self.max_batch)
        self.jobs: dict[str, Job] = {}  # by job id
        self.early_departures: dict[str, None] = {}  # ids of jobs whose client left before this worker took them
        try:
            self.serve()
        except KeyboardInterrupt:  # Ctrl-C reaches every process of the server: it shuts the workers down
            self.kill()

    def serve(self) -> None:
        last_poll = -math.inf
        while True:
            self.admit_waiting_rows()
            if not self.decoder.rows or time.monotonic() - last_poll >= POLL_SECONDS:
                if not self.take_requests(block=not self.decoder.rows):
                    return  # LitServe is shutting down
                self.drop_departed()
                last_poll = time.monotonic()
            if self.decoder.rows:
                self.step()

    def free_rows(self) -> int:
        return self.max_batch - len(self.decoder.rows)

    def admit_waiting_rows(self) -> None:
        for job in self.jobs.values():
            while job.waiting and self.free_rows() > 0:
                self.decoder.add(job.waiting.pop(0))

    def take_requests(self, block: bool) -> bool:
        """Requests from LitServe's queue while rows are free (waiting up to a second for one if the worker is
        idle); False at LitServe's sentinel."""
        while self.free_rows() > 0 and not any(job.waiting for job in self.jobs.values()):
            try:
                item = self.queue.get(timeout=1.0) if block else self.queue.get_nowait()
            except Empty:
                return True
            if item == _SENTINEL_VALUE:
                return False
            queue_id, uid, timestamp, job = item
            block = False
            if self.lit_api.request_timeout not in (None, -1, False) \
                    and time.monotonic() - timestamp > self.lit_api.request_timeout:
                self.fail(queue_id, uid, OpenAIError(f"the request waited over {self.lit_api.request_timeout:g} s "
                                                     f"for a free row; try again", status=504, kind="timeout"))
                continue
            if job["id"] in self.early_departures:
                del self.early_departures[job["id"]]
                self.finish(Job(uid, queue_id, {**job, "prompts": []}, self.lit_api.generator))
                continue
            self.jobs[job["id"]] = Job(uid, queue_id, job, self.lit_api.generator)
            self.admit_waiting_rows()
        return True

    def drop_departed(self) -> None:
        """Every choice of a request whose client went away leaves the batch now."""
        while True:
            try:
                job_id = self.departed.get_nowait()
            except Empty:
                return
            job = self.jobs.pop(job_id, None)
            if job is None:  # not taken yet (or another worker's, or just answered): the newest 1000 are kept
                self.early_departures[job_id] = None
                while len(self.early_departures) > 1000:
                    del self.early_departures[next(iter(self.early_departures))]
                continue
            for choice in job.choices:
                if choice.row in self.decoder.rows:
                    self.decoder.remove(choice.row)
            self.put_response(self.transport, job.queue_id, job.uid, "", LitAPIStatus.FINISH_STREAMING,
                              LoopResponseType.STREAMING)

    def step(self) -> None:
        """One character for every row, handed to its choice; finished and stopped choices leave; answers go out."""
        owners = {id(choice.row): (job, choice) for job in self.jobs.values() for choice in job.choices}
        try:
            new = self.decoder.step()
        except Exception as err:  # noqa: BLE001 (a failed step fails its requests, not the worker)
            log.exception("generation failed")
            for job in self.jobs.values():
                self.fail(job.queue_id, job.uid, OpenAIError(f"generation failed: {err}", status=500,
                                                             kind="server_error"), started=job.started)
            self.jobs.clear()
            self.decoder = Decoder(self.lit_api.generator.model, self.max_batch)
            return
        chars = self.lit_api.generator.tokenizer.chars
        for row, i in new:
            job, choice = owners[id(row)]
            job.take(choice, chars[i])
            if choice.finish == "stop" and row in self.decoder.rows:
                self.decoder.remove(row)
        now = time.monotonic()
        interval = max(FLUSH_SECONDS, sum(job.job["stream"] for job in self.jobs.values()) / MESSAGES_PER_SECOND)
        for job in list(self.jobs.values()):
            message = job.message(now, interval)
            if message:
                self.put_response(self.transport, job.queue_id, job.uid, message, LitAPIStatus.OK,
                                  LoopResponseType.STREAMING)
            if job.done:
                self.finish(job)

    def fail(self, queue_id: int, uid: str, error: OpenAIError, started: bool = False) -> None:
        """Answer a request with an error: its status and OpenAI's shape, or, once its stream has begun, an error
        event that ends it."""
        body = {**error.body(), "status": error.status}
        message = sse({"error": body["error"]}) + sse("[DONE]") if started else ERROR_MARK + json.dumps(body)
        self.put_response(self.transport, queue_id, uid, message, LitAPIStatus.OK, LoopResponseType.STREAMING)
        self.put_response(self.transport, queue_id, uid, "", LitAPIStatus.FINISH_STREAMING, LoopResponseType.STREAMING)

    def finish(self, job: Job) -> None:
        self.jobs.pop(job.job["id"], None)
        self.put_response(self.transport, job.queue_id, job.uid, "", LitAPIStatus.FINISH_STREAMING,
                          LoopResponseType.STREAMING)


class CompletionAPI(ls.LitAPI):
    """Loads the model in each worker; ``BatchedLoop`` generates."""

    def __init__(self, checkpoint: str, workers: int, max_batch: int, departures: list) -> None:
        super().__init__(api_path=API_PATH, stream=True, loop=BatchedLoop(max_batch, departures))
        self.checkpoint, self.workers = checkpoint, workers

    def setup(self, device: str) -> None:
        if device == "cpu":  # the workers share the cores: more threads than cores would make each one crawl
            torch.set_num_threads(max(1, (os.cpu_count() or 1) // self.workers))
        self.generator = TextGenerator.from_checkpoint(self.checkpoint, device)

    def decode_request(self, request: dict[str, Any]) -> dict[str, Any]:
        return request  # a job checked by OpenAIRoutes

    def predict(self, job: dict[str, Any]) -> Any:  # BatchedLoop generates; LitServe's own loops never run
        raise NotImplementedError


def model_name(checkpoint: str) -> str:
    """The served model's name: its run and file, ``shakespeare_char_cpu/last`` for
    ``runs/shakespeare_char_cpu/checkpoints/last.ckpt``."""
    path = Path(checkpoint).resolve()
    run = path.parent.parent if path.parent.name == "checkpoints" else path.parent
    return f"{run.name}/{path.stem}"


def default_window_shift(block_size: int) -> int:
    """The server's window shift where a request gives none: half the window. Every character sees at least half of
    ``block_size`` (the quickstart's model predicts as well from 32 characters as from 63: docs/serving.md), and a
    refill of half a window every half a window costs about one position per character."""
    return max(1, block_size // 2)


def build_server(checkpoint: str, device: str = "auto", workers: int = 1, timeout: float = 120.0,
                 max_batch: int = 32, window_shift: Optional[int] = -1) -> ls.LitServer:
    """The LitServer for ``checkpoint``, read here once (its vocabulary and window for the checks): one ``error:``
    line if it is not a lit_gpt checkpoint, here rather than in a worker. ``window_shift`` -1: the default."""
    hparams = read_checkpoint(checkpoint)["hyper_parameters"]
    forget()  # this process serves for as long as it runs: it keeps no map of the file
    block_size = hparams["config"]["block_size"]
    if window_shift == -1:
        window_shift = default_window_shift(block_size)
    resolved = resolve_device(device)
    accelerator = resolved.type if resolved.type in ("cpu", "cuda", "mps") else "auto"
    devices = 1 if resolved.index is None else [resolved.index]
    departures = [mp.get_context("spawn").Queue() for _ in range(workers)]
    settings = {"model": model_name(checkpoint), "device": str(resolved), "workers": workers, "max_batch": max_batch,
                "timeout": timeout, "block_size": block_size, "window_shift": window_shift}
    routes = {"vocab": hparams["vocab"], "model": settings["model"], "created": int(Path(checkpoint).stat().st_mtime),
              "block_size": block_size, "window_shift": window_shift, "departures": departures, "settings": settings}
    if window_shift is not None and not 1 <= window_shift < block_size:
        raise LitGPTError(f"--window_shift must be between 1 and block_size - 1 = {block_size - 1}, got {window_shift}")
    server = ls.LitServer(CompletionAPI(checkpoint, workers, max_batch, departures), accelerator=accelerator,
                          devices=devices, workers_per_device=workers, timeout=timeout,
                          middlewares=[(OpenAIRoutes, routes), Page])
    server.settings = settings  # what /health and the start-up line say
    return server
