"""Every shell command in the README and docs/ is checked, and every link and image path resolves.

Commands come from ```bash blocks and from inline code that starts like a command. ``train.py`` commands must parse
(``--print_config``), ``sample.py`` commands run on a tiny checkpoint, ``serve.py`` commands parse and their ``curl``
requests pass the server's checks, bench commands name a script that has every option they use.
"""

import glob
import io
import json
import re
import shlex
import shutil
import sys
from contextlib import redirect_stdout
from pathlib import Path

import pytest

from helpers import ROOT
from lit_gpt.cli import cli_main
from lit_gpt.files import read_checkpoint
from lit_gpt.sample_cli import main as sample_main
from lit_gpt.openai_protocol import check_job
from lit_gpt.tokenizer import CharTokenizer
from lit_gpt.serve import ROUTES, build_server
from lit_gpt.serve_cli import build_parser as serve_parser, window_shift_arg

PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
STARTS = ("python ", "python3 ", "pip ", "bash ", "tensorboard ", "torchrun ", "curl ", "lit-gpt-", "srun ",
          "for ", "FAULT_SEED=", "MASTER_ADDR=", "GPU_CHECK_DRY=", "LIT_GPT_TEST_SYNTHETIC=", "LIT_GPT_SCREENSHOT=", "/usr/bin/time ")


def without_env_and_wrappers(tokens: list[str]) -> list[str]:
    while tokens and (re.match(r"^[A-Z_]+=", tokens[0]) or tokens[0] in ("srun", "/usr/bin/time", "-v")):
        tokens = tokens[1:]
    return tokens


def shell_commands(text: str) -> list[str]:
    """The commands of every ```bash block (continuation lines joined, comments dropped) and of inline code."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            tokens = shlex.split(line, comments=True)
            if tokens:
                commands.append(shlex.join(tokens))
    outside = re.sub(r"```.*?```", "", text, flags=re.S)
    for code in (" ".join(c.split()) for c in re.findall(r"`([^`]+)`", outside)):  # a span may wrap a line
        if code.startswith(STARTS) and not code.endswith(("...", "…")) and without_env_and_wrappers(code.split()):
            commands.append(code)
    return commands


COMMANDS = sorted({(page.name, c) for page in PAGES for c in shell_commands(page.read_text(encoding="utf-8"))})


def check_train(args: list[str]) -> None:
    """The arguments of ``train.py`` parse: LightningCLI prints the resolved config and exits 0."""
    if args[:1] in (["--help"], ["fit", "--help"]) or args[-1:] == ["--help"]:
        with pytest.raises(SystemExit) as exit_info, redirect_stdout(io.StringIO()):
            cli_main(args)
        assert exit_info.value.code == 0
        return
    args = [a if not a.startswith("configs/") else str(ROOT / a) for a in args]
    with pytest.raises(SystemExit) as exit_info, redirect_stdout(io.StringIO()) as out:
        cli_main([*args, "--print_config"])
    assert exit_info.value.code == 0 and "trainer:" in out.getvalue()


def check_bench(script: str, args: list[str]) -> None:
    source = (ROOT / script).read_text(encoding="utf-8")
    for arg in args:
        if arg.startswith("--"):
            assert f'"{arg.split("=")[0]}"' in source or f"{arg.split('=')[0]}" in source, f"{script} has no {arg}"


def check(command: str, checkpoint: Path, capsys: pytest.CaptureFixture) -> None:
    tokens = without_env_and_wrappers(shlex.split(command))
    head = tokens[0]
    if head == "for":  # for c in configs/lecture/ladder_*.yaml; do python train.py fit --config $c; done
        configs = sorted(glob.glob(str(ROOT / tokens[3].rstrip(";"))))
        assert configs, command
        for config in configs:
            check_train(["fit", "--config", config])
        return
    if head == "torchrun":
        tokens = ["python", *tokens[tokens.index("train.py"):]]
        head = "python"
    if head.startswith("lit-gpt-"):
        assert f"{head} = " in (ROOT / "setup.cfg").read_text(), head
        return
    if head in ("python", "python3"):
        if tokens[1] == "-m" and tokens[2] == "pytest":
            paths = [t for t in tokens[3:] if t.startswith("tests/")]
            assert all((ROOT / p).exists() for p in paths), command
            return
        if tokens[1] == "-X" or tokens[1] == "-c":
            compile(tokens[tokens.index("-c") + 1], "<doc>", "exec")
            return
        script, args = tokens[1], tokens[2:]
        if script == "train.py":
            return check_train(args)
        if script == "sample.py":
            if "--help" in args:
                return
            args = [str(checkpoint) if prev == "--checkpoint" else a for prev, a in zip(["", *args], args)]
            sample_main([*args, "--device", "cpu"])
            assert capsys.readouterr().out.rstrip().endswith("-" * 15)
            return
        if script == "serve.py":
            if "--help" in args:
                with pytest.raises(SystemExit) as exit_info, redirect_stdout(io.StringIO()):
                    serve_parser().parse_args(args)
                assert exit_info.value.code == 0
                return
            parsed = serve_parser().parse_args(args)  # then the server it builds (started by tests/test_serve.py)
            server = build_server(str(checkpoint), "cpu", parsed.workers, parsed.timeout, parsed.max_batch,
                                  window_shift_arg(parsed.window_shift))
            assert (server.settings["workers"], server.settings["max_batch"]) == (parsed.workers, parsed.max_batch)
            return
        if script.startswith("bench/"):
            return check_bench(script, args)
    if head == "bash":
        assert (ROOT / tokens[1]).is_file(), command
        return
    if head == "pip":
        for extra in re.findall(r"\.\[(\w+)\]", command):
            assert f"\n{extra} =" in (ROOT / "setup.cfg").read_text(), extra
        return
    if head == "tensorboard":
        # installed beside this interpreter, whether or not its environment is activated
        assert shutil.which("tensorboard", path=str(Path(sys.executable).parent)) and "--logdir" in tokens
        return
    if head == "curl":
        url = next(t for t in tokens if t.startswith("http"))
        path = "/" + url.split("/", 3)[3]
        if "-d" not in tokens:  # a GET
            assert path.startswith("/v1/models"), command
            return
        body = json.loads(tokens[tokens.index("-d") + 1])
        hparams = read_checkpoint(checkpoint)["hyper_parameters"]
        check_job(body, ROUTES[path], CharTokenizer(hparams["vocab"]), "model", hparams["config"]["block_size"])
        return
    pytest.fail(f"no check for this command: {command}")


@pytest.mark.parametrize("page, command", COMMANDS, ids=[f"{p}:{c[:60]}" for p, c in COMMANDS])
def test_every_command_in_the_docs_works(page: str, command: str, tiny_checkpoint: Path,
                                         capsys: pytest.CaptureFixture) -> None:
    check(command, tiny_checkpoint, capsys)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


@pytest.mark.parametrize("page", PAGES, ids=[p.name for p in PAGES])
def test_every_link_and_image_resolves(page: Path) -> None:
    text = page.read_text(encoding="utf-8")
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if target.startswith(("http://", "https://", "mailto:")):
            continue
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        assert file.exists(), f"{page.name}: {target}"
        if anchor and file.suffix == ".md":
            headings = re.findall(r"^#+ (.+)$", file.read_text(encoding="utf-8"), flags=re.M)
            assert anchor in {slug(h) for h in headings}, f"{page.name}: {target}"


def test_the_readme_is_short_and_links_every_docs_page() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) <= 250
    for page in (ROOT / "docs").glob("*.md"):
        assert f"docs/{page.name}" in readme, page.name
