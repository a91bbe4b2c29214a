"""What a run shows in TensorBoard, read back from the event files."""

import io
import math
from pathlib import Path

import pytest
import torch
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from helpers import events, fit_args, read_losses
from lit_gpt.cli import cli_main
from lit_gpt.config import GPTConfig
from lit_gpt.model import GPT
from lit_gpt.module import LitGPT
from lit_gpt.attention_image import VIRIDIS, attention_image, colorize
from lit_gpt.throughput import flops_per_batch

@pytest.fixture(scope="module")
def run(debug_run: dict) -> EventAccumulator:
    """The TensorBoard events of the session's debug run."""
    return events(debug_run["runs"] / "debug")


def test_scalars(run: EventAccumulator) -> None:
    tags = set(run.Tags()["scalars"])
    for tag in ["train_loss", "val_loss", "val_bpc", "lr/decay", "lr/no_decay", "grad_norm", "hp_metric",
                "train/device/items_per_sec", "train/device/flops_per_sec", "monitor_seconds"]:
        assert tag in tags, tag
    assert len(run.Scalars("train_loss")) == 20  # every step (log_every_n_steps: 1 in the debug recipe)
    val = [e.value for e in run.Scalars("val_loss")]
    bpc = [e.value for e in run.Scalars("val_bpc")]
    assert len(val) == 2 and bpc == pytest.approx([v / math.log(2) for v in val], rel=1e-6)
    assert run.Scalars("hp_metric")[-1].value == pytest.approx(min(val))  # the best val_loss
    assert all(e.value > 0 and math.isfinite(e.value) for e in run.Scalars("grad_norm"))
    assert run.Scalars("train/device/items_per_sec")[-1].value > 0
    lrs = [e.value for e in run.Scalars("lr/decay")]
    assert lrs[0] < lrs[4] and 1e-4 < lrs[-1] < 1.2e-4  # warmup, then cosine decay towards min_lr at step 20
    assert all(0 < e.value < 60 for e in run.Scalars("monitor_seconds"))


def test_text_samples(run: EventAccumulator) -> None:
    texts = [e.tensor_proto.string_val[0].decode() for e in run.Tensors("samples/text_summary")]
    assert len(texts) == 2  # one per validation
    assert texts[0].startswith("**step 10**") and texts[1].startswith("**step 20**")
    body = [line[4:] for line in texts[1].split("\n")[2:]]  # the indented code block
    assert len("\n".join(body)) == 1 + 100  # the prompt (a newline) and sample_length characters


def test_attention_images(run: EventAccumulator) -> None:
    assert {"attention/layer0", "attention/layer1"} <= set(run.Tags()["images"])
    image = run.Images("attention/layer0")[-1]
    picture = torch.from_numpy(__import__("numpy").array(Image.open(io.BytesIO(image.encoded_image_string))))
    assert picture.shape[2] == 3 and picture.shape[0] > 100 and picture.shape[1] > 100
    assert len(run.Images("attention/layer1")) == 2


def test_attention_maps_are_causal_distributions() -> None:
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=20, block_size=16, n_layer=2, n_head=3, n_embd=24)).eval()
    idx = torch.randint(0, 20, (2, 12))
    maps = model.attention_maps(idx)  # (n_layer, B, nh, T, T)
    assert maps.shape == (2, 2, 3, 12, 12)
    torch.testing.assert_close(maps.sum(-1), torch.ones(2, 2, 3, 12))  # rows sum to 1
    assert torch.all(maps.triu(diagonal=1) == 0)  # nothing attends to the future
    # The maps are the attention the model uses: weights @ v, projected, is what SDPA's attention layer returns.
    block = model.transformer.h[0]
    x = block.ln_1(model.embed(idx))  # (B, T, C)
    _, _, v = block.attn.heads(x)  # (B, nh, T, hs)
    y = (maps[0] @ v).transpose(1, 2).reshape(2, 12, 24)  # (B, T, C)
    torch.testing.assert_close(block.attn.c_proj(y), block.attn(x), atol=1e-5, rtol=1e-5)


def test_attention_image_draws_the_upper_triangle_empty() -> None:
    T, scale = 6, 10
    att = torch.rand(2, T, T).tril()
    att = att / att.sum(-1, keepdim=True)
    image = attention_image(att, list("ab cd\n"), "title", scale=scale, columns=2)  # (3, H, W)
    assert image.shape[0] == 3 and image.min() >= 0 and image.max() <= 1
    pixels = (image.permute(1, 2, 0) * 255).round().to(torch.uint8)  # (H, W, 3)
    empty, full = VIRIDIS[0].to(torch.uint8), VIRIDIS[-1].to(torch.uint8)
    is_empty = (pixels == empty).all(-1)  # (H, W)
    is_full = (pixels == full).all(-1)
    assert is_empty.sum() >= 2 * (T * (T - 1) // 2) * scale * scale  # every upper-triangle cell of both heads
    assert is_full.sum() >= 2 * T * scale * scale  # every row's maximum is drawn at full colour
    torch.testing.assert_close(colorize(torch.tensor([[0.0, 1.0]])), torch.stack([empty, full]).unsqueeze(0))


def test_everything_switches_off(corpus_path: Path, tmp_path: Path) -> None:
    cli_main(fit_args(corpus_path, tmp_path, "--monitor.log_samples", "false", "--monitor.log_attention", "false",
        "--monitor.log_grad_norm", "false"))
    ea = events(tmp_path / "debug")
    assert not ea.Tags()["images"] and not ea.Tags()["tensors"]
    assert "grad_norm" not in ea.Tags()["scalars"] and "val_loss" in ea.Tags()["scalars"]


@pytest.mark.slow
def test_monitor_under_ddp_runs_on_rank_zero_without_hanging(corpus_path: Path, tmp_path: Path) -> None:
    cli_main(fit_args(corpus_path, tmp_path, "--trainer.strategy", "ddp_spawn", "--trainer.devices", "2"))
    ea = events(tmp_path / "debug")
    assert len(ea.Tensors("samples/text_summary")) == 2  # written once per validation, by rank 0
    assert len(ea.Images("attention/layer0")) == 2


def test_metrics_are_logged_every_log_every_n_steps_with_exact_counts(corpus_path: Path, tmp_path: Path) -> None:
    record = tmp_path / "losses.txt"
    cli_main(fit_args(corpus_path, tmp_path, "--trainer.log_every_n_steps", "5", "--throughput.peak_flops", "1e12",
        f'--trainer.callbacks+={{"class_path": "helpers.LossRecorder", "init_args": {{"path": "{record}"}}}}'))
    ea = events(tmp_path / "debug")
    logged = [4, 9, 14, 19]  # 0-based steps 5, 10, 15, 20
    assert [e.step for e in ea.Scalars("train_loss")] == logged
    assert [e.step for e in ea.Scalars("grad_norm")] == logged
    losses = read_losses(record)  # the loss of every step; the recorder numbers a step by global_step after it
    for event in ea.Scalars("train_loss"):  # the logged value is that step's loss, not a stale one
        assert event.value == pytest.approx(float.fromhex(losses[("train", event.step + 1)]), rel=1e-6)
    # Throughput: timed on logged steps only, over window_size 5 = two updates; counts include every step.
    assert [e.step for e in ea.Scalars("train/device/items_per_sec")] == [9, 14, 19]
    assert [e.value for e in ea.Scalars("train/batches")] == [5, 10, 15, 20]
    assert ea.Scalars("train/samples")[-1].value == 20 * 8  # batch_size 8
    assert ea.Scalars("train/lengths")[-1].value == 20 * 8 * 32  # block_size 32
    flops, mfu = ea.Scalars("train/device/flops_per_sec")[-1].value, ea.Scalars("train/device/mfu")[-1].value
    assert mfu == pytest.approx(flops / 1e12, rel=1e-5)
    tokens_per_sec = ea.Scalars("train/device/items_per_sec")[-1].value
    module = LitGPT.load_from_checkpoint(tmp_path / "debug" / "checkpoints" / "last.ckpt")
    flops_per_token = flops_per_batch(module.hparams.arch, module.config, 8, 32) / (8 * 32)
    assert flops / tokens_per_sec == pytest.approx(flops_per_token, rel=1e-5)  # the FLOPs of every step counted


def test_throughput_leaves_validation_time_out(corpus_path: Path, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """A fake clock: 0.1 s per training step, 0.4 s per validation batch (2 validations x 4 batches = 3.2 s). The
    time throughput reports at step 20 is the 20 steps' 2.0 s alone."""
    import helpers
    import lit_gpt.throughput

    monkeypatch.setattr(lit_gpt.throughput, "clock", lambda: helpers.FAKE_TIME["now"])
    cli_main(fit_args(corpus_path, tmp_path, "--trainer.log_every_n_steps", "5",
        '--trainer.callbacks+={"class_path": "helpers.FakeClock", "init_args": {"seconds_per_step": 0.1}}',
        '--trainer.callbacks+={"class_path": "helpers.FakeSlowValidation", "init_args": {"seconds": 0.4}}'))
    train_time = events(tmp_path / "debug").Scalars("train/time")[-1].value
    assert train_time == pytest.approx(2.0)


def test_with_gradient_accumulation_throughput_and_the_guard_act_once_per_logged_optimizer_step(
        corpus_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With accumulate_grad_batches 2 the batch after a logged step has the same global_step: only the batch that
    completes the optimizer step logs throughput (every batch still counted) and checks the loss, as without."""
    from lit_gpt.guard import NonFiniteGuard

    checked = []
    check = NonFiniteGuard.check
    monkeypatch.setattr(NonFiniteGuard, "check", lambda self, trainer: checked.append(trainer.global_step) or
                        check(self, trainer))
    cli_main(fit_args(corpus_path, tmp_path / "one", "--trainer.log_every_n_steps", "5"))
    once, checked[:] = list(checked), []
    cli_main(fit_args(corpus_path, tmp_path / "two", "--trainer.log_every_n_steps", "5",
                      "--trainer.accumulate_grad_batches", "2",
                      "--trainer.val_check_interval", "20"))  # batches: every 10 optimizer steps, as before
    assert checked == once and 5 in once  # the same optimizer steps (logged steps and saves), each once
    ea = events(tmp_path / "two" / "debug")
    assert [e.step for e in ea.Scalars("train/device/items_per_sec")] == [9, 14, 19]
    assert [(e.step, e.value) for e in ea.Scalars("train/batches")] == [(4, 10), (9, 20), (14, 30), (19, 40)]
