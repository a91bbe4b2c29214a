from pathlib import Path

import pytest
import torch

from lit_gpt.config import GPTConfig
from lit_gpt.errors import LitGPTError
from lit_gpt.model import GPT, MLP, Bigram, Block, PlainBlock, build_model


def tiny_config(**overrides) -> GPTConfig:
    return GPTConfig(**{**dict(vocab_size=11, block_size=16, n_layer=2, n_head=2, n_embd=16, dropout=0.0), **overrides})


@pytest.mark.parametrize("arch", ["gpt", "bigram"])
def test_forward_shapes_and_loss(arch: str) -> None:
    torch.manual_seed(0)
    model = build_model(arch, tiny_config())
    idx = torch.randint(0, 11, (3, 7))
    logits, loss = model(idx)
    assert logits.shape == (3, 7, 11)
    assert loss is None
    logits, loss = model(idx, torch.randint(0, 11, (3, 7)))
    assert loss.shape == () and torch.isfinite(loss)


def test_initial_loss_is_near_uniform() -> None:
    torch.manual_seed(0)
    model = GPT(tiny_config(vocab_size=65))
    _, loss = model(torch.randint(0, 65, (4, 16)), torch.randint(0, 65, (4, 16)))
    assert abs(loss.item() - torch.log(torch.tensor(65.0)).item()) < 0.2


def test_masked_targets_are_ignored() -> None:
    torch.manual_seed(0)
    model = GPT(tiny_config())
    idx, targets = torch.randint(0, 11, (2, 8)), torch.randint(0, 11, (2, 8))
    logits, _ = model(idx)
    masked = targets.clone()
    masked[:, :5] = -1
    _, loss = model(idx, masked)
    expected = torch.nn.functional.cross_entropy(logits[:, 5:].reshape(-1, 11), targets[:, 5:].reshape(-1))
    torch.testing.assert_close(loss, expected)


def test_causal_masking() -> None:
    """Changing a future token does not change the logits of earlier positions."""
    torch.manual_seed(0)
    model = GPT(tiny_config()).eval()
    idx = torch.randint(0, 11, (1, 12))
    changed = idx.clone()
    changed[0, 8] = (idx[0, 8] + 1) % 11
    a, _ = model(idx)
    b, _ = model(changed)
    torch.testing.assert_close(a[:, :8], b[:, :8])
    assert not torch.allclose(a[:, 8:], b[:, 8:])


def test_weight_tying() -> None:
    model = GPT(tiny_config())
    assert model.lm_head.weight is model.transformer.wte.weight
    assert model.lm_head.weight.data_ptr() == model.transformer.wte.weight.data_ptr()


def test_forward_rejects_sequence_longer_than_block_size() -> None:
    model = GPT(tiny_config(block_size=8))
    with pytest.raises(ValueError, match="Cannot forward sequence of length 9, block size is only 8"):
        model(torch.zeros(1, 9, dtype=torch.long))


def test_dropout_active_only_in_training() -> None:
    torch.manual_seed(0)
    model = GPT(tiny_config(dropout=0.5))
    idx = torch.randint(0, 11, (2, 8))
    model.train()
    assert not torch.allclose(model(idx)[0], model(idx)[0])
    model.eval()
    torch.testing.assert_close(model(idx)[0], model(idx)[0])


def test_config_rejects_indivisible_heads() -> None:
    with pytest.raises(ValueError, match=r"n_embd \(10\) must be divisible by n_head \(3\)"):
        GPTConfig(n_embd=10, n_head=3)


@pytest.mark.parametrize("field", ["vocab_size", "block_size", "n_layer", "n_head", "n_embd"])
@pytest.mark.parametrize("value", [0, -4])
def test_config_rejects_non_positive_sizes(field: str, value: int) -> None:
    with pytest.raises(LitGPTError, match=f"{field} must be a positive integer, got {value}"):
        GPTConfig(**{field: value})


def test_config_rejects_bad_dropout() -> None:
    with pytest.raises(LitGPTError, match="dropout"):
        GPTConfig(dropout=1.0)


def test_bigram_reads_only_the_current_character() -> None:
    torch.manual_seed(0)
    model = Bigram(tiny_config())
    logits, _ = model(torch.tensor([[1, 2, 3], [7, 7, 3]]))
    torch.testing.assert_close(logits[0, 2], logits[1, 2])
    torch.testing.assert_close(logits[0, 0], model.token_embedding_table.weight[1])


def test_unknown_architecture() -> None:
    with pytest.raises(LitGPTError, match="unknown architecture 'rnn'"):
        build_model("rnn", tiny_config())


def test_muon_takes_the_hidden_matrices_and_lowers_the_loss(corpus_path: Path, tmp_path: Path) -> None:
    """--model.optimizer muon: Muon steps exactly the 2-D weights inside the blocks, AdamW the embeddings (tied with
    the head), LayerNorms and biases; one schedule sets both rates; 60 steps lower the loss."""
    from helpers import callback, fit_args, read_losses
    from lit_gpt.cli import cli_main
    from lit_gpt.optim import MuonAdamW

    record = tmp_path / "losses.txt"
    cli = cli_main(fit_args(corpus_path, tmp_path, "--model.optimizer", "muon", "--model.learning_rate", "3e-3",
                            "--model.min_lr", "3e-4", "--trainer.max_steps", "60", "--model.lr_decay_steps", "60",
                            callback("helpers.LossRecorder", path=str(record))))
    optimizer, model = cli.trainer.optimizers[0], cli.model.model
    assert isinstance(optimizer, MuonAdamW)
    muon = {id(p) for g in optimizer.muon.param_groups for p in g["params"]}
    expected = {id(p) for block in model.transformer.h for name, p in block.named_parameters() if p.dim() == 2}
    assert muon == expected and len(muon) == 4 * 2  # c_attn, attn c_proj, c_fc, mlp c_proj in each of 2 layers
    adamw = {id(p) for g in optimizer.adamw.param_groups for p in g["params"]}
    assert adamw == {id(p) for p in model.parameters()} - muon
    assert len({g["lr"] for g in optimizer.param_groups}) == 1  # one schedule
    losses = read_losses(record)
    first, last = float.fromhex(losses[("train", 1)]), float.fromhex(losses[("val", 60)])
    assert last < first - 0.5  # measured: 4.16 -> 3.18


def test_the_default_gpt_is_unchanged_by_the_ladder_switches() -> None:
    """Reference values from the model before mlp/residual/layernorm existed (same seed, same input)."""
    torch.manual_seed(0)
    model = GPT(tiny_config()).eval()
    logits, _ = model(torch.arange(16).remainder(11).unsqueeze(0))
    assert logits.double().sum().item() == pytest.approx(1.7329561226069927, rel=1e-6)
    torch.testing.assert_close(logits[0, -1, :3], torch.tensor([-0.05264151468873024, 0.017626844346523285,
                                                                 -0.021546395495533943]))
    assert len(model.state_dict()) == 29


def test_ladder_switches_remove_what_they_name() -> None:
    bare = GPT(tiny_config(mlp=False, residual=False, layernorm=False))
    assert not any(isinstance(m, torch.nn.LayerNorm) for m in bare.modules())
    assert not any(isinstance(m, MLP) for m in bare.modules())
    assert any(isinstance(m, torch.nn.LayerNorm) for m in GPT(tiny_config()).modules())


def test_residual_switch_replaces_the_stream_instead_of_adding_to_it() -> None:
    """Same weights: with residual off a block's output is attn(x) then mlp(.) alone; with it on, x is added."""
    torch.manual_seed(0)
    plain = GPT(tiny_config(residual=False, layernorm=False)).transformer.h[0].eval()
    assert isinstance(plain, PlainBlock)
    x = torch.randn(2, 5, 16)
    no_residual = plain(x)
    torch.testing.assert_close(no_residual, plain.mlp(plain.attn(x)))
    block = Block(tiny_config(residual=True, layernorm=False)).eval()
    block.load_state_dict(plain.state_dict())
    h = x + block.attn(x)
    torch.testing.assert_close(block(x), h + block.mlp(h))


MODERN = {"rope": {"position": "rope"}, "qk_norm": {"qk_norm": True}, "relu2": {"activation": "relu2"},
          "zero_init": {"zero_init": True}, "untied": {"tie_weights": False}, "logit_cap": {"logit_cap": 0.5},
          "value_embed": {"value_embed": True}, "unet": {"unet": True},
          "all": {"position": "rope", "qk_norm": True, "activation": "relu2", "zero_init": True, "tie_weights": False,
                  "logit_cap": 0.5, "value_embed": True, "unet": True}}


@pytest.mark.parametrize("options", MODERN.values(), ids=MODERN.keys())
def test_each_later_technique_generates_with_the_kv_cache_as_without(options: dict) -> None:
    """Rotary positions continue from the cache's length: the logits of a text fed in pieces equal the whole's."""
    torch.manual_seed(0)
    model = GPT(tiny_config(**options)).eval()
    idx = torch.randint(0, 11, (2, 16))
    whole, _ = model(idx)
    cache = model.new_kv_cache(2)
    pieces = [model(idx[:, :9], kv_cache=cache)[0], *(model(idx[:, t:t + 1], kv_cache=cache)[0] for t in range(9, 16))]
    torch.testing.assert_close(torch.cat(pieces, dim=1), whole)


def test_each_later_technique_changes_what_it_names() -> None:
    torch.manual_seed(0)
    idx = torch.arange(16).remainder(11).unsqueeze(0)
    rope = GPT(tiny_config(position="rope"))
    assert not any("wpe" in name for name, _ in rope.named_parameters())
    untied = GPT(tiny_config(tie_weights=False))
    assert untied.lm_head.weight is not untied.transformer.wte.weight
    capped = GPT(tiny_config(logit_cap=0.5))
    with torch.no_grad():
        capped.lm_head.weight.mul_(1000)  # logits far beyond the cap
    assert capped(idx)[0].abs().max() <= 0.5 < capped.lm_head(capped.transformer.ln_f(capped.embed(idx))).abs().max()
    zero = GPT(tiny_config(zero_init=True))
    assert all(p.abs().sum() == 0 for n, p in zero.named_parameters() if n.endswith("c_proj.weight"))
    assert type(GPT(tiny_config(activation="relu2")).transformer.h[0].mlp.gelu).__name__ == "ReLUSquared"
    assert type(GPT(tiny_config(qk_norm=True)).transformer.h[0].attn.qk_norm).__name__ == "HeadNorm"


@pytest.mark.parametrize("option, zeroed", [("value_embed", "value_embeds.tables"), ("unet", "stack.skip_weights")])
def test_value_embeddings_and_unet_skips_add_only_what_they_name(option: str, zeroed: str) -> None:
    """With its own parameters at zero, a model with the technique computes exactly what the model without it does
    with the same other weights; at their initial values they change the logits. A 3-layer U-net adds block 0's
    output to block 2's input, one learned weight."""
    torch.manual_seed(0)
    idx = torch.randint(0, 11, (2, 16))
    plain = GPT(tiny_config(n_layer=3)).eval()
    model = GPT(tiny_config(n_layer=3, **{option: True})).eval()
    extra = {name for name, _ in model.named_parameters()} - {name for name, _ in plain.named_parameters()}
    assert extra and all(name.startswith(zeroed) for name in extra)
    assert model.load_state_dict(plain.state_dict(), strict=False).unexpected_keys == []
    assert not torch.equal(model(idx)[0], plain(idx)[0])
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name in extra:
                param.zero_()
    torch.testing.assert_close(model(idx)[0], plain(idx)[0], rtol=0, atol=0)
    if option == "unet":
        assert model.stack.skip_weights.shape == (1,)


def test_attention_maps_follow_the_stack_the_model_runs() -> None:
    """The maps are those of each block's actual input: with U-net skips, the last block's input holds the first's
    output, and its map differs from one drawn without the skip."""
    torch.manual_seed(0)
    idx = torch.randint(0, 11, (1, 12))
    model = GPT(tiny_config(n_layer=2, unet=True)).eval()
    with torch.no_grad():
        model.stack.skip_weights.fill_(3.0)
    maps = model.attention_maps(idx)  # (n_layer, B, nh, T, T)
    first = model.transformer.h[0](model.embed(idx))  # block 0's output
    second_input = first + 3.0 * first  # what the U-net hands block 1
    expected = model.transformer.h[1].attn.weights(model.transformer.h[1].ln_1(second_input))
    torch.testing.assert_close(maps[1], expected)
    assert not torch.allclose(maps[1], model.transformer.h[1].attn.weights(model.transformer.h[1].ln_1(first)))


def test_rotary_attention_depends_on_relative_positions_only() -> None:
    """The same two characters, one apart, give the same attention score wherever they stand."""
    from lit_gpt.modern import Rotary

    rotary = Rotary(head_size=8, block_size=16)
    q, k = torch.randn(1, 1, 1, 8), torch.randn(1, 1, 1, 8)
    scores = [(rotary(q, start + 1) * rotary(k, start)).sum().item() for start in (0, 5, 12)]
    assert scores == pytest.approx([scores[0]] * 3, rel=1e-5)


@pytest.mark.parametrize("options, message", [
    ({"position": "alibi"}, r"position must be one of learned, rope"),
    ({"activation": "swish"}, r"activation must be one of gelu, relu2"),
    ({"position": "rope", "n_embd": 18, "n_head": 2}, r"must be even, got 9"),
    ({"logit_cap": 0}, r"logit_cap must be positive"),
])
def test_config_rejects_bad_technique_settings(options: dict, message: str) -> None:
    with pytest.raises(LitGPTError, match=message):
        tiny_config(**options)


def test_a_checkpoint_of_another_technique_is_named_in_the_mismatch() -> None:
    from lit_gpt.trainer import config_mismatches

    hparams = {"arch": "gpt", "config": {k: v for k, v in vars(tiny_config()).items() if k != "position"}}
    assert config_mismatches(hparams, "gpt", tiny_config()) == []  # an older checkpoint: the default it had
    assert config_mismatches(hparams, "gpt", tiny_config(position="rope")) == [
        "position learned in the checkpoint, rope in the config"]
