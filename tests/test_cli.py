"""End to end through the real entry points: train.py's cli_main and sample.py's main."""

import math
import os
import re
import sys
from pathlib import Path

import pytest
import torch
import yaml

from helpers import ROOT, assert_one_line_error, fit_args
from lit_gpt.checkpointing import checkpoint_step
from lit_gpt.cli import GPTLightningCLI, cli_main
from lit_gpt.sample_cli import main as sample_main

CONFIGS = sorted((ROOT / "configs").rglob("*.yaml"))
LECTURE = sorted((ROOT / "configs" / "lecture").glob("*.yaml"))


@pytest.mark.parametrize("config", CONFIGS, ids=[str(c.relative_to(ROOT / "configs")) for c in CONFIGS])
def test_every_config_parses(config: Path, capsys: pytest.CaptureFixture) -> None:
    """Each recipe parses against the real signatures (no data is read: --print_config stops before instantiating)."""
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["fit", "--config", str(config), "--print_config"])
    assert exit_info.value.code == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    recipe = yaml.safe_load(config.read_text())
    assert printed["trainer"]["max_steps"] == recipe["trainer"]["max_steps"]
    assert printed["model"]["arch"] == recipe["model"]["arch"]
    assert printed["data"]["block_size"] == recipe["data"]["block_size"]
    for key, value in recipe["model"].get("config", {}).items():
        assert printed["model"]["config"][key] == value


def test_fit_writes_checkpoints_with_the_vocabulary(debug_run: dict) -> None:
    assert debug_run["last"].is_file()
    assert len(list(debug_run["ckpt_dir"].glob("best-*.ckpt"))) == 1
    ckpt = torch.load(debug_run["last"], weights_only=True)  # plain types only: loads without pickled classes
    assert ckpt["global_step"] == 20
    hp = ckpt["hyper_parameters"]
    text = debug_run["corpus"].read_text(encoding="utf-8")
    assert hp["vocab"] == sorted(set(text))
    assert hp["config"]["vocab_size"] == len(hp["vocab"]) and hp["config"]["block_size"] == 32
    assert (debug_run["runs"] / "debug" / "config.yaml").is_file()
    assert list((debug_run["runs"] / "debug").glob("events.out.tfevents.*"))


def sample(capsys: pytest.CaptureFixture, *args: str) -> str:
    sample_main(list(args))
    return capsys.readouterr().out


def test_sample_is_deterministic_per_seed(debug_run: dict, capsys: pytest.CaptureFixture) -> None:
    args = ["--checkpoint", str(debug_run["last"]), "--prompt", "ROMEO:", "--max_new_tokens", "60",
            "--num_samples", "2", "--temperature", "0.8", "--top_k", "200"]
    first = sample(capsys, *args, "--seed", "1337")
    again = sample(capsys, *args, "--seed", "1337")
    other = sample(capsys, *args, "--seed", "7")
    assert first == again
    assert first != other
    samples = first.split("---------------\n")[:-1]
    assert len(samples) == 2
    for text in samples:
        assert text.startswith("ROMEO:") and len(text) == len("ROMEO:") + 60 + 1  # + the newline print adds


def test_sample_needs_only_the_checkpoint(debug_run: dict, tmp_path: Path, capsys: pytest.CaptureFixture,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    lonely = tmp_path / "model.ckpt"
    lonely.write_bytes(debug_run["last"].read_bytes())
    monkeypatch.chdir(tmp_path)  # no data, no config, no run directory around it
    assert sample(capsys, "--checkpoint", str(lonely), "--max_new_tokens", "5", "--prompt", "KING")[:4] == "KING"


def test_validate_is_deterministic(debug_run: dict, tmp_path: Path) -> None:
    args = fit_args(debug_run["corpus"], tmp_path, "--ckpt_path", str(debug_run["last"]), subcommand="validate")
    losses = [cli_main(args).trainer.callback_metrics["val_loss"].item() for _ in range(2)]
    assert losses[0] == losses[1] == pytest.approx(debug_run["fit_val_loss"], abs=0)


def test_rerun_resumes_from_last(debug_run: dict, tmp_path: Path) -> None:
    """A rerun in the same directory finds last.ckpt, does not trip over config.yaml, and continues the step count."""
    runs = tmp_path / "runs"
    (runs / "debug" / "checkpoints").mkdir(parents=True)
    (runs / "debug" / "checkpoints" / "last.ckpt").write_bytes(debug_run["last"].read_bytes())
    (runs / "debug" / "config.yaml").write_text("# left by an earlier run\n")
    cli = cli_main(fit_args(debug_run["corpus"], runs, "--trainer.max_steps", "30", "--ckpt_path", "last"))
    assert cli.trainer.global_step == 30
    assert checkpoint_step(runs / "debug" / "checkpoints" / "last.ckpt") == 30


def test_bigram_fit_lowers_the_loss(synthetic_path: Path, tmp_path: Path) -> None:
    bigram = str(ROOT / "configs" / "bigram.yaml")
    cli = cli_main(fit_args(synthetic_path, tmp_path, "--trainer.max_steps", "300", "--trainer.val_check_interval",
                            "300", config=bigram))
    vocab_size = cli.datamodule.vocab_size
    # Random N(0, 1) logits start above the uniform loss ln(V); a trained table must be well below it.
    assert cli.trainer.callback_metrics["val_loss"].item() < math.log(vocab_size) - 1.0


@pytest.mark.parametrize(
    "extra, pattern",
    [
        (["--data.path", "{tmp}/missing.txt"], r"data file not found: .*missing\.txt"),
        (["--data.path", "{tmp}/latin1.txt"], r"not UTF-8 text"),
        (["--data.path", "{tmp}/empty.txt"], r"is empty"),
        (["--data.path", "{tmp}/short.txt"], r"fewer than block_size \+ 1 = 33"),
        (["--model.config.n_embd", "33"], r"n_embd \(33\) must be divisible by n_head \(2\)"),
        (["--model.config.n_layer", "0"], r"n_layer must be a positive integer, got 0"),
        (["--data.batch_size", "0"], r"data\.batch_size must be a positive integer, got 0"),
        (["--data.block_size", "-3"], r"data\.block_size must be a positive integer, got -3"),
        (["--throughput.window_size", "0"], r"throughput\.window_size must be at least 1, got 0"),
    ],
    ids=["missing", "not-utf8", "empty", "short", "indivisible-heads", "zero-layers", "zero-batch", "negative-block",
         "throughput-window"],
)
def test_train_bad_input_is_one_clear_line(extra: list[str], pattern: str, corpus_path: Path, tmp_path: Path,
                                           capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "latin1.txt").write_bytes("caf\xe9\n".encode("latin-1") * 100)
    (tmp_path / "empty.txt").write_text("")
    (tmp_path / "short.txt").write_text("Short.\n")
    runs = tmp_path / "runs"
    args = fit_args(corpus_path, runs, *[e.format(tmp=tmp_path) for e in extra])
    with pytest.raises(SystemExit) as exit_info:
        cli_main(args)
    assert_one_line_error(capsys, exit_info, pattern)
    assert not runs.exists()  # nothing half-written


@pytest.mark.parametrize(
    "args, pattern",
    [
        (["--prompt", "Bee7\u00e9"], r"2 character\(s\) not in the vocabulary: '7', '\u00e9'"),
        (["--max_new_tokens", "0"], r"max_new_tokens must be at least 1, got 0"),
        (["--temperature", "-0.5"], r"temperature must be >= 0"),
        (["--top_k", "0"], r"top_k must be at least 1, got 0"),
        (["--top_p", "1.5"], r"top_p must be in \(0, 1\]"),
        (["--num_samples", "0"], r"num_samples must be at least 1"),
    ],
    ids=["unknown-chars", "no-tokens", "negative-temperature", "top-k", "top-p", "num-samples"],
)
def test_sample_bad_input_is_one_clear_line(args: list[str], pattern: str, debug_run: dict,
                                            capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_info:
        sample_main(["--checkpoint", str(debug_run["last"]), *args])
    assert_one_line_error(capsys, exit_info, pattern)


@pytest.mark.parametrize("kind", ["missing", "empty", "garbage", "foreign"])
def test_sample_rejects_bad_checkpoints(kind: str, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = tmp_path / "model.ckpt"
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "garbage":
        path.write_text("not a checkpoint at all\n" * 10)
    elif kind == "foreign":
        torch.save({"model": {"w": torch.zeros(2)}, "iter_num": 5}, path)
    pattern = {"missing": "checkpoint not found", "empty": "is empty", "garbage": "not a readable PyTorch checkpoint",
               "foreign": "not a lit_gpt checkpoint"}[kind]
    with pytest.raises(SystemExit) as exit_info:
        sample_main(["--checkpoint", str(path)])
    assert_one_line_error(capsys, exit_info, pattern)


def test_sample_help_documents_every_option(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit):
        sample_main(["--help"])
    out = capsys.readouterr().out
    for option in ["--checkpoint", "--prompt", "--max_new_tokens", "--num_samples", "--temperature", "--top_k",
                   "--top_p", "--seed", "--device"]:
        assert option in out
    assert "greedy" in out and "same seed gives the same text" in out


def test_train_help_reads_the_docstrings(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit):
        cli_main(["fit", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "UTF-8 text to train on: a file, a folder" in out  # data.path
    assert "Peak learning rate" in out  # model.learning_rate
    assert "must divide" in out  # model.config.n_head


def test_new_run_refuses_to_overwrite_an_earlier_run(debug_run: dict, capsys: pytest.CaptureFixture) -> None:
    before = debug_run["last"].read_bytes()
    with pytest.raises(SystemExit) as exit_info:
        cli_main(fit_args(debug_run["corpus"], debug_run["runs"]))
    assert_one_line_error(capsys, exit_info, r"last\.ckpt exists from an earlier run: resume it with --ckpt_path last")
    assert debug_run["last"].read_bytes() == before


@pytest.mark.slow
def test_compiled_training_keeps_clean_checkpoint_keys(corpus_path: Path, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture) -> None:
    """--model.compile true compiles the inner model in place: training works and the checkpoint samples as usual."""
    cli = cli_main(fit_args(corpus_path, tmp_path, "--model.compile", "true", "--trainer.max_steps", "3",
                            "--trainer.val_check_interval", "3", "--trainer.limit_val_batches", "1",
                            "--monitor.log_samples", "false", "--monitor.log_attention", "false"))
    assert cli.model.model._compiled_call_impl is not None  # nn.Module.compile() was applied
    ckpt = torch.load(tmp_path / "debug" / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["global_step"] == 3
    assert all(k.startswith("model.") and "_orig_mod" not in k for k in ckpt["state_dict"])
    assert sample(capsys, "--checkpoint", str(tmp_path / "debug" / "checkpoints" / "last.ckpt"), "--prompt", "KING",
                  "--max_new_tokens", "5").startswith("KING")


def bad_checkpoint(kind: str, debug_run: dict, tmp_path: Path) -> Path:
    """A checkpoint file that cannot be used: missing, empty, truncated, not PyTorch, not lit_gpt, weights only."""
    path = tmp_path / f"{kind}.ckpt"
    good = debug_run["last"].read_bytes()
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "truncated":
        path.write_bytes(good[: len(good) // 2])
    elif kind == "garbage":
        path.write_text("not a checkpoint at all\n" * 10)
    elif kind == "foreign":
        torch.save({"model": {"w": torch.zeros(2)}, "iter_num": 5}, path)
    elif kind == "weights-only":  # as Trainer.save_checkpoint(path, weights_only=True) writes it
        ckpt = torch.load(debug_run["last"], weights_only=True)
        torch.save({k: v for k, v in ckpt.items() if k not in ("optimizer_states", "lr_schedulers", "callbacks")},
                   path)
    return path


@pytest.mark.parametrize("subcommand", ["fit", "validate"])
@pytest.mark.parametrize("kind, pattern", [
    ("missing", r"checkpoint not found: .*missing\.ckpt"),
    ("empty", r"checkpoint .*empty\.ckpt is empty \(0 bytes\)"),
    ("truncated", r"truncated\.ckpt is not a readable PyTorch checkpoint: truncated"),
    ("garbage", r"garbage\.ckpt is not a readable PyTorch checkpoint"),
    ("foreign", r"foreign\.ckpt is not a lit_gpt checkpoint"),
])
def test_train_rejects_bad_checkpoints_in_one_line(subcommand: str, kind: str, pattern: str, debug_run: dict,
                                                   tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = bad_checkpoint(kind, debug_run, tmp_path)
    runs = tmp_path / "runs"
    args = fit_args(debug_run["corpus"], runs, "--ckpt_path", str(path))
    args[0] = subcommand
    with pytest.raises(SystemExit) as exit_info:
        cli_main(args)
    assert_one_line_error(capsys, exit_info, pattern)
    assert not runs.exists()  # nothing written


def test_resume_needs_the_training_state(debug_run: dict, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """A weights-only checkpoint validates, but fit cannot resume from it: one line says so."""
    path = bad_checkpoint("weights-only", debug_run, tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        cli_main(fit_args(debug_run["corpus"], tmp_path / "runs", "--ckpt_path", str(path)))
    assert_one_line_error(capsys, exit_info, r"holds no optimizer or loop state, so training cannot resume from it")
    args = fit_args(debug_run["corpus"], tmp_path / "runs", "--ckpt_path", str(path))
    args[0] = "validate"
    assert cli_main(args).trainer.callback_metrics["val_loss"].item() == pytest.approx(debug_run["fit_val_loss"], abs=0)


@pytest.mark.parametrize("subcommand", ["fit", "validate"])
def test_a_checkpoint_of_another_shape_names_the_settings(subcommand: str, debug_run: dict, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture) -> None:
    """Resuming with another recipe: the settings that differ are named (debug: 2 layers, 32 wide, block 32)."""
    runs = tmp_path / "runs"
    args = fit_args(debug_run["corpus"], runs, "--ckpt_path", str(debug_run["last"]), "--model.config.n_embd", "64",
                    "--model.config.n_layer", "3", "--data.block_size", "16")
    args[0] = subcommand
    with pytest.raises(SystemExit) as exit_info:
        cli_main(args)
    assert_one_line_error(capsys, exit_info, r"does not fit this config: n_layer 2 in the checkpoint, 3 in the config; "
                                             r"n_embd 32 in the checkpoint, 64 in the config; block_size 32 in the "
                                             r"checkpoint, 16 in the config")
    assert not runs.exists()


def other_text(debug_run: dict, tmp_path: Path, replace: dict[str, str]) -> Path:
    text = debug_run["corpus"].read_text(encoding="utf-8")
    for old, new in replace.items():
        text = text.replace(old, new)
    path = tmp_path / "other.txt"
    path.write_text(text, encoding="utf-8")
    return path


def test_resuming_on_another_text_is_refused(debug_run: dict, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """fit --ckpt_path on a text with other ids (here the same vocabulary size, one character differs): refused with
    one line, never trained on mismatched ids."""
    vocab = sorted(set(debug_run["corpus"].read_text(encoding="utf-8")))
    other = other_text(debug_run, tmp_path, {vocab[-1]: "\u00e9"})
    runs = tmp_path / "runs"
    with pytest.raises(SystemExit) as exit_info:
        cli_main(fit_args(other, runs, "--ckpt_path", str(debug_run["last"])))
    assert_one_line_error(capsys, exit_info, rf"was trained on another text: its vocabulary has {len(vocab)} "
                                             rf"characters, the data \(.*other\.txt\) has {len(vocab)}, 1 of them not "
                                             r"in the checkpoint's \('\u00e9'\)")
    assert not runs.exists()


def test_the_cli_lists_only_subcommands_that_work(capsys: pytest.CaptureFixture) -> None:
    """LitGPT has no test_step or predict_step: `test` and `predict` are not offered (they would end in Lightning's
    MisconfigurationException)."""
    with pytest.raises(SystemExit):
        cli_main(["--help"])
    listed = re.findall(r"^    (\w+) ", capsys.readouterr().out.split("Available subcommands:")[1], re.M)
    assert listed == ["fit", "validate"]


def test_scoring_another_text_names_the_characters_the_checkpoint_lacks(debug_run: dict, tmp_path: Path,
                                                                       capsys: pytest.CaptureFixture) -> None:
    other = other_text(debug_run, tmp_path, {"a": "\u00e9", "b": "\U0001F600"})
    args = fit_args(other, tmp_path / "runs", "--ckpt_path", str(debug_run["last"]))
    args[0] = "validate"
    with pytest.raises(SystemExit) as exit_info:
        cli_main(args)
    assert_one_line_error(capsys, exit_info, r"2 character\(s\) of the text are not in the checkpoint's vocabulary "
                                             r"of \d+: '\u00e9', '\U0001F600'")
    assert not (tmp_path / "runs").exists()


def test_validate_scores_another_text_with_the_checkpoints_vocabulary(debug_run: dict, tmp_path: Path) -> None:
    """A text without some of the corpus's characters has a smaller vocabulary of its own, so its own ids would all
    shift; validate --ckpt_path scores it with the checkpoint's ids: equal to scoring it by hand with them."""
    from lit_gpt.data import ValWindows
    from lit_gpt.generate import load_checkpoint

    other = other_text(debug_run, tmp_path, {"z": "", "Z": "", "a": ""})
    args = fit_args(other, tmp_path / "runs", "--ckpt_path", str(debug_run["last"]), "--trainer.limit_val_batches", "1.0")
    args[0] = "validate"
    val_loss = cli_main(args).trainer.callback_metrics["val_loss"].item()

    model, tokenizer = load_checkpoint(debug_run["last"])
    ids = torch.tensor(tokenizer.encode(other.read_text(encoding="utf-8")))
    windows = ValWindows(ids[int(0.9 * len(ids)):], 32)
    x, y = (torch.stack(t) for t in zip(*(windows[i] for i in range(len(windows)))))  # (N, 32) each
    with torch.no_grad():
        losses = torch.nn.functional.cross_entropy(model(x)[0].flatten(0, 1), y.flatten(), ignore_index=-1,
                                                   reduction="sum")
    assert val_loss == pytest.approx(losses.item() / (y != -1).sum().item(), rel=1e-5)


def test_fine_tuning_starts_from_a_checkpoints_weights_and_vocabulary(debug_run: dict, tmp_path: Path) -> None:
    """--model.init_from: a new run (step 0, its own directory, a fresh optimizer) from the checkpoint's weights, on a
    text with fewer characters, tokenized with the checkpoint's vocabulary."""
    other = other_text(debug_run, tmp_path, {"z": "", "Z": ""})
    runs = debug_run["runs"]  # the same runs folder as the checkpoint's own run, in a directory of its own
    cli = cli_main(fit_args(other, runs, "--model.init_from", str(debug_run["last"]), "--trainer.logger.init_args.name",
                            "finetune", "--trainer.max_steps", "2", "--model.learning_rate", "1e-12",
                            "--model.min_lr", "1e-12", "--trainer.val_check_interval", "2"))
    init, tuned = torch.load(debug_run["last"], weights_only=True), torch.load(
        runs / "finetune" / "checkpoints" / "last.ckpt", weights_only=True)
    assert tuned["global_step"] == 2 and cli.trainer.global_step == 2
    assert tuned["hyper_parameters"]["vocab"] == init["hyper_parameters"]["vocab"]
    assert all(s["step"] == 2 for s in tuned["optimizer_states"][0]["state"].values())  # fresh: 2, not 22
    for name, weight in init["state_dict"].items():  # 2 steps at lr 1e-12: still the checkpoint's weights
        torch.testing.assert_close(tuned["state_dict"][name], weight, atol=1e-9, rtol=0)


def test_fine_tuning_from_a_checkpoint_of_another_shape(debug_run: dict, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli_main(fit_args(debug_run["corpus"], tmp_path / "runs", "--model.init_from", str(debug_run["last"]),
                          "--model.config.n_embd", "64"))
    assert_one_line_error(capsys, exit_info, r"--model.init_from .* does not fit this config: n_embd 32 in the "
                                             r"checkpoint, 64 in the config")
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("device, pattern", [
    ("cuda", r"device 'cuda': this machine has no CUDA device; use --device cpu"),
    ("cuda:3", r"device 'cuda:3'"),
    ("tpu", r"unknown device 'tpu'"),
])
def test_sample_on_a_device_that_does_not_exist(device: str, pattern: str, debug_run: dict,
                                                capsys: pytest.CaptureFixture) -> None:
    if torch.cuda.is_available() and device == "cuda":
        pytest.skip("this machine has a CUDA device")
    with pytest.raises(SystemExit) as exit_info:
        sample_main(["--checkpoint", str(debug_run["last"]), "--device", device])
    assert_one_line_error(capsys, exit_info, pattern)


@pytest.mark.parametrize("config", LECTURE, ids=[c.name for c in LECTURE])
def test_every_lecture_recipe_trains_a_few_steps(config: Path, corpus_path: Path, tmp_path: Path) -> None:
    """Each lecture recipe, as written (model, switches, optimizer), for 3 steps on a CPU with small batches."""
    cli = cli_main(fit_args(corpus_path, tmp_path, "--trainer.max_steps", "3", "--trainer.val_check_interval", "3",
                            "--trainer.limit_val_batches", "1", "--data.batch_size", "2", "--data.val_batch_size", "2",
                            "--trainer.accelerator", "cpu", "--trainer.precision", "32-true", config=str(config)))
    recipe = yaml.safe_load(config.read_text())
    assert cli.trainer.global_step == 3 and math.isfinite(cli.trainer.callback_metrics["val_loss"].item())
    for key in ("mlp", "residual", "layernorm", "n_layer", "n_head", "n_embd"):
        if key in recipe["model"].get("config", {}):
            assert getattr(cli.model.config, key) == recipe["model"]["config"][key]


def test_a_run_reads_a_checkpoint_once(debug_run: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Fine-tuning asks --model.init_from for its vocabulary (the data), its model settings (the command line) and
    its weights (the module): one read of the file, not three."""
    from lit_gpt import files

    reads, load = [], torch.load
    monkeypatch.setattr(torch, "load", lambda f, *args, **kwargs: reads.append(str(f)) or load(f, *args, **kwargs))
    files.forget()
    cli_main(fit_args(debug_run["corpus"], tmp_path, "--model.init_from", str(debug_run["last"]),
                      "--trainer.max_steps", "2", "--trainer.val_check_interval", "2"))
    assert reads.count(os.path.realpath(debug_run["last"])) == 1


def test_args_from_python_are_not_warned_about_beside_sys_argv(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                              capsys: pytest.CaptureFixture) -> None:
    """A bench's own options or a notebook kernel's (``-f kernel.json``) in sys.argv while the run's arguments come
    from Python: no warning about sys.argv (LightningCLI's), on stderr or as a warning."""
    import warnings

    monkeypatch.setattr(sys, "argv", ["ipykernel_launcher.py", "-f", "/tmp/kernel-1.json"])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        GPTLightningCLI(fit_args(None, tmp_path)[1:], run=False)  # run=False: no subcommand
    assert not [w for w in caught if "sys.argv" in str(w.message)]
    assert "sys.argv" not in capsys.readouterr().err
