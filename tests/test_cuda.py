"""The GPU path: bf16-mixed, TF32, fused AdamW, pinned batches, torch.compile with the monitor on, flash attention,
MFU, KV-cache sampling and exact resume on CUDA.

Tests marked ``cuda`` are skipped where there is no CUDA device (a skip is reported as a skip, never as a pass);
``bench/gpu_check.sh tests`` runs them on a GPU. The compile test also runs on the CPU, where it checks the same
property with the CPU compiler.
"""

from pathlib import Path

import pytest
import torch

from helpers import GraphCounter, callback, events, fit_args, read_losses, read_windows
from lit_gpt.cli import cli_main
from lit_gpt.config import GPTConfig
from lit_gpt.generate import TextGenerator
from lit_gpt.model import GPT

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
DEVICES = ["cpu", pytest.param("gpu", marks=cuda)]


@pytest.mark.slow  # compiles
@pytest.mark.parametrize("accelerator", DEVICES)
def test_validations_with_the_monitor_compile_nothing_new(corpus_path: Path, tmp_path: Path, accelerator: str) -> None:
    """A compiled run (bf16-mixed on a GPU) with samples and attention maps at every validation: after the first
    training step (which compiles the training graph; the sanity check, here over every validation batch, compiled
    the validation graphs, one per batch shape), neither the validations, nor the monitor's generation and attention
    maps, nor later steps compile another graph."""
    torch.compiler.reset()
    cli = cli_main(fit_args(corpus_path, tmp_path, "--trainer.accelerator", accelerator, "--model.compile", "true",
                            "--trainer.precision", "bf16-mixed" if accelerator == "gpu" else "32-true",
                            "--trainer.max_steps", "25", "--trainer.val_check_interval", "10",
                            "--trainer.num_sanity_val_steps", "-1",  # every validation batch shape before training
                            "--trainer.callbacks+=helpers.GraphCounter"))
    counter = next(c for c in cli.trainer.callbacks if isinstance(c, GraphCounter))
    assert sorted(counter.after_validation) == [10, 20]  # both validations ran, with the monitor on (debug recipe)
    first = counter.after_step[1]
    assert first > 0, "nothing was compiled"
    assert counter.after_validation == {10: first, 20: first}
    assert counter.after_step[25] == first


@cuda
def test_the_gpu_recipe_path_is_on(corpus_path: Path, tmp_path: Path) -> None:
    """What the GPU recipe promises, seen from inside a run: bf16-mixed, TF32, fused AdamW, pinned host batches,
    a compiled model, and MFU in TensorBoard (Lightning knows the GPU's peak)."""
    cli = cli_main(fit_args(corpus_path, tmp_path, "--trainer.accelerator", "gpu", "--trainer.precision", "bf16-mixed",
                            "--trainer.max_steps", "20", "--throughput.window_size", "5"))
    trainer, module = cli.trainer, cli.model
    assert trainer.precision == "bf16-mixed"
    assert torch.backends.cuda.matmul.allow_tf32
    assert trainer.optimizers[0].defaults["fused"] is True
    assert trainer.train_dataloader.pin_memory
    assert getattr(module, "_compiled", False)  # model.compile is null in the recipe: on by default on CUDA
    mfu = [e.value for e in events(tmp_path / "debug").Scalars("train/device/mfu")]
    assert mfu and all(0 < v < 1 for v in mfu), mfu


@cuda
def test_flash_attention_runs_the_recipe_shapes() -> None:
    """SDPA picks flash attention for the recipe's heads (6 x 64 channels) in bf16, forward and backward: with only
    the flash kernel allowed, a kernel it could not use would raise."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    model = GPT(GPTConfig(vocab_size=65, block_size=256, n_layer=6, n_head=6, n_embd=384, dropout=0.2,
                          bias=False)).cuda().train()
    idx = torch.randint(0, 65, (8, 256), device="cuda")
    with sdpa_kernel([SDPBackend.FLASH_ATTENTION]), torch.autocast("cuda", dtype=torch.bfloat16):
        _, loss = model(idx, idx)
    loss.backward()
    assert torch.isfinite(loss)


@cuda
def test_greedy_sampling_on_cuda_is_the_same_with_and_without_the_cache(corpus_path: Path, tmp_path: Path) -> None:
    """A trained debug model on CUDA (float32): greedy text with the KV cache equals the cache-free loop's, within
    and well past block_size (32)."""
    cli_main(fit_args(corpus_path, tmp_path, "--trainer.accelerator", "gpu", "--trainer.max_steps", "60",
                      "--trainer.val_check_interval", "60"))
    gen = TextGenerator.from_checkpoint(tmp_path / "debug" / "checkpoints" / "last.ckpt", device="cuda")
    assert gen.device.type == "cuda"
    allow_tf32 = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False  # the same float32 arithmetic on both sides
    try:
        cached = gen.generate("ROMEO:", 200, temperature=0)[0]
        free = gen.generate("ROMEO:", 200, temperature=0, use_cache=False)[0]
    finally:
        torch.backends.cuda.matmul.allow_tf32 = allow_tf32
    assert cached == free


@cuda
@pytest.mark.parametrize("precision, deterministic", [("32-true", True), ("bf16-mixed", False)])
def test_resume_on_cuda(corpus_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, precision: str,
                        deterministic: bool, capsys: pytest.CaptureFixture) -> None:
    """30 steps straight vs 13 + 17 resumed, on the GPU (dropout on): the resumed run draws the same windows at every
    step. With deterministic kernels (``--trainer.deterministic true``, float32, eager) every loss is equal bit for
    bit. As the recipe runs (bf16-mixed, compiled, the default kernels) the embedding's backward adds gradients with
    atomics in arbitrary order, so the losses are bounded instead: within 2e-2 of the straight run's."""
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # cuBLAS's requirement for deterministic matmuls

    def run(runs: Path, name: str, *extra: str) -> None:
        cli_main(fit_args(corpus_path, runs, "--trainer.accelerator", "gpu", "--trainer.precision", precision,
                          "--trainer.deterministic", str(deterministic).lower(), "--model.compile", str(not deterministic).lower(),
                          "--trainer.max_steps", "30",
                          "--periodic_checkpoint.every_n_train_steps", "4",
                          callback("helpers.LossRecorder", path=str(tmp_path / f"{name}.txt")),
                          callback("helpers.WindowLog", path=str(tmp_path / f"{name}.jsonl")), *extra))

    try:
        run(tmp_path / "a", "straight")
        run(tmp_path / "b", "legs", "--trainer.max_steps", "13")
        run(tmp_path / "b", "legs", "--ckpt_path", "last")
    finally:
        torch.use_deterministic_algorithms(False)  # Lightning's deterministic=True sets it for the whole process
    assert read_windows(tmp_path / "straight.jsonl") == read_windows(tmp_path / "legs.jsonl")
    a, b = read_losses(tmp_path / "straight.txt"), read_losses(tmp_path / "legs.txt")
    assert sorted(a) == sorted(b) and len(a) == 30 + 3
    diffs = {k: abs(float.fromhex(a[k]) - float.fromhex(b[k])) for k in a}
    with capsys.disabled():
        print(f"\nresume on CUDA, {precision}, deterministic={deterministic}: largest |loss difference| "
              f"{max(diffs.values()):.3g} over {len(diffs)} losses")
    if deterministic:
        assert a == b
    else:
        assert max(diffs.values()) < 2e-2
