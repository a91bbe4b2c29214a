"""Muon for the hidden matrices with AdamW for the rest, stepped as one optimizer.

Lightning's automatic optimization and one learning-rate schedule need one ``torch.optim.Optimizer``; torch ships
``Muon`` and ``AdamW`` as two. ``MuonAdamW`` holds both and exposes their parameter groups as its own (the same dict
objects), so the schedule sets the rate of both, gradient clipping and ``zero_grad`` see every parameter, and the
checkpoint holds both states.
"""

from collections.abc import Callable, Iterable
from typing import Any, Optional

import torch


class MuonAdamW(torch.optim.Optimizer):
    """``torch.optim.Muon`` on ``muon_groups`` (2-D hidden weight matrices) and ``torch.optim.AdamW`` on
    ``adamw_groups`` (embeddings, the head, LayerNorm weights, biases), with one learning rate.

    Muon's step is scaled to the RMS of an AdamW step (``adjust_lr_fn="match_rms_adamw"``), so the learning rate and
    weight decay tuned for AdamW apply to both.
    """

    def __init__(self, muon_groups: Iterable[dict[str, Any]], adamw_groups: Iterable[dict[str, Any]], lr: float,
                 betas: tuple[float, float] = (0.9, 0.99), momentum: float = 0.95, fused: Optional[bool] = None) -> None:
        self.muon = torch.optim.Muon(list(muon_groups), lr=lr, momentum=momentum, adjust_lr_fn="match_rms_adamw")
        self.adamw = torch.optim.AdamW(list(adamw_groups), lr=lr, betas=betas, fused=fused)
        params = [p for opt in (self.muon, self.adamw) for group in opt.param_groups for p in group["params"]]
        super().__init__(params, {"lr": lr})
        self.param_groups = self.muon.param_groups + self.adamw.param_groups  # shared dicts: one schedule sets both

    @property
    def state(self) -> dict:  # type: ignore[override]
        """Both optimizers' per-parameter state (the same dicts), for code that moves state between devices."""
        return {**self.muon.state, **self.adamw.state}

    @state.setter
    def state(self, value: Any) -> None:
        pass  # torch.optim.Optimizer.__init__ assigns an empty state; the inner optimizers keep the real ones

    @torch.no_grad()
    def step(self, closure: Optional[Callable[[], float]] = None) -> Optional[float]:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        self.muon.step()
        self.adamw.step()
        return loss

    def state_dict(self) -> dict[str, Any]:
        return {"muon": self.muon.state_dict(), "adamw": self.adamw.state_dict()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.muon.load_state_dict(state_dict["muon"])
        self.adamw.load_state_dict(state_dict["adamw"])
        self.param_groups = self.muon.param_groups + self.adamw.param_groups  # load_state_dict made new dicts
