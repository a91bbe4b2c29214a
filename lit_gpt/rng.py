"""Dropout's random stream: its own on every process, and saved in every checkpoint for every process."""

from typing import Any, Optional

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback


class RankRNG(Callback):
    """Gives each process its own dropout stream and saves every process's stream, so that a resumed run continues
    each one exactly, on one device or N.

    Dropout draws from torch's global generator. ``seed_everything`` seeds it the same on every process, so without
    this every rank would draw the same dropout masks; and Lightning does not save it, so a resumed run would draw
    other masks than a run that never stopped.

    - When training starts, rank ``r > 0`` reseeds with ``seed + r`` (nanoGPT's offset by rank); rank 0 keeps the
      stream it has, so one device draws what it always drew.
    - Every checkpoint holds one state per rank (``checkpoint["rng_state"]["torch"]``: a ``(world_size, n)`` uint8
      tensor, gathered from all ranks; the same for CUDA). A resumed run restores its own rank's row, after the train
      loader has started (creating its iterator draws from the global generator). A checkpoint from another number of
      processes restores the rows it has and reseeds the rest as above.
    """

    def __init__(self) -> None:
        self._to_restore: Optional[dict[str, Any]] = None

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        rank, saved = trainer.global_rank, self._to_restore
        self._to_restore = None
        torch_state = own_row(saved["torch"], rank) if saved is not None else None
        if torch_state is not None:
            torch.set_rng_state(torch_state)
            cuda_state = own_row(saved.get("cuda"), rank)
            if cuda_state is not None and pl_module.device.type == "cuda":
                torch.cuda.set_rng_state(cuda_state, pl_module.device)
        elif rank > 0:
            seed = torch.initial_seed() + rank  # initial_seed: the seed_everything seed, the same on every rank
            torch.manual_seed(seed)  # the CPU generator and every CUDA generator

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule,
                           checkpoint: dict[str, Any]) -> None:
        # Called on every rank (Lightning builds the checkpoint everywhere, rank 0 writes it): a collective is safe.
        device = trainer.strategy.root_device
        states = {"torch": torch.get_rng_state()}  # (n,) uint8
        if device.type == "cuda":
            states["cuda"] = torch.cuda.get_rng_state(device)
        checkpoint["rng_state"] = {name: gather_rows(trainer, state) for name, state in states.items()}

    def on_load_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule,
                           checkpoint: dict[str, Any]) -> None:
        self._to_restore = checkpoint.get("rng_state")


def gather_rows(trainer: L.Trainer, state: torch.Tensor) -> torch.Tensor:
    """(n,) uint8 on each rank -> (world_size, n) uint8 on the CPU, row r from rank r."""
    if trainer.world_size == 1:
        return state[None].clone()
    rows = trainer.strategy.all_gather(state.to(trainer.strategy.root_device))  # (world_size, n)
    return rows.cpu()


def own_row(states: Any, rank: int) -> Optional[torch.Tensor]:
    """This rank's state from a checkpoint: row ``rank`` of a (world_size, n) tensor, or None if there are fewer rows.
    Older checkpoints hold rank 0's state alone (a (n,) tensor; for CUDA a list, one state per device)."""
    if states is None or len(states) == 0:
        return None
    if isinstance(states, list) or states.dim() == 1:
        return (states[0] if isinstance(states, list) else states) if rank == 0 else None
    return states[rank].clone() if rank < len(states) else None  # a copy: set_rng_state reads from offset 0
