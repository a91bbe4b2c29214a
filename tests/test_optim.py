"""Muon with a choice of orthogonalization dtype: torch's step where both use bfloat16, float32 where it is fast."""

import pytest
import torch

from lit_gpt.optim import Muon, MuonAdamW, fast_ortho_dtype, orthogonalize

SHAPES = [(384, 128), (128, 128), (128, 512)]  # tall, square and wide, as in the CPU recipe's blocks


def params_and_grads(steps: int, seed: int = 0) -> tuple[list[torch.Tensor], list[list[torch.Tensor]]]:
    g = torch.Generator().manual_seed(seed)
    params = [torch.randn(s, generator=g) for s in SHAPES]
    grads = [[torch.randn(s, generator=g) for s in SHAPES] for _ in range(steps)]
    return params, grads


def run(optimizer_fn, steps: int = 6) -> list[torch.Tensor]:
    """``steps`` optimizer steps on fresh copies of the same parameters and gradients; the parameters after."""
    start, grads = params_and_grads(steps)
    params = [torch.nn.Parameter(p.clone()) for p in start]
    optimizer = optimizer_fn(params)
    for step_grads in grads:
        for p, g in zip(params, step_grads):
            p.grad = g.clone()
        optimizer.step()
    return [p.detach() for p in params]


@pytest.mark.parametrize("settings", [
    {"lr": 1e-2, "adjust_lr_fn": "match_rms_adamw"},
    {"lr": 2e-2, "adjust_lr_fn": None, "nesterov": False, "weight_decay": 0.0},
    {"lr": 5e-3, "adjust_lr_fn": "original", "momentum": 0.9, "ns_steps": 3},
])
def test_muon_in_bfloat16_equals_torch_muon_step_for_step(settings: dict) -> None:
    ours = run(lambda p: Muon(p, ortho_dtype=torch.bfloat16, **settings))
    theirs = run(lambda p: torch.optim.Muon(p, **settings))
    for a, b in zip(ours, theirs):
        assert torch.equal(a, b)


def test_muon_on_a_cpu_orthogonalizes_in_float32() -> None:
    default = run(lambda p: Muon(p, lr=1e-2))
    float32 = run(lambda p: Muon(p, lr=1e-2, ortho_dtype=torch.float32))
    bfloat16 = run(lambda p: Muon(p, lr=1e-2, ortho_dtype=torch.bfloat16))
    assert all(torch.equal(a, b) for a, b in zip(default, float32))
    assert not any(torch.equal(a, b) for a, b in zip(default, bfloat16))


def test_fast_ortho_dtype_is_bfloat16_on_cuda_only() -> None:
    assert fast_ortho_dtype(torch.device("cuda", 0)) == torch.bfloat16
    assert fast_ortho_dtype(torch.device("cpu")) == torch.float32
    assert fast_ortho_dtype(torch.device("mps")) == torch.float32


def test_float32_orthogonalization_is_closer_to_float64_than_bfloat16() -> None:
    update = torch.randn(384, 128, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    args = ((3.4445, -4.7750, 2.0315), 5, 1e-7)
    reference = orthogonalize(update, *args, dtype=torch.float64)
    err32 = (orthogonalize(update, *args, dtype=torch.float32).double() - reference).abs().max()
    err16 = (orthogonalize(update, *args, dtype=torch.bfloat16).double() - reference).abs().max()
    assert err32 < 1e-5 < err16
    # Orthogonalized: the singular values land in Newton-Schulz's band around 1 (about 0.7 to 1.2 after 5 steps).
    singular = torch.linalg.svdvals(reference)
    assert 0.5 < singular.min() and singular.max() < 1.3


def test_muon_checkpoints_load_into_torch_muon_and_back() -> None:
    params, grads = params_and_grads(2)
    ours = Muon([torch.nn.Parameter(p.clone()) for p in params], lr=1e-2)
    for p, g in zip(ours.param_groups[0]["params"], grads[0]):
        p.grad = g
    ours.step()
    theirs = torch.optim.Muon([torch.nn.Parameter(p.clone()) for p in params], lr=1e-2)
    theirs.load_state_dict(ours.state_dict())
    back = Muon([torch.nn.Parameter(p.clone()) for p in params], lr=1e-2)
    back.load_state_dict(theirs.state_dict())
    for i, p in enumerate(ours.param_groups[0]["params"]):
        assert torch.equal(back.state_dict()["state"][i]["momentum_buffer"], ours.state[p]["momentum_buffer"])


def test_muon_adamw_passes_the_dtype_to_its_muon() -> None:
    w, b = torch.nn.Parameter(torch.randn(8, 8)), torch.nn.Parameter(torch.randn(8))
    optimizer = MuonAdamW([{"params": [w]}], [{"params": [b]}], lr=1e-3, ortho_dtype=torch.bfloat16)
    assert isinstance(optimizer.muon, Muon) and optimizer.muon.ortho_dtype == torch.bfloat16
    assert MuonAdamW([{"params": [w]}], [{"params": [b]}], lr=1e-3).muon.ortho_dtype is None


def test_muon_adamw_state_is_one_mapping_that_writes_reach() -> None:
    """``opt.state[p] = ...`` (as Lightning's move of optimizer state to a device does) reaches the optimizer that
    steps p; reads, deletes, len and a whole new state do too."""
    w, b = torch.nn.Parameter(torch.randn(4, 4)), torch.nn.Parameter(torch.randn(4))
    optimizer = MuonAdamW([{"params": [w]}], [{"params": [b]}], lr=1e-3)
    w.grad, b.grad = torch.randn(4, 4), torch.randn(4)
    optimizer.step()
    assert len(optimizer.state) == 2 and {id(p) for p in optimizer.state} == {id(w), id(b)}
    moved = {k: v.clone() + 1 if torch.is_tensor(v) else v for k, v in optimizer.state[b].items()}
    optimizer.state[b] = moved
    assert optimizer.adamw.state[b] is moved and optimizer.state[b] is moved
    optimizer.state[w]["momentum_buffer"] = torch.zeros(4, 4)
    assert torch.equal(optimizer.muon.state[w]["momentum_buffer"], torch.zeros(4, 4))
    del optimizer.state[w]
    assert w not in optimizer.muon.state and len(optimizer.state) == 1
    optimizer.state = {w: {"momentum_buffer": torch.ones(4, 4)}}
    assert list(optimizer.muon.state) == [w] and not optimizer.adamw.state
    with pytest.raises(KeyError):
        optimizer.state[torch.nn.Parameter(torch.randn(2))] = {}
