"""Lightning from Python: the package's face, and a LightningModule that takes its vocabulary and window from the
data when the Trainer starts."""

from pathlib import Path

import lightning as L
import pytest
import torch

from lit_gpt import CharDataModule, GPTConfig, LitGPT, LitGPTError, TextGenerator


def plain_trainer(tmp_path: Path, steps: int = 3) -> L.Trainer:
    return L.Trainer(max_steps=steps, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                     enable_model_summary=False, limit_val_batches=0, default_root_dir=str(tmp_path),
                     accelerator="cpu")


def test_the_five_lines_train_and_their_checkpoint_samples(tmp_path: Path) -> None:
    """A model made without a vocabulary takes the data's vocabulary and window at fit; its checkpoint carries them,
    so TextGenerator (sample.py) samples from it."""
    dm = CharDataModule(block_size=32, batch_size=8)
    model = LitGPT(GPTConfig(n_layer=2, n_head=2, n_embd=32))
    assert model.model is None  # not built until the data is known
    trainer = plain_trainer(tmp_path)
    trainer.fit(model, dm)
    assert trainer.global_step == 3
    assert (model.config.vocab_size, model.config.block_size) == (dm.vocab_size, 32)
    assert model.hparams.vocab == dm.vocab and model.hparams.config["block_size"] == 32
    trainer.save_checkpoint(tmp_path / "five.ckpt")
    text = TextGenerator.from_checkpoint(tmp_path / "five.ckpt", "cpu").generate("ROMEO:", 20, seed=1)[0]
    assert text.startswith("ROMEO:") and len(text) == 26


def test_a_given_vocabulary_that_is_not_the_datas_is_one_error(tmp_path: Path) -> None:
    dm = CharDataModule(block_size=32, batch_size=8)
    model = LitGPT(GPTConfig(vocab_size=3, block_size=32, n_layer=1, n_head=1, n_embd=8), vocab=list("abc"))
    with pytest.raises(LitGPTError, match=r"the model's vocabulary \(3 characters\) is not the data's \(65\)"):
        plain_trainer(tmp_path).fit(model, dm)
    short = LitGPT(GPTConfig(vocab_size=dm.vocab_size, block_size=16, n_layer=1, n_head=1, n_embd=8), vocab=dm.vocab)
    with pytest.raises(LitGPTError, match=r"the data's windows \(32 characters\) are longer than the model's "
                                          r"block_size 16"):
        plain_trainer(tmp_path).fit(short, dm)


def test_a_model_without_a_vocabulary_needs_a_datamodule(tmp_path: Path) -> None:
    model = LitGPT(GPTConfig(n_layer=1, n_head=1, n_embd=8))
    loader = torch.utils.data.DataLoader([(torch.zeros(8, dtype=torch.long), torch.zeros(8, dtype=torch.long))])
    with pytest.raises(LitGPTError, match=r"takes the vocabulary from its datamodule"):
        plain_trainer(tmp_path).fit(model, train_dataloaders=loader)
