"""Sampling: the KV cache, the exact and windowed modes, top-k/top-p, the Python API and sample.py's streaming."""

import io
from pathlib import Path

import pytest
import torch

from lit_gpt.config import GPTConfig
from lit_gpt.errors import LitGPTError
from lit_gpt.generate import TextGenerator, generate, sample_next
from lit_gpt.model import GPT, Bigram
from lit_gpt.sample_cli import build_parser, main as sample_main, run

BLOCK = 16


@pytest.fixture(scope="module")
def model() -> GPT:
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=20, block_size=BLOCK, n_layer=2, n_head=2, n_embd=32)).eval()


def run_generate(model, prompt_len: int = 4, n: int = 40, seed=None, **kwargs) -> list[int]:
    idx = torch.arange(prompt_len).unsqueeze(0) % 20  # (1, prompt_len)
    generator = None if seed is None else torch.Generator().manual_seed(seed)
    return torch.cat(list(generate(model, idx, n, generator=generator, **kwargs)), dim=1)[0].tolist()


def test_kv_cache_logits_match_the_full_forward(model: GPT) -> None:
    idx = torch.randint(0, 20, (3, BLOCK))
    full, _ = model(idx)  # (3, BLOCK, V)
    cache = model.new_kv_cache(3)
    prefill, _ = model(idx[:, :5], kv_cache=cache)
    steps = [model(idx[:, t : t + 1], kv_cache=cache)[0] for t in range(5, BLOCK)]
    torch.testing.assert_close(torch.cat([prefill, *steps], dim=1), full, atol=1e-5, rtol=1e-5)
    chunk_cache = model.new_kv_cache(3)
    model(idx[:, :6], kv_cache=chunk_cache)
    chunk, _ = model(idx[:, 6:11], kv_cache=chunk_cache)  # several positions after a filled cache: masked
    torch.testing.assert_close(chunk, full[:, 6:11], atol=1e-5, rtol=1e-5)


def test_cache_refuses_positions_past_block_size(model: GPT) -> None:
    cache = model.new_kv_cache(1)
    model(torch.zeros(1, BLOCK, dtype=torch.long), kv_cache=cache)
    with pytest.raises(ValueError, match=f"length {BLOCK + 1}, block size is only {BLOCK}"):
        model(torch.zeros(1, 1, dtype=torch.long), kv_cache=cache)


def test_greedy_cached_equals_cache_free_past_block_size(model: GPT) -> None:
    n = 3 * BLOCK  # well past the window
    assert run_generate(model, n=n, temperature=0) == run_generate(model, n=n, temperature=0, use_cache=False)


def test_sampling_cached_equals_cache_free_for_the_same_seed(model: GPT) -> None:
    kwargs = dict(n=3 * BLOCK, seed=123, temperature=1.0, top_k=10, top_p=0.9)
    cached = run_generate(model, **kwargs)
    assert cached == run_generate(model, use_cache=False, **kwargs)
    assert cached != run_generate(model, **{**kwargs, "seed": 124})


def test_windowed_mode_equals_exact_until_the_first_shift(model: GPT) -> None:
    prompt_len, shift = 4, 6
    exact = run_generate(model, prompt_len, n=40, temperature=0)
    windowed = run_generate(model, prompt_len, n=40, temperature=0, window_shift=shift)
    first_shift = BLOCK - prompt_len + 1  # new tokens predicted before the window first overflows
    assert windowed[:first_shift] == exact[:first_shift]


def test_windowed_mode_never_exceeds_block_size_and_keeps_enough_context(model: GPT) -> None:
    seen: list[tuple[int, int, int]] = []  # (which cache, positions the model holds after the call, tokens fed)

    def record(module, args, kwargs) -> None:
        idx, cache = args[0], kwargs.get("kv_cache")
        seen.append((id(cache), (cache.lengths[0] if cache else 0) + idx.size(1), idx.size(1)))

    shift = 6
    handle = model.register_forward_pre_hook(record, with_kwargs=True)
    try:
        run_generate(model, prompt_len=4, n=60, temperature=0, window_shift=shift)
    finally:
        handle.remove()
    assert max(pos for _, pos, _ in seen) <= BLOCK
    batch_cache = seen[-1][0]  # every character is computed in the batch's cache; a prefill fills a cache of its own
    steps = [(pos, fed) for cache, pos, fed in seen if cache == batch_cache]
    prefills = [fed for cache, _, fed in seen if cache != batch_cache]
    assert len(steps) == 60 and all(fed == 1 for _, fed in steps)  # one model call per new character
    after_first_fill = [pos for pos, _ in steps[BLOCK - 4 + 1:]]
    assert min(after_first_fill) >= BLOCK - shift  # every character conditioned on at least block - K
    # One prefill per shift, of the kept window less its newest character (which the next step feeds).
    assert prefills[0] == 4 - 1 and prefills[1:] and all(fed == BLOCK - shift - 1 for fed in prefills[1:])


@pytest.mark.parametrize("shift", [0, BLOCK])
def test_window_shift_out_of_range(model: GPT, shift: int) -> None:
    with pytest.raises(LitGPTError, match=f"window_shift must be between 1 and block_size - 1 = {BLOCK - 1}"):
        run_generate(model, window_shift=shift)


def test_long_prompt_is_cropped_to_the_block(model: GPT) -> None:
    long = run_generate(model, prompt_len=2 * BLOCK, n=5, temperature=0)
    assert long == run_generate(model, prompt_len=2 * BLOCK, n=5, temperature=0, use_cache=False)


def test_bigram_samples_without_a_cache() -> None:
    torch.manual_seed(0)
    bigram = Bigram(GPTConfig(vocab_size=20, block_size=8)).eval()
    out = run_generate(bigram, n=30, seed=1, temperature=1.0)
    assert len(out) == 30 and all(0 <= i < 20 for i in out)


def test_top_k_and_top_p_filter_the_tail() -> None:
    logits = torch.tensor([[0.5, 0.3, 0.15, 0.05]]).log().repeat(2000, 1)  # probabilities 0.5, 0.3, 0.15, 0.05
    g = torch.Generator().manual_seed(0)
    assert set(sample_next(logits, 1.0, None, 0.8, g).unique().tolist()) == {0, 1}  # 0.5 + 0.3 reaches 0.8
    assert set(sample_next(logits, 1.0, None, 0.5, g).unique().tolist()) == {0}
    assert set(sample_next(logits, 1.0, 3, None, g).unique().tolist()) == {0, 1, 2}
    assert set(sample_next(logits, 1.0, 1, None, g).unique().tolist()) == {0}
    assert set(sample_next(logits, 1.0, None, 1.0, g).unique().tolist()) == {0, 1, 2, 3}
    assert set(sample_next(logits, 0.0, None, None, g).unique().tolist()) == {0}  # greedy


@pytest.fixture(scope="module")
def random_checkpoint(model: GPT, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A checkpoint in train.py's format, from the random model above (no training needed for these tests)."""
    chars = list("\nABCDEFGHIJKLMNO :!?")
    path = tmp_path_factory.mktemp("ckpt") / "model.ckpt"
    torch.save({"hyper_parameters": {"config": vars(model.config), "vocab": chars, "arch": "gpt"},
                "state_dict": {f"model.{k}": v for k, v in model.state_dict().items()}}, path)
    return path


def test_python_api(random_checkpoint: Path) -> None:
    gen = TextGenerator.from_checkpoint(random_checkpoint, device="cpu")
    texts = gen.generate("ABC", max_new_tokens=30, num_samples=3, seed=5)
    assert len(texts) == 3 and all(t.startswith("ABC") and len(t) == 33 for t in texts)
    assert texts == gen.generate("ABC", max_new_tokens=30, num_samples=3, seed=5)
    chars = list(gen.stream("ABC", max_new_tokens=30, seed=5))
    assert len(chars) == 30 and all(len(c) == 1 for c in chars)
    assert "ABC" + "".join(chars) == gen.generate("ABC", max_new_tokens=30, seed=5)[0]  # stream == generate
    assert gen.generate("", max_new_tokens=3, seed=5)[0].startswith("\n")  # empty prompt starts from a newline
    with pytest.raises(ValueError, match=r"not in the vocabulary: 'x', 'y'"):
        gen.generate("xAy")


class CountingWriter(io.StringIO):
    def __init__(self) -> None:
        super().__init__()
        self.writes: list[str] = []

    def write(self, s: str) -> int:
        self.writes.append(s)
        return super().write(s)


def test_sample_streams_one_character_at_a_time(random_checkpoint: Path) -> None:
    out = CountingWriter()
    args = build_parser().parse_args(["--checkpoint", str(random_checkpoint), "--prompt", "AB", "--max_new_tokens",
                                      "25",
                                      "--num_samples", "2", "--device", "cpu"])
    run(args, out)
    assert out.writes[0] == "AB"  # the prompt is shown before any generation
    assert all(len(w) == 1 for w in out.writes[1:26])  # then each character as soon as it is sampled
    samples = out.getvalue().split("---------------\n")[:-1]
    assert len(samples) == 2 and all(s.startswith("AB") and len(s) == 2 + 25 + 1 for s in samples)


def test_sample_modes_agree_greedily(random_checkpoint: Path, capsys: pytest.CaptureFixture) -> None:
    base = ["--checkpoint", str(random_checkpoint), "--prompt", "A", "--max_new_tokens", "40", "--temperature", "0"]
    outputs = []
    for extra in ([], ["--no_cache"]):
        sample_main(base + extra)
        outputs.append(capsys.readouterr().out)
    assert outputs[0] == outputs[1]


def test_prompt_file(random_checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    prompt = tmp_path / "prompt.txt"
    prompt.write_text("HELLO\nAB", encoding="utf-8")
    sample_main(["--checkpoint", str(random_checkpoint), "--prompt_file", str(prompt), "--max_new_tokens", "5"])
    assert capsys.readouterr().out.startswith("HELLO\nAB")
    with pytest.raises(SystemExit) as exit_info:
        sample_main(["--checkpoint", str(random_checkpoint), "--prompt_file", str(tmp_path / "none.txt")])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip() == f"error: prompt file not found: {tmp_path / 'none.txt'} " \
                                              f"(pass --prompt_file a UTF-8 text file)"


@pytest.mark.parametrize("args, message", [
    (["--window_shift", "16"], "window_shift must be between 1 and block_size - 1 = 15, got 16"),
    (["--top_p", "0"], "top_p must be in (0, 1], got 0.0"),
    (["--device", "tpu9"], "unknown device 'tpu9'"),
])
def test_sample_more_bad_input(random_checkpoint: Path, capsys: pytest.CaptureFixture, args: list[str],
                               message: str) -> None:
    with pytest.raises(SystemExit) as exit_info:
        sample_main(["--checkpoint", str(random_checkpoint), *args])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and "Traceback" not in err and err.count("\n") == 1


def test_settings_are_checked_before_the_first_character(random_checkpoint: Path,
                                                          capsys: pytest.CaptureFixture) -> None:
    """A setting only the model can check (window_shift against its block size) fails before sample.py writes the
    prompt; the Python API fails when asked, not at the first character."""
    with pytest.raises(SystemExit):
        sample_main(["--checkpoint", str(random_checkpoint), "--prompt", "AB", "--window_shift", "16"])
    assert capsys.readouterr().out == ""
    gen = TextGenerator.from_checkpoint(random_checkpoint, device="cpu")
    with pytest.raises(LitGPTError, match="top_k must be at least 1"):
        gen.stream("AB", 5, top_k=0)
