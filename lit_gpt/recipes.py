"""The recipe's run from Python: what ``python train.py fit --config configs/RECIPE.yaml`` builds, in one call.

    from lit_gpt import recipe

    trainer, model, data = recipe("shakespeare_char_cpu", trainer={"max_steps": 300})
    trainer.fit(model, data)                    # the command line's run: its callbacks, checks, run folder
    trainer.fit(model, data, ckpt_path="last")  # resumes it, or a run the command line started (and vice versa)

The command line's own code builds it (``GPTLightningCLI``), so the Trainer, its callbacks, the model and the data
are the command line's, setting for setting; ``config.yaml`` in the run folder is the run's recipe for
``train.py fit --config``.
"""

import json
import os
from argparse import ArgumentError
from pathlib import Path
from typing import Any, NamedTuple, Union

from lit_gpt.data import CharDataModule
from lit_gpt.errors import LitGPTError, one_line, user_error
from lit_gpt.module import LitGPT
from lit_gpt.progress import plain_output
from lit_gpt.trainer import RecipeTrainer

RECIPES = Path(__file__).resolve().parent.parent / "configs"  # the repository's configs/ beside the package


class Run(NamedTuple):
    """A recipe's Trainer, model and data: ``trainer.fit(model, datamodule)`` runs it."""

    trainer: RecipeTrainer
    model: LitGPT
    datamodule: CharDataModule


def recipe(name: Union[str, os.PathLike] = "shakespeare_char", **settings: Any) -> Run:
    """Build a recipe's run as the command line does: the Trainer with our callbacks around yours, the model, the data.

    Args:
        name: A recipe of ``configs/`` by name (``"shakespeare_char_cpu"``, ``"lecture/final"``), or the path of a YAML
            file (a run's ``config.yaml`` too).
        settings: Changes to the recipe by section, as in its YAML file, each the command line's
            ``--section.key value``: ``trainer={"max_steps": 300}``, ``model={"config": {"n_layer": 4}}``,
            ``data={"path": "my_text.txt"}``, ``monitor=None`` (a callback of ours off),
            ``periodic_checkpoint={"every_n_train_steps": 50}``. Under ``trainer``, objects as well:
            ``callbacks=[MyCallback()]`` (run after ours, before the two that write checkpoints),
            ``logger=CSVLogger("logs")``.

    Returns:
        ``Run(trainer, model, datamodule)``; unpack it, then ``trainer.fit(model, datamodule)``.

    Raises:
        LitGPTError: an unknown recipe or setting, or a value the command line would refuse, in one line.
    """
    args, objects = ["--config", str(recipe_path(name))], {}
    for section, value in settings.items():
        if section == "trainer" and isinstance(value, dict):
            objects = {key: v for key, v in value.items() if not is_plain(v)}
            value = {key: v for key, v in value.items() if key not in objects}
        elif not is_plain(value):
            raise LitGPTError(f"{section}: give numbers, strings, lists and dictionaries, as in a recipe's YAML "
                              f"(objects only under trainer=, such as callbacks and a logger)")
        args += as_args(section, value)
    from lit_gpt.cli import GPTLightningCLI  # the command line's assembly, shared

    try:
        with plain_output():
            cli = GPTLightningCLI(args, run=False, trainer_objects=objects, exit_on_error=False)
    except ArgumentError as err:
        raise LitGPTError(one_line(err)) from None
    except ValueError as err:  # a LitGPTError that jsonargparse wrapped while it instantiated a class
        cause = user_error(err)
        if cause is None:
            raise
        raise LitGPTError(str(cause)) from None
    return Run(cli.trainer, cli.model, cli.datamodule)


def recipe_path(name: Union[str, os.PathLike]) -> Path:
    """The YAML file of a recipe: a path, or a name under the repository's ``configs/``."""
    path = Path(name)
    for candidate in (path, RECIPES / f"{name}.yaml"):
        if candidate.suffix in (".yaml", ".yml") and candidate.is_file():
            return candidate
    names = sorted(str(p.relative_to(RECIPES).with_suffix("")) for p in RECIPES.rglob("*.yaml")) \
        if RECIPES.is_dir() else []
    raise LitGPTError(f"no recipe {str(name)!r}: give the path of a YAML file"
                      + (f" or one of: {', '.join(names)}" if names else " (configs/ of the repository)"))


def is_plain(value: Any) -> bool:
    """Whether ``value`` is what a YAML file can hold: None, a bool, number or string (or a path), or lists and dicts
    of them."""
    if value is None or isinstance(value, (bool, int, float, str, os.PathLike)):
        return True
    if isinstance(value, (list, tuple)):
        return all(is_plain(v) for v in value)
    return isinstance(value, dict) and all(isinstance(k, str) and is_plain(v) for k, v in value.items())


def as_args(key: str, value: Any) -> list[str]:
    """``("model", {"config": {"n_layer": 4}})`` -> ``["--model.config.n_layer=4"]``: a section's settings as the
    command line's, each dictionary key a level of the dotted name."""
    if isinstance(value, dict) and value:
        return [arg for name, v in value.items() for arg in as_args(f"{key}.{name}", v)]
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    return [f"--{key}={value if isinstance(value, str) else json.dumps(value, default=os.fspath)}"]
