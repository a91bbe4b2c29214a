"""OpenAI's completions and chat completions protocol, for a character model: requests checked into one generation
job, and the job's text as OpenAI's response objects or server-sent events.

A job is a plain dict (it crosses LitServe's queue): its ``prompts``, ``n`` choices of each (choice ``i`` samples with
``seed + i``), the sampling settings, ``stop`` sequences, and how to answer (``object``, ``stream``, ``echo``). Tokens
are characters: ``max_tokens`` and ``usage`` count characters. Fields a client sends that do not change the text are
accepted at their neutral values; any other value of them is refused, since it cannot be honoured.
"""

import json
import random
import time
import uuid
from collections.abc import Callable
from typing import Any, Optional

from lit_gpt.sampling import DEFAULTS, LOWEST
from lit_gpt.tokenizer import CharTokenizer, unknown_characters

LIMITS = {"prompt": 10_000, "max_tokens": 10_000, "n": 16, "stop": 4, "temperature": 100}  # a request's stated limits
# Where a request leaves a setting out, sample.py's (OpenAI's defaults would give other text for the same seed); but
# max_tokens is OpenAI's 16 for completions, and sample.py's for a chat turn, which ends at its blank line anyway.
MAX_TOKENS = {"text_completion": 16, "chat.completion": DEFAULTS.max_new_tokens}
TURN_END = "\n\n"  # a speech ends at a blank line: a chat reply stops there
# Fields of OpenAI's requests that change nothing at these values (anything else cannot be honoured here).
NEUTRAL: dict[str, Callable[[Any], bool]] = {
    "user": lambda v: True, "metadata": lambda v: True, "store": lambda v: v in (None, False),
    "service_tier": lambda v: True, "parallel_tool_calls": lambda v: True,
    "presence_penalty": lambda v: v in (None, 0), "frequency_penalty": lambda v: v in (None, 0),
    "logit_bias": lambda v: not v, "logprobs": lambda v: v in (None, False, 0),
    "top_logprobs": lambda v: v in (None, 0),
    "suffix": lambda v: v in (None, ""), "best_of": lambda v: v in (None, 1),
    "tools": lambda v: not v, "tool_choice": lambda v: v in (None, "none", "auto"), "functions": lambda v: not v,
    "response_format": lambda v: v in (None, {"type": "text"}), "modalities": lambda v: v in (None, ["text"]),
}
FIELDS = {
    "text_completion": {"model", "prompt", "max_tokens", "temperature", "top_p", "top_k", "n", "stop", "seed",
                        "stream", "stream_options", "echo", "window_shift"},
    "chat.completion": {"model", "messages", "max_tokens", "max_completion_tokens", "temperature", "top_p", "top_k",
                        "n", "stop", "seed", "stream", "stream_options", "reply_as", "window_shift"},
}


class OpenAIError(Exception):
    """A request that cannot be served, answered in OpenAI's error shape."""

    def __init__(self, message: str, param: Optional[str] = None, status: int = 400,
                 code: Optional[str] = None, kind: str = "invalid_request_error") -> None:
        super().__init__(message)
        self.param, self.status, self.code, self.kind = param, status, code, kind

    def body(self) -> dict[str, Any]:
        return {"error": {"message": str(self), "type": self.kind, "param": self.param, "code": self.code}}


def check_job(body: Any, kind: str, tokenizer: CharTokenizer, model: str, block_size: int,
              window_shift: Optional[int] = None) -> dict[str, Any]:
    """The generation job for a request body of ``kind`` ("text_completion" or "chat.completion"), or OpenAIError
    naming the first field that cannot be served. ``window_shift`` is the server's default for text past the model's
    ``block_size`` (None: the exact mode); a request's ``window_shift`` (an extension, null: exact) overrides it."""
    if not isinstance(body, dict):
        raise OpenAIError("the body must be a JSON object, e.g. {\"model\": \"...\", \"prompt\": \"ROMEO:\"}")
    for name, value in body.items():
        if name in NEUTRAL and name not in FIELDS[kind]:
            if not NEUTRAL[name](value):
                raise OpenAIError(f"{name} {json.dumps(value)} cannot be honoured by this server (a character model "
                                  f"sampled as sample.py does)", name, code="unsupported_value")
        elif name not in FIELDS[kind]:
            raise OpenAIError(f"Unrecognized request argument supplied: {name}", name, code="unknown_parameter")
    get = Reader(body)
    prompts = check_prompts(body) if kind == "text_completion" else [chat_prompt(body)]
    for prompt in prompts:
        check_characters(prompt, tokenizer, "prompt" if kind == "text_completion" else "messages")
    max_tokens = get.integer("max_completion_tokens", None, LOWEST["max_new_tokens"], LIMITS["max_tokens"]) \
        if kind == "chat.completion" else None
    stop = body.get("stop")
    stops = [stop] if isinstance(stop, str) else stop if stop is not None else []
    if not isinstance(stops, list) or len(stops) > LIMITS["stop"] or not all(isinstance(s, str) and s for s in stops):
        raise OpenAIError(f"stop must be a non-empty string or a list of up to {LIMITS['stop']}, got "
                          f"{json.dumps(stop)}", "stop")
    options = body.get("stream_options") or {}
    if not isinstance(options, dict):
        raise OpenAIError("stream_options must be an object, e.g. {\"include_usage\": true}", "stream_options")
    top_p = get.number("top_p", DEFAULTS.top_p, LOWEST["top_p"], 1, low_open=True)
    seed = get.integer("seed", None, 0, 2**63 - 1)
    return {
        "object": kind, "id": f"{'cmpl' if kind == 'text_completion' else 'chatcmpl'}-{uuid.uuid4().hex[:24]}",
        "created": int(time.time()), "model": model, "prompts": prompts,
        "n": get.integer("n", 1, LOWEST["num_samples"], LIMITS["n"]),
        "max_tokens": max_tokens or get.integer("max_tokens", MAX_TOKENS[kind], LOWEST["max_new_tokens"],
                                                LIMITS["max_tokens"]),
        "temperature": get.number("temperature", DEFAULTS.temperature, LOWEST["temperature"], LIMITS["temperature"]),
        "top_k": None if "top_k" in body and body["top_k"] is None  # null: every character (an extension)
        else get.integer("top_k", DEFAULTS.top_k, LOWEST["top_k"], None),
        "top_p": None if top_p == 1 else top_p,  # 1 keeps every character: no filter, the same text as without it
        "seed": random.randrange(2**31) if seed is None else seed,
        "stop": stops + ([TURN_END] if kind == "chat.completion" else []),
        "stream": get.boolean("stream", False), "include_usage": bool(options.get("include_usage")),
        "echo": get.boolean("echo", False),
        "window_shift": None if "window_shift" in body and body["window_shift"] is None
        else get.integer("window_shift", window_shift, 1, block_size - 1),
    }


class Reader:
    """Typed fields of a request body, each with its default and range, or OpenAIError naming the field."""

    def __init__(self, body: dict[str, Any]) -> None:
        self.body = body

    def _value(self, name: str, default: Any) -> Any:
        value = self.body.get(name)
        return default if value is None else value

    def integer(self, name: str, default: Optional[int], low: int, high: Optional[int]) -> Optional[int]:
        value = self._value(name, default)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < low
                                  or (high is not None and value > high)):
            rule = f"an integer from {low} to {high}" if high is not None else f"an integer >= {low}"
            raise OpenAIError(f"{name} must be {rule}, got {json.dumps(value)}", name)
        return value

    def number(self, name: str, default: Optional[float], low: float, high: float,
               low_open: bool = False) -> Optional[float]:
        value = self._value(name, default)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                  or not (low < value if low_open else low <= value) or value > high):
            raise OpenAIError(f"{name} must be a number in {'(' if low_open else '['}{low}, {high}], got "
                              f"{json.dumps(value)}", name)
        return value

    def boolean(self, name: str, default: bool) -> bool:
        value = self._value(name, default)
        if not isinstance(value, bool):
            raise OpenAIError(f"{name} must be true or false, got {json.dumps(value)}", name)
        return value


def check_prompts(body: dict[str, Any]) -> list[str]:
    """The completion request's prompts: a string or a list of strings (this model's tokens are characters)."""
    prompt = body.get("prompt")
    prompts = [prompt] if isinstance(prompt, str) else prompt
    if not isinstance(prompts, list) or not prompts or not all(isinstance(p, str) for p in prompts):
        raise OpenAIError(f"prompt must be a string or a list of strings, got {json.dumps(prompt)[:100]}", "prompt")
    return prompts


def chat_prompt(body: dict[str, Any]) -> str:
    """The messages as a script, the way the corpus writes one: each message a turn ``NAME:\\ntext\\n\\n``, NAME being
    the message's ``name`` or its role in capitals (USER, ASSISTANT); a system or developer message is a stage
    direction, its text alone. The prompt ends with the reply's turn opened: ``reply_as`` (an extension), else the
    name of the last assistant message, else ASSISTANT."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise OpenAIError("messages must be a non-empty list of {\"role\": ..., \"content\": ...}", "messages")
    turns, reply_as = [], "ASSISTANT"
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in ("system", "developer", "user", "assistant"):
            raise OpenAIError(f"messages[{i}] must have a role of system, developer, user or assistant", "messages")
        text = message_text(message.get("content"), i).rstrip("\n")
        name = message.get("name") or message["role"].upper()
        if message["role"] == "assistant":
            reply_as = name
        direction = message["role"] in ("system", "developer")
        turns.append(f"{text}{TURN_END}" if direction else f"{name}:\n{text}{TURN_END}")
    reply_as = body.get("reply_as") or reply_as
    if not isinstance(reply_as, str):
        raise OpenAIError(f"reply_as must be a speaker's name, got {json.dumps(reply_as)}", "reply_as")
    return "".join(turns) + f"{reply_as}:\n"


def message_text(content: Any, i: int) -> str:
    """A message's text: a string, or a list of text parts (images and audio cannot be read by this model)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list) and all(isinstance(p, dict) and p.get("type") == "text" for p in content):
        return "".join(str(p.get("text", "")) for p in content)
    raise OpenAIError(f"messages[{i}].content must be text (a string or text parts)", "messages")


def check_characters(text: str, tokenizer: CharTokenizer, param: str) -> None:
    """A prompt within the stated length whose characters the model knows, or OpenAIError naming them."""
    if len(text) > LIMITS["prompt"]:
        raise OpenAIError(f"{param} has {len(text)} characters; the limit is {LIMITS['prompt']}", param, 413)
    missing = sorted(tokenizer.unknown(text))
    if missing:
        quote = lambda c: json.dumps(c, ensure_ascii=False)  # noqa: E731 (JSON's quotes, as the request wrote them)
        where = "outside the model's vocabulary"
        raise OpenAIError(f"{param} has {unknown_characters(missing, where, quote)}", param)


class StopFilter:
    """A choice's text up to its first stop sequence (left out), given character by character and released as it
    comes, less what may be the start of a stop sequence. ``finish`` is the finish reason: "stop" once a stop
    sequence is found, else "length"."""

    def __init__(self, stops: list[str]) -> None:
        self.stops, self.held, self.finish = stops, "", "length"

    @property
    def stopped(self) -> bool:
        return self.finish == "stop"

    def push(self, ch: str) -> str:
        """The text that ``ch`` releases ('' while it may begin a stop sequence, or after one was found)."""
        if self.stopped:
            return ""
        self.held += ch
        found = [self.held.find(s) for s in self.stops if s in self.held]
        if found:
            self.finish = "stop"
            text, self.held = self.held[:min(found)], ""
            return text
        keep = max((k for s in self.stops for k in range(1, min(len(s), len(self.held)) + 1)
                    if s.startswith(self.held[-k:])), default=0)  # the longest end of the text that begins a stop
        text, self.held = self.held[:len(self.held) - keep], self.held[len(self.held) - keep:]
        return text

    def flush(self) -> str:
        """What is held back when the characters run out: it began no stop sequence after all."""
        text, self.held = self.held, ""
        return text


def choice_delta(job: dict[str, Any], index: int, text: Optional[str], finish: Optional[str] = None,
                 first: bool = False) -> dict[str, Any]:
    """One choice of a streamed chunk."""
    choice: dict[str, Any] = {"index": index, "finish_reason": finish, "logprobs": None}
    if job["object"] == "text_completion":
        choice["text"] = text or ""
    else:
        choice["delta"] = ({"role": "assistant", "content": ""} if first else
                           {} if text is None else {"content": text})
    return choice


def envelope(job: dict[str, Any], chunk: bool, **fields: Any) -> dict[str, Any]:
    """An answer object: ``id``, ``object``, ``created``, ``model``, the fields, and the ``seed`` (an extension)."""
    kind = job["object"] + (".chunk" if chunk and job["object"] == "chat.completion" else "")
    return {"id": job["id"], "object": kind, "created": job["created"], "model": job["model"],
            "system_fingerprint": None, **fields, "seed": job["seed"]}


def usage(prompt_chars: int, completion_chars: int) -> dict[str, int]:
    return {"prompt_tokens": prompt_chars, "completion_tokens": completion_chars,
            "total_tokens": prompt_chars + completion_chars}


def sse(obj: Any) -> str:
    """One server-sent event."""
    return f"data: {obj if isinstance(obj, str) else json.dumps(obj)}\n\n"


def final_choice(job: dict[str, Any], index: int, text: str, finish: str) -> dict[str, Any]:
    """One choice of a whole answer."""
    if job["object"] == "text_completion":
        return {"index": index, "text": text, "finish_reason": finish, "logprobs": None}
    return {"index": index, "message": {"role": "assistant", "content": text}, "finish_reason": finish,
            "logprobs": None}


def model_card(model: str, created: int) -> dict[str, Any]:
    return {"id": model, "object": "model", "created": created, "owned_by": "lit_gpt"}
