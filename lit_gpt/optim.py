"""Muon for the hidden matrices with AdamW for the rest, stepped as one optimizer.

Lightning's automatic optimization and one learning-rate schedule need one ``torch.optim.Optimizer``; torch ships
``Muon`` and ``AdamW`` as two. ``MuonAdamW`` holds both and exposes their parameter groups as its own (the same dict
objects), so the schedule sets the rate of both, gradient clipping and ``zero_grad`` see every parameter, and the
checkpoint holds both states.
"""

import math
from collections.abc import Callable, Iterable, Iterator, Mapping, MutableMapping
from typing import Any, Optional

import torch


def orthogonalize(update: torch.Tensor, coefficients: tuple[float, float, float], steps: int, eps: float,
                  dtype: torch.dtype) -> torch.Tensor:
    """Newton-Schulz iterations towards the nearest semi-orthogonal matrix, in ``dtype``: the same arithmetic as
    ``torch.optim.Muon`` (which always uses bfloat16). update (A, B) -> (A, B), in ``dtype``."""
    a, b, c = coefficients
    X = update.to(dtype)
    tall = update.size(0) > update.size(1)
    if tall:
        X = X.T  # (B, A): the Gram matrix below is the smaller of the two
    X.div_(X.norm().clamp(min=eps))  # spectral norm <= Frobenius norm <= 1
    for _ in range(steps):
        gram = X @ X.T  # (m, n) @ (n, m) -> (m, m)
        poly = torch.addmm(gram, gram, gram, beta=b, alpha=c)  # b G + c G^2
        X = torch.addmm(X, poly, X, beta=a)  # a X + (b G + c G^2) X
    return X.T if tall else X


def closure_loss(closure: Optional[Callable[[], float]]) -> Optional[float]:
    """The loss of an optimizer's ``closure`` (forward and backward again), with gradients on, as torch's optimizers
    evaluate it; None without one."""
    if closure is None:
        return None
    with torch.enable_grad():
        return closure()


def fast_ortho_dtype(device: torch.device) -> torch.dtype:
    """bfloat16 on CUDA (tensor cores); float32 elsewhere: a CPU without bf16 instructions emulates bfloat16
    matmuls, many times slower than float32 (``python bench/common.py`` prints the ratio on the machine it runs on)."""
    return torch.bfloat16 if device.type == "cuda" else torch.float32


class Muon(torch.optim.Muon):
    """``torch.optim.Muon`` whose orthogonalization runs in ``ortho_dtype`` (``None``: bfloat16 on CUDA, float32
    elsewhere), the one option torch's lacks. Same algorithm, coefficients, learning-rate adjustment, defaults and
    state (``momentum_buffer``), so checkpoints of either load into the other.

    Args:
        params: The 2-D parameters (or parameter groups) to optimize.
        ortho_dtype: The dtype of the Newton-Schulz iterations; ``torch.bfloat16`` gives torch's Muon step exactly.
        **kwargs: ``torch.optim.Muon``'s settings (lr, weight_decay, momentum, nesterov, ns_coefficients, eps,
            ns_steps, adjust_lr_fn).
    """

    def __init__(self, params: Any, ortho_dtype: Optional[torch.dtype] = None, **kwargs: Any) -> None:
        super().__init__(params, **kwargs)
        self.ortho_dtype = ortho_dtype

    @torch.no_grad()
    def step(self, closure: Optional[Callable[[], float]] = None) -> Optional[float]:
        loss = closure_loss(closure)
        for group in self.param_groups:
            lr, momentum = float(group["lr"]), group["momentum"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                buf = self.state[p].setdefault("momentum_buffer", torch.zeros_like(p.grad))
                buf.lerp_(p.grad, 1 - momentum)
                update = p.grad.lerp(buf, momentum) if group["nesterov"] else buf
                dtype = self.ortho_dtype or fast_ortho_dtype(p.device)
                update = orthogonalize(update, group["ns_coefficients"], group["ns_steps"], group["eps"], dtype)
                p.mul_(1 - lr * group["weight_decay"])  # decoupled weight decay
                p.add_(update, alpha=-lr * lr_ratio(group["adjust_lr_fn"], p.shape))
        return loss


def lr_ratio(adjust_lr_fn: Optional[str], shape: torch.Size) -> float:
    """Muon's learning-rate adjustment for an (A, B) matrix, as in ``torch.optim.Muon``: "original" (Keller
    Jordan's) sqrt(max(1, A/B)); "match_rms_adamw" (Moonshot's) 0.2 sqrt(max(A, B)), the RMS of an AdamW step."""
    A, B = shape[:2]
    if adjust_lr_fn is None or adjust_lr_fn == "original":
        return math.sqrt(max(1, A / B))
    if adjust_lr_fn == "match_rms_adamw":
        return 0.2 * math.sqrt(max(A, B))
    return 1.0


class SplitState(MutableMapping):
    """The per-parameter state of several optimizers as one mapping, each entry kept by the optimizer that owns the
    parameter (a missing entry is created empty, as ``Optimizer.state``'s defaultdict does)."""

    def __init__(self, *optimizers: torch.optim.Optimizer) -> None:
        self.optimizers = optimizers

    def owner(self, param: torch.Tensor) -> torch.optim.Optimizer:
        for opt in self.optimizers:
            if any(p is param for group in opt.param_groups for p in group["params"]):
                return opt
        raise KeyError("this parameter is not one the optimizer steps")

    def __getitem__(self, param: torch.Tensor) -> Any:
        return self.owner(param).state[param]

    def __setitem__(self, param: torch.Tensor, value: Any) -> None:
        self.owner(param).state[param] = value

    def __delitem__(self, param: torch.Tensor) -> None:
        del self.owner(param).state[param]

    def __iter__(self) -> Iterator[torch.Tensor]:
        return (p for opt in self.optimizers for p in list(opt.state))

    def __len__(self) -> int:
        return sum(len(opt.state) for opt in self.optimizers)


class MuonAdamW(torch.optim.Optimizer):
    """``Muon`` on ``muon_groups`` (2-D hidden weight matrices) and ``torch.optim.AdamW`` on ``adamw_groups``
    (embeddings, the head, LayerNorm weights, biases), with one learning rate.

    Muon's step is scaled to the RMS of an AdamW step (``adjust_lr_fn="match_rms_adamw"``), so the learning rate and
    weight decay tuned for AdamW apply to both. Its orthogonalization runs in ``ortho_dtype`` (``None``: the fast
    one for the parameters' device, see ``fast_ortho_dtype``).
    """

    def __init__(self, muon_groups: Iterable[dict[str, Any]], adamw_groups: Iterable[dict[str, Any]], lr: float,
                 betas: tuple[float, float] = (0.9, 0.99), momentum: float = 0.95, fused: Optional[bool] = None,
                 ortho_dtype: Optional[torch.dtype] = None) -> None:
        self.muon = Muon(list(muon_groups), lr=lr, momentum=momentum, adjust_lr_fn="match_rms_adamw",
                         ortho_dtype=ortho_dtype)
        self.adamw = torch.optim.AdamW(list(adamw_groups), lr=lr, betas=betas, fused=fused)
        params = [p for opt in (self.muon, self.adamw) for group in opt.param_groups for p in group["params"]]
        super().__init__(params, {"lr": lr})
        self.param_groups = self.muon.param_groups + self.adamw.param_groups  # shared dicts: one schedule sets both

    @property
    def state(self) -> "SplitState":  # type: ignore[override]
        """Both optimizers' per-parameter state as one mapping: a parameter's entry lives in the optimizer that steps
        it, so code that moves or replaces state (``opt.state[p] = ...``, as Lightning's device moves do) reaches it."""
        return SplitState(self.muon, self.adamw)

    @state.setter
    def state(self, value: Mapping) -> None:  # torch.optim.Optimizer.__init__ assigns an empty one
        state = self.state
        state.clear()
        state.update(value)

    @torch.no_grad()
    def step(self, closure: Optional[Callable[[], float]] = None) -> Optional[float]:
        loss = closure_loss(closure)
        self.muon.step()
        self.adamw.step()
        return loss

    def state_dict(self) -> dict[str, Any]:
        return {"muon": self.muon.state_dict(), "adamw": self.adamw.state_dict()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.muon.load_state_dict(state_dict["muon"])
        self.adamw.load_state_dict(state_dict["adamw"])
        self.param_groups = self.muon.param_groups + self.adamw.param_groups  # load_state_dict made new dicts


def parameter_groups(named_parameters: Iterable[tuple[str, torch.Tensor]], weight_decay: float,
                     muon: bool) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(Muon's groups, AdamW's groups), decided by name and shape, each group named and with its weight decay.

    Matrices decay, vectors (biases, LayerNorm weights) do not (nanoGPT). With ``muon``, the 2-D weight matrices
    inside the transformer blocks (``...transformer.h.*``) go to Muon and everything else (the embeddings, tied with
    the head; LayerNorms; biases) stays with AdamW. Frozen parameters are left out; empty groups are dropped.
    """
    params = {name: p for name, p in named_parameters if p.requires_grad}
    hidden = {name for name, p in params.items() if muon and p.dim() == 2 and ".transformer.h." in f".{name}"}

    def group(name: str, keep: Callable[[str, torch.Tensor], bool], decay: float) -> dict[str, Any]:
        return {"name": name, "params": [p for n, p in params.items() if keep(n, p)], "weight_decay": decay}

    muon_groups = [group("muon", lambda n, p: n in hidden, weight_decay)]
    adamw_groups = [group("decay", lambda n, p: p.dim() >= 2 and n not in hidden, weight_decay),
                    group("no_decay", lambda n, p: p.dim() < 2, 0.0)]
    return [g for g in muon_groups if g["params"]], [g for g in adamw_groups if g["params"]]
