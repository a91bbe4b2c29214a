"""serve.py as a real server process on a free local port, talked to over HTTP and with the official ``openai``
client: completions and chat, streaming, n choices, stop sequences, concurrent requests, bad requests, the page,
and SIGTERM."""

import http.client
import io
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest

from helpers import ROOT, assert_one_line_error, free_port, wait_until
from lit_gpt.sample_cli import SEPARATOR, run as sample_run
from lit_gpt.serve_cli import main as serve_main


class Server:
    """``python serve.py`` in its own process group, on a free port, up once /health answers."""

    def __init__(self, checkpoint: Path, log: Path, *extra: str) -> None:
        self.port = free_port()
        self.log = log
        with open(log, "wb") as out:
            self.proc = subprocess.Popen([sys.executable, str(ROOT / "serve.py"), "--checkpoint", str(checkpoint),
                                          "--port", str(self.port), *extra], stdout=out, stderr=out,
                                         start_new_session=True)
        wait_until(lambda: self.healthy() or self.proc.poll() is not None, timeout=90, interval=0.1)
        assert self.healthy(), log.read_text()[-3000:]

    def connection(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)

    def healthy(self) -> bool:
        try:
            return self.request("GET", "/health")[0] == 200
        except OSError:
            return False

    def request(self, method: str, path: str, body: bytes | str | None = None) -> tuple[int, dict, bytes]:
        conn = self.connection()
        try:
            conn.request(method, path, body=body, headers={"Content-Type": "application/json"})
            response = conn.getresponse()
            return response.status, dict(response.getheaders()), response.read()
        finally:
            conn.close()

    def complete(self, **request) -> tuple[int, dict, bytes]:
        return self.request("POST", "/v1/completions", json.dumps(request))

    def stop(self) -> None:
        """SIGTERM, a wait, then SIGKILL to whatever of its process group is left."""
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=60)
        finally:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


@pytest.fixture(scope="module")
def server(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory):
    running = Server(tiny_checkpoint, tmp_path_factory.mktemp("server") / "log", "--workers", "2")
    yield running
    running.stop()


SHIFT = 16  # the server's default window shift for the debug model: half its block of 32


def sampled(checkpoint: Path, prompt: str, max_new_tokens: int, seed: int, window_shift: int | None = SHIFT,
            **settings) -> str:
    """What ``python sample.py`` prints for these settings (the server's default window shift), less the prompt and
    the closing line."""
    args = SimpleNamespace(checkpoint=str(checkpoint), prompt=prompt, prompt_file=None, max_new_tokens=max_new_tokens,
                           num_samples=1, temperature=settings.get("temperature", 0.8),
                           top_k=settings.get("top_k", 200),
                           top_p=settings.get("top_p"), seed=seed, window_shift=window_shift, no_cache=False,
                           device="cpu", compile=False)
    out = io.StringIO()
    sample_run(args, out)
    return out.getvalue()[len(prompt):-len(f"\n{SEPARATOR}\n")]


def client(server: Server):
    """The official ``openai`` client, pointed at the server."""
    openai = pytest.importorskip("openai")  # a dev dependency: missing, the run says so
    return openai.OpenAI(base_url=f"http://127.0.0.1:{server.port}/v1", api_key="none", max_retries=0)


def events(server: Server, path: str, **request) -> tuple[dict, list]:
    """POST with "stream": true; (headers, the server-sent events' data, "[DONE]" as a string), read as they come."""
    conn = server.connection()
    try:
        conn.request("POST", path, body=json.dumps({**request, "stream": True}))
        response = conn.getresponse()
        assert response.status == 200
        lines = [line.decode() for line in iter(response.readline, b"") if line.strip()]
        assert all(line.startswith("data: ") for line in lines), lines
        data = [line[len("data: "):].strip() for line in lines]
        return dict(response.getheaders()), [d if d == "[DONE]" else json.loads(d) for d in data]
    finally:
        conn.close()


@pytest.mark.slow  # a server process
def test_a_completion_from_the_openai_client_is_the_text_sample_py_gives(server: Server, tiny_checkpoint: Path) -> None:
    answer = client(server).completions.create(model="any name", prompt="ROMEO:", max_tokens=60, seed=7, top_p=0.9,
                                               temperature=0.8, user="someone", logprobs=None, presence_penalty=0)
    assert answer.object == "text_completion" and answer.model == "debug/last" and answer.id.startswith("cmpl-")
    [choice] = answer.choices
    assert choice.text == sampled(tiny_checkpoint, "ROMEO:", 60, 7, top_p=0.9) and choice.finish_reason == "length"
    assert (answer.usage.prompt_tokens, answer.usage.completion_tokens, answer.usage.total_tokens) == (6, 60, 66)


@pytest.mark.slow  # a server process
def test_the_answer_is_json_and_without_a_seed_a_random_one_is_used_and_returned(server: Server,
                                                                                tiny_checkpoint: Path) -> None:
    status, headers, _ = server.complete(prompt="KING", max_tokens=3)
    assert status == 200 and headers["content-type"] == "application/json"
    first, second = (json.loads(server.complete(prompt="KING", max_tokens=30)[2]) for _ in range(2))
    assert first["seed"] != second["seed"]  # an extension: the seed that gives this text again
    assert first["choices"][0]["text"] == sampled(tiny_checkpoint, "KING", 30, first["seed"])


@pytest.mark.slow  # a server process
def test_n_choices_each_with_its_own_seed_and_stop_sequences(server: Server, tiny_checkpoint: Path) -> None:
    """Choice i samples with seed + i; a stop sequence ends a choice (left out of its text: finish_reason "stop")."""
    full = [sampled(tiny_checkpoint, "JULIET:", 80, 11 + i) for i in range(3)]
    stop = next(c for c in full[0][5:] if c in full[1] or c in full[2])  # a character that ends at least one
    answer = client(server).completions.create(model="m", prompt="JULIET:", max_tokens=80, n=3, seed=11, stop=[stop])
    assert [c.index for c in answer.choices] == [0, 1, 2]
    for choice, text in zip(answer.choices, full):
        expected = text.split(stop)[0]
        assert choice.text == expected
        assert choice.finish_reason == ("stop" if stop in text else "length")
    assert answer.usage.completion_tokens == sum(len(c.text) for c in answer.choices)
    echoed = client(server).completions.create(model="m", prompt="JULIET:", max_tokens=10, seed=11, echo=True)
    assert echoed.choices[0].text == "JULIET:" + full[0][:10]


@pytest.mark.slow  # a server process
def test_streaming_sends_server_sent_events_as_the_text_comes(server: Server, tiny_checkpoint: Path) -> None:
    headers, data = events(server, "/v1/completions", prompt="JULIET:", max_tokens=40, seed=3, temperature=1.2,
                           stream_options={"include_usage": True})
    assert headers["content-type"].startswith("text/event-stream") and data[-1] == "[DONE]"
    *chunks, usage_chunk, _ = data
    assert len(chunks[0]["choices"][0]["text"]) == 1  # the first character at once; then what each 20 ms generated
    assert all(c["object"] == "text_completion" and c["id"] == chunks[0]["id"] for c in chunks)
    assert "".join(c["choices"][0]["text"] for c in chunks) == sampled(tiny_checkpoint, "JULIET:", 40, 3, temperature=1.2)
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"
    assert usage_chunk["choices"] == [] and usage_chunk["usage"]["completion_tokens"] == 40
    streamed = client(server).completions.create(model="m", prompt="JULIET:", max_tokens=40, seed=3, temperature=1.2,
                                                 stream=True)
    assert "".join(c.choices[0].text for c in streamed) == sampled(tiny_checkpoint, "JULIET:", 40, 3, temperature=1.2)


@pytest.mark.slow  # a server process
def test_chat_turns_the_messages_into_a_script_and_the_reply_ends_with_its_speech(server: Server,
                                                                                 tiny_checkpoint: Path) -> None:
    messages = [{"role": "system", "content": "A street in Verona."},
                {"role": "user", "name": "ROMEO", "content": "Good morrow, cousin."},
                {"role": "assistant", "name": "BENVOLIO", "content": "Is the day so young?"},
                {"role": "user", "name": "ROMEO", "content": "But new struck nine."}]
    script = ("A street in Verona.\n\nROMEO:\nGood morrow, cousin.\n\nBENVOLIO:\nIs the day so young?\n\n"
              "ROMEO:\nBut new struck nine.\n\nBENVOLIO:\n")
    text = sampled(tiny_checkpoint, script, 300, 5)
    reply = text.split("\n\n")[0]
    answer = client(server).chat.completions.create(model="m", messages=messages, max_tokens=300, seed=5)
    assert answer.object == "chat.completion" and answer.choices[0].message.role == "assistant"
    assert answer.choices[0].message.content == reply
    assert answer.choices[0].finish_reason == ("stop" if "\n\n" in text else "length")
    assert answer.usage.prompt_tokens == len(script)
    streamed = list(client(server).chat.completions.create(model="m", messages=messages, max_tokens=300, seed=5,
                                                           stream=True))
    assert streamed[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in streamed) == reply
    assert streamed[-1].choices[0].finish_reason == answer.choices[0].finish_reason
    assert all(c.object == "chat.completion.chunk" for c in streamed)


@pytest.mark.slow  # a server process
def test_models_lists_the_served_checkpoint(server: Server) -> None:
    models = client(server).models.list()
    assert [m.id for m in models.data] == ["debug/last"] and models.data[0].owned_by == "lit_gpt"
    assert client(server).models.retrieve("debug/last").id == "debug/last"
    openai = pytest.importorskip("openai")
    with pytest.raises(openai.NotFoundError):
        client(server).models.retrieve("gpt-4")


@pytest.mark.slow  # a server process
def test_concurrent_streaming_requests_are_all_served_each_with_its_own_text(server: Server,
                                                                             tiny_checkpoint: Path) -> None:
    results: dict[int, str] = {}

    def stream(seed: int) -> None:
        _, data = events(server, "/v1/completions", prompt="\n", max_tokens=50, seed=seed)
        results[seed] = "".join(d["choices"][0]["text"] for d in data[:-1])

    threads = [threading.Thread(target=stream, args=(seed,)) for seed in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert sorted(results) == list(range(6))
    assert all(results[seed] == sampled(tiny_checkpoint, "\n", 50, seed) for seed in range(6))


@pytest.mark.slow  # a server process
def test_requests_of_every_kind_at_once_each_get_the_text_they_get_alone(server: Server, tiny_checkpoint: Path) -> None:
    """Requests with their own prompts, settings, lengths, stop sequences and n join the batch at different steps and
    leave at different steps, streamed and not, through the openai client and raw HTTP: each choice is the text
    sample.py gives for its seed (its text alone), character for character."""
    requests = [dict(prompt="ROMEO:", max_tokens=120, seed=1),
                dict(prompt="\n", max_tokens=40, seed=2, temperature=0),
                dict(prompt="KING RICHARD III:\nNow is the winter", max_tokens=90, seed=3, top_p=0.9, top_k=None),
                dict(prompt="A", max_tokens=70, seed=4, temperature=1.3, top_k=5, n=2),
                dict(prompt="JULIET:", max_tokens=100, seed=5, window_shift=None),  # the exact mode past the block
                dict(prompt="First Citizen:", max_tokens=60, seed=6, stop=["e"])]
    results: dict[int, list[str]] = {}

    def send(i: int) -> None:
        body = requests[i]
        if i % 2:  # raw HTTP, streamed
            _, data = events(server, "/v1/completions", model="m", **body)
            texts: dict[int, str] = {}
            for d in data[:-1]:
                for choice in d["choices"]:
                    texts[choice["index"]] = texts.get(choice["index"], "") + choice["text"]
            results[i] = [texts[k] for k in sorted(texts)]
        else:
            extra = {k: body[k] for k in ("top_k", "window_shift") if k in body}
            answer = client(server).completions.create(model="m", **{k: v for k, v in body.items() if k not in extra},
                                                       extra_body=extra)
            results[i] = [c.text for c in answer.choices]

    threads = [threading.Thread(target=send, args=(i,)) for i in range(len(requests))]
    for t in threads:
        t.start()
        t.join(timeout=0.05)  # they join the batch one after another
    for t in threads:
        t.join(timeout=120)
    for i, body in enumerate(requests):
        settings = {k: body[k] for k in ("temperature", "top_k", "top_p") if k in body}
        shift = body.get("window_shift", SHIFT)
        expected = [sampled(tiny_checkpoint, body["prompt"], body["max_tokens"], body["seed"] + c, shift, **settings)
                    for c in range(body.get("n", 1))]
        if "stop" in body:
            expected = [text.split(body["stop"][0])[0] for text in expected]
        assert results[i] == expected, i


@pytest.fixture(scope="module")
def one_row_server(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory):
    running = Server(tiny_checkpoint, tmp_path_factory.mktemp("one_row") / "log", "--max_batch", "1", "--timeout", "2")
    yield running
    running.stop()


@pytest.mark.slow  # a server process
def test_a_client_that_leaves_frees_its_rows_and_a_request_that_waited_too_long_gets_504(
        one_row_server: Server, tiny_checkpoint: Path) -> None:
    """One row per worker: a request of 16 choices x 10,000 characters holds it for minutes. A request queued behind it
    for longer than --timeout is answered 504 once it is taken; when the first client leaves mid-stream, its rows
    leave at once and the next request is served."""
    conn = one_row_server.connection()
    conn.request("POST", "/v1/completions", body=json.dumps({"prompt": "A", "max_tokens": 10_000, "n": 16,
                                                            "stream": True}))
    response = conn.getresponse()
    assert response.status == 200 and response.readline().startswith(b"data: ")
    waited: list[tuple] = []
    queued = threading.Thread(target=lambda: waited.append(one_row_server.complete(prompt="B", max_tokens=5)))
    queued.start()
    queued.join(timeout=3)  # longer than --timeout: it waits behind the 16 choices
    assert queued.is_alive()
    conn.close()  # the first client goes away
    queued.join(timeout=60)
    [(status, headers, body)] = waited
    assert status == 504 and headers["content-type"] == "application/json"
    assert "waited over 2 s for a free row" in json.loads(body)["error"]["message"]
    status, _, body = one_row_server.complete(prompt="ROMEO:", max_tokens=20, seed=5)
    assert status == 200 and json.loads(body)["choices"][0]["text"] == sampled(tiny_checkpoint, "ROMEO:", 20, 5)


@pytest.mark.slow  # a server process
def test_health_and_the_start_up_line_say_the_settings(one_row_server: Server) -> None:
    status, headers, body = one_row_server.request("GET", "/health")
    assert status == 200 and headers["content-type"] == "application/json"
    assert json.loads(body) == {"status": "ok", "model": "debug/last", "device": "cpu", "workers": 1, "max_batch": 1,
                                "timeout": 2.0, "block_size": 32, "window_shift": SHIFT}
    line = one_row_server.log.read_text().splitlines()[0]
    assert "1 worker(s), 1 rows each, window_shift 16, timeout 2 s" in line


@pytest.mark.slow  # a server process
@pytest.mark.parametrize("path, body, status, param, message", [
    ("/v1/completions", "not json", 400, None, r"the body is not JSON"),
    ("/v1/completions", '["ROMEO"]', 400, None, r"must be a JSON object"),
    ("/v1/completions", '{"max_tokens": 5}', 400, "prompt", r"prompt must be a string or a list of strings"),
    ("/v1/completions", '{"prompt": "ROMEO\u20ac~\u00e9"}', 400, "prompt",
     r'3 character\(s\) outside the model\'s vocabulary: "~", "\u00e9", "\u20ac"'),
    ("/v1/completions", '{"prompt": "A", "temperature": -1}', 400, "temperature", r"temperature must be a number"),
    ("/v1/completions", '{"prompt": "A", "top_p": 1.5}', 400, "top_p", r"top_p must be a number in \(0, 1\]"),
    ("/v1/completions", '{"prompt": "A", "max_tokens": 10001}', 400, "max_tokens",
     r"max_tokens must be an integer from 1 to 10000"),
    ("/v1/completions", '{"prompt": "A", "n": 17}', 400, "n", r"n must be an integer from 1 to 16"),
    ("/v1/completions", '{"prompt": "A", "stop": ["a", "b", "c", "d", "e"]}', 400, "stop", r"up to 4"),
    ("/v1/completions", '{"prompt": "A", "logprobs": 2}', 400, "logprobs", r"cannot be honoured"),
    ("/v1/completions", '{"prompt": "A", "colour": "red"}', 400, "colour", r"Unrecognized request argument"),
    ("/v1/chat/completions", '{"messages": []}', 400, "messages", r"non-empty list"),
    ("/v1/chat/completions", '{"messages": [{"role": "tool", "content": "x"}]}', 400, "messages", r"a role of"),
    ("/v1/chat/completions", '{"messages": [{"role": "user", "content": "\u00e9"}]}', 400, "messages",
     r"outside the model's vocabulary"),
    ("/v1/completions", json.dumps({"prompt": "A" * 10_001}), 413, "prompt", r"prompt has 10001 characters"),
    ("/v1/completions", json.dumps({"prompt": "A", "pad": "x" * 1_000_001}), 413, None, r"over 1000000 bytes"),
], ids=["not-json", "not-object", "no-prompt", "vocabulary", "temperature", "top_p", "length", "n", "stop",
        "logprobs", "unknown-field", "no-messages", "tool-role", "chat-vocabulary", "long-prompt", "big-body"])
def test_a_bad_request_gets_a_4xx_in_openai_error_shape(server: Server, path: str, body: str, status: int,
                                                       param: str, message: str) -> None:
    got, headers, answer = server.request("POST", path, body.encode())
    assert got == status and headers["content-type"] == "application/json"
    error = json.loads(answer)["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["param"] == param
    assert re.search(message, error["message"])
    assert server.complete(prompt="A", max_tokens=3, seed=1)[0] == 200  # the server still serves


@pytest.mark.slow  # a server process
def test_the_openai_client_raises_its_own_error_for_a_bad_request(server: Server) -> None:
    openai = pytest.importorskip("openai")
    with pytest.raises(openai.BadRequestError) as err:
        client(server).completions.create(model="m", prompt="A", max_tokens=5, best_of=3)
    assert err.value.body["param"] == "best_of" and "cannot be honoured" in err.value.body["message"]


@pytest.mark.slow  # a server process
def test_a_client_that_goes_away_mid_stream_does_not_harm_the_server(server: Server, tiny_checkpoint: Path) -> None:
    for _ in range(3):  # more abandoned streams than workers
        conn = server.connection()
        conn.request("POST", "/v1/completions", body=json.dumps({"prompt": "A", "max_tokens": 3000, "stream": True}))
        response = conn.getresponse()
        assert response.status == 200 and response.readline().startswith(b"data: ")
        conn.close()  # gone, mid-stream
    status, _, body = server.complete(prompt="ROMEO:", max_tokens=20, seed=5)
    assert status == 200 and json.loads(body)["choices"][0]["text"] == sampled(tiny_checkpoint, "ROMEO:", 20, 5)


@pytest.mark.slow  # a server process
def test_get_on_the_api_is_405_and_the_page_is_at_the_root(server: Server) -> None:
    assert server.request("GET", "/v1/completions")[0] == 405
    status, headers, page = server.request("GET", "/")
    assert status == 200 and headers["content-type"].startswith("text/html")
    assert b'id="generate"' in page and b'fetch("/v1/completions"' in page and b"stream: true" in page


@pytest.mark.slow  # a server process and a browser
def test_the_page_streams_a_completion_in_a_real_browser(server: Server) -> None:
    """Headless Chromium types a prompt, clicks Generate and reads the streamed text. Needs Playwright
    (``pip install playwright``) and a Chromium (``CHROMIUM``, default /usr/bin/chromium); with
    ``LIT_GPT_SCREENSHOT=PATH`` the page is saved there afterwards (docs/serve_page.png)."""
    playwright = pytest.importorskip("playwright.sync_api")
    chromium = os.environ.get("CHROMIUM", "/usr/bin/chromium")
    if not os.path.exists(chromium):
        pytest.skip(f"no Chromium at {chromium}")
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport={"width": 1000, "height": 760})
        page.goto(f"http://127.0.0.1:{server.port}/")
        for field, value in (("#prompt", "ROMEO:"), ("#max_tokens", "400"), ("#seed", "1337")):
            page.fill(field, value)
        page.click("#generate")
        page.wait_for_function("document.getElementById('status').textContent.includes('seed')", timeout=120_000)
        output, status = page.inner_text("#output"), page.inner_text("#status")
        if os.environ.get("LIT_GPT_SCREENSHOT"):
            page.screenshot(path=os.environ["LIT_GPT_SCREENSHOT"], full_page=True)
        browser.close()
    assert output.startswith("ROMEO:") and len(output) >= len("ROMEO:") + 400 and "error" not in status, status


@pytest.mark.slow  # a server process
def test_sigterm_stops_the_server_and_its_workers_with_status_0(tiny_checkpoint: Path, tmp_path: Path) -> None:
    running = Server(tiny_checkpoint, tmp_path / "log")
    assert running.complete(prompt="A", max_tokens=3, seed=1)[0] == 200
    running.proc.send_signal(signal.SIGTERM)
    try:
        assert running.proc.wait(timeout=60) == 0, (tmp_path / "log").read_text()[-2000:]
        assert "server stopped" in (tmp_path / "log").read_text()

        def group_left() -> bool:
            try:
                os.killpg(running.proc.pid, 0)
                return True
            except ProcessLookupError:
                return False

        # The workers and the API server end with it.
        assert wait_until(lambda: not group_left(), timeout=10, interval=0.05), "processes of the server are left"
    finally:
        running.stop()


@pytest.mark.parametrize("args, message", [
    (["--checkpoint", "missing.ckpt"], r"checkpoint not found: missing.ckpt"),
    (["--checkpoint", "{bad}"], r"not a readable PyTorch checkpoint"),
    (["--checkpoint", "{good}", "--port", "0"], r"--port must be from 1 to 65535"),
    (["--checkpoint", "{good}", "--port", "{busy}"], r"cannot listen on 127.0.0.1:\d+"),
    (["--checkpoint", "{good}", "--device", "cuda:7"], r"device 'cuda:7'"),
    (["--checkpoint", "{good}", "--max_batch", "0"], r"--max_batch must be at least 1, got 0"),
    (["--checkpoint", "{good}", "--window_shift", "wide"], r"--window_shift must be 'auto', 'exact' or a positive"),
    (["--checkpoint", "{good}", "--window_shift", "32"], r"--window_shift must be between 1 and block_size - 1 = 31"),
], ids=["missing", "not-a-checkpoint", "port-0", "port-in-use", "no-such-device", "max-batch", "window-shift-word",
        "window-shift-block"])
def test_a_bad_start_is_one_error_line_and_exit_2(tiny_checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture,
                                                   args: list[str], message: str) -> None:
    (tmp_path / "bad.ckpt").write_bytes(b"not a checkpoint")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        filled = [a.format(bad=tmp_path / "bad.ckpt", good=tiny_checkpoint, busy=busy.getsockname()[1]) for a in args]
        with pytest.raises(SystemExit) as exit_info:
            serve_main(filled)
    assert_one_line_error(capsys, exit_info, message)


def test_without_litserve_the_command_says_how_to_install_it(tiny_checkpoint: Path, capsys: pytest.CaptureFixture,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    import lit_gpt.serve_cli

    real = lit_gpt.serve_cli.importlib.util.find_spec
    monkeypatch.setattr(lit_gpt.serve_cli.importlib.util, "find_spec",
                        lambda name, *a: None if name == "litserve" else real(name, *a))
    with pytest.raises(SystemExit) as exit_info:
        serve_main(["--checkpoint", str(tiny_checkpoint)])
    assert_one_line_error(capsys, exit_info, r'serving needs LitServe, an optional extra: pip install -e "\.\[serve\]"')

