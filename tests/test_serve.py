"""serve.py as a real server process on a free local port, talked to over HTTP: completions, streaming, concurrent
requests, bad requests, the page, and SIGTERM."""

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

from helpers import assert_one_line_error, free_port, wait_until
from lit_gpt.sample_cli import SEPARATOR, run as sample_run
from lit_gpt.serve_cli import main as serve_main


ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def checkpoint(tiny_checkpoint: Path) -> Path:
    return tiny_checkpoint


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
def server(checkpoint: Path, tmp_path_factory: pytest.TempPathFactory):
    running = Server(checkpoint, tmp_path_factory.mktemp("server") / "log", "--workers", "2")
    yield running
    running.stop()


def sampled(checkpoint: Path, prompt: str, max_new_tokens: int, seed: int, **settings) -> str:
    """What ``python sample.py`` prints for these settings, less the prompt and the closing line."""
    args = SimpleNamespace(checkpoint=str(checkpoint), prompt=prompt, prompt_file=None, max_new_tokens=max_new_tokens,
                           num_samples=1, temperature=settings.get("temperature", 0.8), top_k=settings.get("top_k", 200),
                           top_p=settings.get("top_p"), seed=seed, window_shift=None, no_cache=False, device="cpu",
                           compile=False)
    out = io.StringIO()
    sample_run(args, out)
    return out.getvalue()[len(prompt):-len(f"\n{SEPARATOR}\n")]


def stream_lines(server: Server, **request) -> tuple[dict, list[dict]]:
    """POST with "stream": true; (headers, the JSON lines), read as they arrive."""
    conn = server.connection()
    try:
        conn.request("POST", "/v1/completions", body=json.dumps({**request, "stream": True}))
        response = conn.getresponse()
        assert response.status == 200
        lines = [json.loads(line) for line in iter(response.readline, b"") if line.strip()]
        return dict(response.getheaders()), lines
    finally:
        conn.close()


@pytest.mark.slow  # a server process
def test_a_completion_is_the_text_sample_py_gives(server: Server, checkpoint: Path) -> None:
    status, headers, body = server.complete(prompt="ROMEO:", max_new_tokens=60, seed=7, top_p=0.9)
    assert status == 200 and headers["content-type"] == "application/json"
    answer = json.loads(body)
    assert answer == {"text": sampled(checkpoint, "ROMEO:", 60, 7, top_p=0.9), "seed": 7}
    assert len(answer["text"]) == 60


@pytest.mark.slow  # a server process
def test_without_a_seed_a_random_one_is_used_and_returned(server: Server, checkpoint: Path) -> None:
    first, second = (json.loads(server.complete(prompt="KING", max_new_tokens=30)[2]) for _ in range(2))
    assert first["seed"] != second["seed"]
    assert first["text"] == sampled(checkpoint, "KING", 30, first["seed"])


@pytest.mark.slow  # a server process
def test_streaming_sends_the_characters_in_lines_as_they_come_then_done(server: Server, checkpoint: Path) -> None:
    headers, lines = stream_lines(server, prompt="JULIET:", max_new_tokens=40, seed=3, temperature=1.2)
    assert headers["content-type"] == "application/x-ndjson"
    assert lines[-1] == {"done": True, "seed": 3}
    assert len(lines[0]["text"]) == 1  # the first character at once; then what each 20 ms generated
    assert "".join(line["text"] for line in lines[:-1]) == sampled(checkpoint, "JULIET:", 40, 3, temperature=1.2)


@pytest.mark.slow  # a server process
def test_concurrent_streaming_requests_are_all_served_each_with_its_own_text(server: Server,
                                                                             checkpoint: Path) -> None:
    results: dict[int, str] = {}

    def client(seed: int) -> None:
        _, lines = stream_lines(server, prompt="\n", max_new_tokens=50, seed=seed)
        results[seed] = "".join(line.get("text", "") for line in lines)

    threads = [threading.Thread(target=client, args=(seed,)) for seed in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert sorted(results) == list(range(6))
    assert all(results[seed] == sampled(checkpoint, "\n", 50, seed) for seed in range(6))


@pytest.mark.slow  # a server process
@pytest.mark.parametrize("body, status, message", [
    ("not json", 400, r"the body is not JSON"),
    ('["ROMEO"]', 400, r"must be a JSON object"),
    ('{"max_new_tokens": 5}', 400, r"prompt must be a string, got null"),
    ('{"prompt": "ROMEO\u20ac~\u00e9"}', 400, r'3 character\(s\) outside the model\'s vocabulary: "~", "\u00e9", "\u20ac"'),
    ('{"prompt": "A", "temperature": -1, "top_k": 0}', 400, r"temperature must be .* got -1; top_k must be"),
    ('{"prompt": "A", "top_p": 1.5, "seed": -2, "stream": "yes"}', 400, r"top_p .* got 1.5; seed .*; stream must"),
    ('{"prompt": "A", "max_new_tokens": 10001}', 400, r"max_new_tokens must be an integer from 1 to 10000"),
    ('{"prompt": "A", "max_new_tokens": 2.5}', 400, r"max_new_tokens must be an integer"),
    ('{"prompt": "A", "colour": "red"}', 400, r"unknown field\(s\): colour"),
    (json.dumps({"prompt": "A" * 10_001}), 413, r"prompt has 10001 characters; the limit is 10000"),
    (json.dumps({"prompt": "A", "pad": "x" * 1_000_001}), 413, r"the body is over 1000000 bytes"),
], ids=["not-json", "not-object", "no-prompt", "vocabulary", "ranges", "more-ranges", "length", "float-length",
        "unknown-field", "long-prompt", "big-body"])
def test_a_bad_request_gets_a_4xx_json_error_naming_the_problem(server: Server, body: str, status: int,
                                                                message: str) -> None:
    got, headers, answer = server.request("POST", "/v1/completions", body.encode())
    assert got == status and headers["content-type"] == "application/json"
    assert re.search(message, json.loads(answer)["error"])
    assert server.complete(prompt="A", max_new_tokens=3, seed=1)[0] == 200  # the server still serves


@pytest.mark.slow  # a server process
def test_a_client_that_goes_away_mid_stream_does_not_harm_the_server(server: Server, checkpoint: Path) -> None:
    for _ in range(3):  # more abandoned streams than workers
        conn = server.connection()
        conn.request("POST", "/v1/completions", body=json.dumps({"prompt": "A", "max_new_tokens": 3000,
                                                                  "stream": True}))
        response = conn.getresponse()
        assert response.status == 200 and json.loads(response.readline())["text"]
        conn.close()  # gone, mid-stream
    status, _, body = server.complete(prompt="ROMEO:", max_new_tokens=20, seed=5)
    assert status == 200 and json.loads(body)["text"] == sampled(checkpoint, "ROMEO:", 20, 5)


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
        for field, value in (("#prompt", "ROMEO:"), ("#max_new_tokens", "400"), ("#seed", "1337")):
            page.fill(field, value)
        page.click("#generate")
        page.wait_for_function("document.getElementById('status').textContent.includes('seed')", timeout=120_000)
        output, status = page.inner_text("#output"), page.inner_text("#status")
        if os.environ.get("LIT_GPT_SCREENSHOT"):
            page.screenshot(path=os.environ["LIT_GPT_SCREENSHOT"], full_page=True)
        browser.close()
    assert output.startswith("ROMEO:") and len(output) >= len("ROMEO:") + 400 and "error" not in status, status


@pytest.mark.slow  # a server process
def test_sigterm_stops_the_server_and_its_workers_with_status_0(checkpoint: Path, tmp_path: Path) -> None:
    running = Server(checkpoint, tmp_path / "log")
    assert running.complete(prompt="A", max_new_tokens=3, seed=1)[0] == 200
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
], ids=["missing", "not-a-checkpoint", "port-0", "port-in-use", "no-such-device"])
def test_a_bad_start_is_one_error_line_and_exit_2(checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture,
                                                   args: list[str], message: str) -> None:
    (tmp_path / "bad.ckpt").write_bytes(b"not a checkpoint")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        filled = [a.format(bad=tmp_path / "bad.ckpt", good=checkpoint, busy=busy.getsockname()[1]) for a in args]
        with pytest.raises(SystemExit) as exit_info:
            serve_main(filled)
    assert_one_line_error(capsys, exit_info, message)


def test_without_litserve_the_command_says_how_to_install_it(checkpoint: Path, capsys: pytest.CaptureFixture,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    import lit_gpt.serve_cli

    real = lit_gpt.serve_cli.importlib.util.find_spec
    monkeypatch.setattr(lit_gpt.serve_cli.importlib.util, "find_spec",
                        lambda name, *a: None if name == "litserve" else real(name, *a))
    with pytest.raises(SystemExit) as exit_info:
        serve_main(["--checkpoint", str(checkpoint)])
    assert_one_line_error(capsys, exit_info, r'serving needs LitServe, an optional extra: pip install -e "\.\[serve\]"')

