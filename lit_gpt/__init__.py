"""lit_gpt: character-level GPTs trained with PyTorch Lightning.

    import lightning as L
    from lit_gpt import CharDataModule, GPTConfig, LitGPT, TextGenerator

    dm = CharDataModule(block_size=64, batch_size=32)  # tiny Shakespeare, shipped with the package
    model = LitGPT(GPTConfig(n_layer=4, n_head=4, n_embd=128))  # its vocabulary and window come from the data
    trainer = L.Trainer(max_steps=300)
    trainer.fit(model, dm)

A recipe's run, as ``python train.py fit --config configs/shakespeare_char_cpu.yaml`` builds it:

    from lit_gpt import recipe

    trainer, model, dm = recipe("shakespeare_char_cpu", trainer={"max_steps": 300})
    trainer.fit(model, dm)  # trainer.fit(model, dm, ckpt_path="last") resumes it
"""

from lit_gpt.config import GPTConfig
from lit_gpt.errors import LitGPTError
from lit_gpt.model import GPT, Bigram
from lit_gpt.tokenizer import CharTokenizer

__all__ = ["GPT", "Bigram", "CharDataModule", "CharTokenizer", "GPTConfig", "LitGPT", "LitGPTError", "RecipeTrainer",
           "TextGenerator", "recipe"]
LAZY = {"LitGPT": "lit_gpt.module", "CharDataModule": "lit_gpt.data", "TextGenerator": "lit_gpt.generate",
        "recipe": "lit_gpt.recipes", "RecipeTrainer": "lit_gpt.trainer"}


def __getattr__(name: str):
    """The Lightning pieces, imported when first asked for (``import lit_gpt.model`` stays free of Lightning)."""
    if name in LAZY:
        import importlib

        return getattr(importlib.import_module(LAZY[name]), name)
    raise AttributeError(f"module 'lit_gpt' has no attribute {name!r}")
