"""The notebooks of notebooks/, run end to end in a Jupyter kernel, and a kernel interrupted during ``fit``."""

import queue
import time
from pathlib import Path

import nbformat
import pytest
from jupyter_client.manager import start_new_kernel
from nbclient import NotebookClient

from helpers import ROOT
from lit_gpt.checkpointing import checkpoint_step

NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
SCALE = "0.2"  # a fifth of each notebook's training steps; every cell and assertion runs


def test_there_are_notebooks_and_they_are_stored_without_outputs() -> None:
    assert [path.name for path in NOTEBOOKS] == ["lecture.ipynb", "resume_sample_score.ipynb"]
    for path in NOTEBOOKS:
        book = nbformat.read(path, as_version=4)
        nbformat.validate(book)
        for cell in book.cells:
            if cell.cell_type == "code":
                assert cell.outputs == [] and cell.execution_count is None, (
                    f"{path.name}: clear its outputs before committing (docs/development.md)")


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[path.stem for path in NOTEBOOKS])
def test_a_notebook_runs_end_to_end(path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every cell runs in a fresh kernel, in a folder of its own; each cell's figure is an assertion in the cell, so a
    claim that does not hold fails here (nbclient raises CellExecutionError)."""
    monkeypatch.setenv("LIT_GPT_NOTEBOOK_SCALE", SCALE)
    book = nbformat.read(path, as_version=4)
    NotebookClient(book, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    streams = "".join(o.get("text", "") for cell in book.cells for o in cell.get("outputs", []))
    assert "Traceback" not in streams and "SystemExit" not in streams
    assert list(tmp_path.glob("runs/notebook/*/*/checkpoints/last.ckpt"))


@pytest.mark.slow
def test_interrupting_the_kernel_during_fit_writes_last_and_returns_control(tmp_path: Path) -> None:
    """Jupyter's interrupt (SIGINT to the kernel) during ``trainer.fit``: the step is finished and written, ``fit``
    returns with one line that says how to resume, no exception, and the kernel goes on with Python's own Ctrl-C."""
    manager, client = start_new_kernel(kernel_name="python3", cwd=str(tmp_path))
    try:
        outputs = execute(client, "\n".join([
            "from lit_gpt import recipe",
            "trainer, model, dm = recipe('debug', trainer={'max_steps': 5000})",
            "trainer.fit(model, dm)",
            "print('control is back after step', trainer.global_step)",
        ]), interrupt=(manager, "step 25/"))
        errors = [text for kind, text in outputs if kind == "error"]
        assert not errors, errors
        err = "".join(text for kind, text in outputs if kind == "stderr")
        out = "".join(text for kind, text in outputs if kind == "stdout")
        [line] = [line for line in err.splitlines() if line.startswith("stopped by")]
        step = int(line.split("after step ")[1].split(";")[0])
        assert line == (f"stopped by SIGINT after step {step}; runs/debug/checkpoints/last.ckpt holds that step. "
                        f'Resume with: trainer.fit(model, datamodule, ckpt_path="last")')
        assert f"control is back after step {step}\n" in out
        assert "sys.argv" not in err  # LightningCLI's warning about the kernel's own arguments is not shown
        assert checkpoint_step(tmp_path / "runs" / "debug" / "checkpoints" / "last.ckpt") == step
        after = execute(client, "import signal; print(signal.getsignal(signal.SIGINT) is signal.default_int_handler)")
        assert after == [("stdout", "True\n")]
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=True)


def execute(client, code: str, interrupt=None, timeout: float = 300.0) -> list[tuple[str, str]]:
    """Run ``code`` in the kernel: its outputs as (stdout | stderr | error, text); with ``interrupt`` = (manager,
    text), the kernel is interrupted once ``text`` is printed."""
    msg_id = client.execute(code)
    outputs, deadline, interrupted = [], time.monotonic() + timeout, False
    while time.monotonic() < deadline:
        try:
            msg = client.get_iopub_msg(timeout=1)
        except queue.Empty:
            continue
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        kind, content = msg["msg_type"], msg["content"]
        if kind == "stream":
            outputs.append((content["name"], content["text"]))
            if interrupt is not None and not interrupted and interrupt[1] in content["text"]:
                interrupt[0].interrupt_kernel()  # what the notebook's interrupt button does
                interrupted = True
        elif kind == "error":
            outputs.append(("error", f"{content['ename']}: {content['evalue']}"))
        elif kind == "status" and content["execution_state"] == "idle":
            return outputs
    raise AssertionError(f"the kernel did not finish in {timeout} s: {outputs[-5:]}")

