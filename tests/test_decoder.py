"""Many texts at once (lit_gpt/decoder.py, lit_gpt/sampling.py): a KV cache whose rows sit at their own positions,
rows with their own settings joining and leaving, and a row's text the same alone and amid others."""

import pytest
import torch

import lit_gpt.sampling
from lit_gpt.config import GPTConfig
from lit_gpt.decoder import Decoder, Row
from lit_gpt.model import GPT, Bigram
from lit_gpt.sampling import RowSettings, choose, draw_noise

BLOCK, VOCAB = 16, 20
SETTINGS = [RowSettings(0.8, 200, None), RowSettings(0.0, None, None), RowSettings(1.0, 5, 0.9),
            RowSettings(1.3, None, 0.8), RowSettings(0.5, 3, None)]


@pytest.fixture(scope="module", params=["learned", "rope"])
def model(request: pytest.FixtureRequest) -> GPT:
    torch.manual_seed(0)
    config = GPTConfig(vocab_size=VOCAB, block_size=BLOCK, n_layer=2, n_head=2, n_embd=32, position=request.param)
    return GPT(config).eval()


def row(i: int, length: int = 40) -> Row:
    """Row i: its own prompt length, settings, seed, length and mode (every third windowed, every fifth cache-free)."""
    prompt = [(3 * i + j) % VOCAB for j in range(1 + i % 7)]
    return Row(prompt, length + 5 * (i % 4), SETTINGS[i % len(SETTINGS)], torch.Generator().manual_seed(100 + i),
               window_shift=4 if i % 3 == 0 else None, use_cache=i % 5 != 4)


def alone(model: torch.nn.Module, r: Row) -> list[int]:
    decoder = Decoder(model, slots=1)
    decoder.add(r)
    while decoder.rows:
        decoder.step()
    return r.ids


def test_a_cache_row_continues_its_own_text_at_its_own_position(model: GPT) -> None:
    """Rows prefilled to different lengths take one step together; each row's logits are its text's alone."""
    texts = [torch.randint(0, VOCAB, (n,)) for n in (3, 9, 1, 15)]
    cache = model.new_kv_cache(len(texts))
    for slot, text in enumerate(texts):
        solo = model.new_kv_cache(1)
        model(text[:-1].unsqueeze(0), kv_cache=solo)
        cache.copy_row(solo, 0, slot)
    with torch.no_grad():
        batched, _ = model(torch.stack([t[-1:] for t in texts]), kv_cache=cache)  # (4, 1, V)
        for b, text in enumerate(texts):
            torch.testing.assert_close(batched[b, -1], model(text.unsqueeze(0))[0][0, -1], atol=1e-5, rtol=1e-5)
    assert cache.lengths == [3, 9, 1, 15]


def test_a_rows_text_is_the_same_alone_and_amid_others_joining_and_leaving(model: GPT) -> None:
    """Rows of different prompts, settings, lengths and modes join at different steps and leave when done (or are
    removed); every finished row's text equals its text alone, character for character."""
    expected = {i: alone(model, row(i)) for i in range(12)}
    decoder = Decoder(model, slots=6)  # fewer cache rows than rows: the rest run alone
    rows, step = {}, 0
    while len(rows) < 12 or decoder.rows:
        if len(rows) < 12 and step % 4 == 0:
            rows[len(rows)] = row(len(rows))
            decoder.add(rows[len(rows) - 1])
        if step == 30:
            decoder.remove(rows[1])  # a client that went away: its row leaves mid-text
        decoder.step()
        step += 1
    for i, r in rows.items():
        if i == 1:
            assert r.ids == expected[1][:len(r.ids)] and len(r.ids) < len(expected[1])
        else:
            assert r.ids == expected[i], i


def test_a_close_call_is_drawn_from_the_row_computed_alone(model: GPT, monkeypatch: pytest.MonkeyPatch) -> None:
    """With every draw taken as a close call, every character comes from the row's window computed alone on one
    thread, and the text is still the row's text alone."""
    expected = {i: alone(model, row(i)) for i in range(5)}
    monkeypatch.setattr(lit_gpt.sampling, "TIE", 10.0)
    decoder = Decoder(model, slots=5)
    rows = [row(i) for i in range(5)]
    for r in rows:
        decoder.add(r)
    while decoder.rows:
        decoder.step()
    assert decoder.recomputed == sum(r.generated for r in rows)
    assert [r.ids for r in rows] == [expected[i] for i in range(5)]


def test_a_model_without_a_cache_generates_rows_alone() -> None:
    torch.manual_seed(0)
    bigram = Bigram(GPTConfig(vocab_size=VOCAB, block_size=8)).eval()
    decoder = Decoder(bigram, slots=4)
    rows = [row(i, 10) for i in range(3)]
    for r in rows:
        decoder.add(r)
    while decoder.rows:
        decoder.step()
    assert decoder.cache is None and [r.generated for r in rows] == [r.max_new_tokens for r in rows]


def test_a_draw_is_torch_multinomials_and_each_row_draws_as_if_alone() -> None:
    """Row by row, choose draws what torch.multinomial draws from the same generator; a batch of rows with mixed
    settings gives each row the id it gets alone."""
    torch.manual_seed(0)
    logits = torch.randn(len(SETTINGS) * 4, VOCAB) * 3
    settings = [SETTINGS[i % len(SETTINGS)] for i in range(len(logits))]
    plain = RowSettings(1.0, None, None)
    for seed in range(20):
        expected = torch.multinomial(logits[:1].softmax(-1), 1, generator=torch.Generator().manual_seed(seed))
        noise = draw_noise([plain], [torch.Generator().manual_seed(seed)], VOCAB, torch.device("cpu"))
        assert choose(logits[:1], [plain], noise)[0].item() == expected.item()
    generators = [torch.Generator().manual_seed(i) for i in range(len(logits))]
    together, _ = choose(logits, settings, draw_noise(settings, generators, VOCAB, torch.device("cpu")))
    for i in range(len(logits)):
        noise = draw_noise([settings[i]], [torch.Generator().manual_seed(i)], VOCAB, torch.device("cpu"))
        assert choose(logits[i:i + 1], [settings[i]], noise)[0].item() == together[i].item()


def test_choose_says_which_draws_are_close_calls() -> None:
    greedy, sampled = RowSettings(0.0, None, None), RowSettings(1.0, None, None)
    ones = torch.ones(1, 4)
    assert choose(torch.tensor([[2.0, 2.0, 0.0, 0.0]]), [greedy], ones)[1].item()  # a tie
    assert not choose(torch.tensor([[2.0, 1.0, 0.0, 0.0]]), [greedy], ones)[1].item()
    # Sampled: the race p / q. Equal probabilities and noise are a tie; a clear winner is not.
    assert choose(torch.tensor([[1.0, 1.0, -5.0, -5.0]]), [sampled], ones)[1].item()
    assert not choose(torch.tensor([[1.0, 1.0, -5.0, -5.0]]), [sampled], torch.tensor([[1.0, 2.0, 1.0, 1.0]]))[1].item()
    # A candidate on the top-k boundary counts only where it could win.
    top2 = RowSettings(1.0, 2, None)
    logits = torch.tensor([[3.0, 1.0, 1.0, -5.0]])  # the 2nd and 3rd tie for the last place
    assert not choose(logits, [top2], ones)[1].item()  # the first wins by far
    assert choose(logits, [top2], torch.tensor([[50.0, 1.0, 1.0, 1.0]]))[1].item()  # the boundary ones race
