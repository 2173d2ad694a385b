"""optimizer=muon and optimizer=ars2_neo: Newton–Schulz, the update rules, SAM, routing, resume,
schedules, config errors, and one real training step of every optimizer option."""

from __future__ import annotations

import copy
import io
import math

import pytest
import torch
from helpers import TINY
from torch import nn

from rds_act.build import build_module, build_trainer
from rds_act.errors import ConfigError
from rds_act.optim import ARS2Neo, MuonAdamW, warmup_cosine
from rds_act.optim.ars2_neo import newton_schulz
from rds_act.validate import validate_config


class Toy(nn.Module):
    """Embedding -> one ``block`` (matrix + norm) -> head: every kind of parameter the routing sees."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(10, 8)
        self.block = nn.Sequential(nn.Linear(8, 12), nn.LayerNorm(12))
        self.head = nn.Linear(12, 3)

    def loss(self, seed: int = 0) -> torch.Tensor:
        g = torch.Generator().manual_seed(seed)
        tokens = torch.randint(0, 10, (16,), generator=g)
        target = torch.randint(0, 3, (16,), generator=g)
        return nn.functional.cross_entropy(self.head(self.block(self.embed(tokens))), target)


def toy(seed: int = 0) -> Toy:
    torch.manual_seed(seed)
    return Toy()


def closure_for(model: Toy, opt: torch.optim.Optimizer, seed: int = 0, calls: list | None = None,
                zero: bool = True):
    def closure():
        if calls is not None:
            calls.append(1)
        if zero:
            opt.zero_grad()
        loss = model.loss(seed)
        loss.backward()
        return loss
    return closure


BUILDERS = {
    "ars2_neo": lambda params: ARS2Neo(params, lr=1e-2, weight_decay=0.01),
    "ars2_neo_rho0": lambda params: ARS2Neo(params, lr=1e-2, weight_decay=0.01, rho=0.0),
    "muon": lambda params: MuonAdamW(params),
}


# -- Newton–Schulz --------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(32, 64), (64, 32)])
def test_newton_schulz_is_near_orthogonal_and_near_the_polar_factor(shape):
    g = torch.randn(*shape, generator=torch.Generator().manual_seed(0))
    out = newton_schulz(g)
    assert out.shape == g.shape
    s = torch.linalg.svdvals(out)
    # the quintic does not converge to 1: it leaves every singular value in about [0.68, 1.13]
    assert 0.6 <= s.min() and s.max() <= 1.3
    u, _, vh = torch.linalg.svd(g, full_matrices=False)
    polar = u @ vh
    cosine = (out * polar).sum() / (out.norm() * polar.norm())
    assert cosine > 0.95  # the same directions as U Vᵀ, not just any orthogonal matrix


# -- ARS2Neo update rule -------------------------------------------------------------------------
def test_ars2neo_matrix_step_is_orthogonal_with_the_adam_step_rms():
    w = nn.Parameter(torch.randn(16, 32))
    start = w.detach().clone()
    w.grad = torch.randn(16, 32)
    g = w.grad.clone()
    ARS2Neo([w], lr=0.1, rho=0.0).step()
    step = (start - w.detach()) / 0.1
    adam = g / (g.abs() + 1e-8)  # first Adam step: m̂ / (√v̂ + ε) with m̂ = g, v̂ = g²
    rms = lambda x: x.pow(2).mean().sqrt()  # noqa: E731
    assert rms(step) == pytest.approx(float(rms(adam)), rel=1e-4)
    s = torch.linalg.svdvals(step / step.norm())
    assert s.max() / s.min() < 1.3 / 0.6  # orthogonalised: no direction dominates
    assert not torch.allclose(step, adam, atol=1e-2)


def test_ars2neo_vectors_take_the_adamw_step():
    ours = nn.Parameter(torch.randn(20))
    ref = nn.Parameter(ours.detach().clone())
    opt = ARS2Neo([ours], lr=1e-2, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1, rho=0.0)
    ref_opt = torch.optim.AdamW([ref], lr=1e-2, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1)
    for seed in range(3):
        grad = torch.randn(20, generator=torch.Generator().manual_seed(seed))
        ours.grad, ref.grad = grad.clone(), grad.clone()
        opt.step()
        ref_opt.step()
    torch.testing.assert_close(ours.detach(), ref.detach())


@pytest.mark.parametrize("rho", [0.0, 0.02])
def test_ars2neo_step_reduces_a_quadratic(rho):
    torch.manual_seed(0)
    w, b = nn.Parameter(torch.randn(8, 16)), nn.Parameter(torch.randn(16))
    tw, tb = torch.randn(8, 16), torch.randn(16)
    opt = ARS2Neo([w, b], lr=0.05, rho=rho)

    def closure():
        opt.zero_grad()
        loss = (w - tw).pow(2).sum() + (b - tb).pow(2).sum()
        loss.backward()
        return loss

    before = float(closure())
    opt.step(closure)
    assert float((w - tw).pow(2).sum() + (b - tb).pow(2).sum()) < before


# -- SAM ------------------------------------------------------------------------------------------
def test_rho_zero_is_the_plain_step_with_one_closure_call():
    with_closure, plain = toy(), toy()
    opt_a = ARS2Neo(with_closure.parameters(), lr=1e-2, rho=0.0)
    opt_b = ARS2Neo(plain.parameters(), lr=1e-2, rho=0.0)
    for seed in range(3):
        calls: list = []
        loss = opt_a.step(closure_for(with_closure, opt_a, seed, calls))
        assert len(calls) == 1 and torch.isfinite(loss)
        opt_b.zero_grad()
        plain.loss(seed).backward()
        opt_b.step()
    for a, b in zip(with_closure.parameters(), plain.parameters(), strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize("zero", [True, False], ids=["closure_zeroes", "closure_accumulates"])
def test_rho_steps_with_the_gradient_at_the_perturbed_point(zero):
    # a large eps: Adam's first step is ~sign(g) otherwise, the same at w and at w + e
    rho, hyper = 0.5, {"lr": 1e-2, "eps": 1.0}
    sam, ref = toy(), toy()
    opt = ARS2Neo(sam.parameters(), rho=rho, **hyper)
    calls: list = []
    loss = opt.step(closure_for(sam, opt, 0, calls, zero))
    assert len(calls) == 2
    assert float(loss) == pytest.approx(float(toy().loss(0)))  # the loss at w, not at w + e
    # by hand: g at w, move to w + rho g/||g||, g there, back to w, plain step with that g
    ref.loss(0).backward()
    grads = [p.grad.clone() for p in ref.parameters()]
    norm = torch.linalg.vector_norm(torch.stack([g.norm() for g in grads]))
    with torch.no_grad():
        for p, g in zip(ref.parameters(), grads, strict=True):
            p.add_(g * rho / norm)
    ref.zero_grad()
    ref.loss(0).backward()
    with torch.no_grad():
        for p, g in zip(ref.parameters(), grads, strict=True):
            p.sub_(g * rho / norm)
    ARS2Neo(ref.parameters(), rho=0.0, **hyper).step()
    for a, b in zip(sam.parameters(), ref.parameters(), strict=True):
        torch.testing.assert_close(a, b)
    plain = toy()
    plain_opt = ARS2Neo(plain.parameters(), rho=0.0, **hyper)
    plain_opt.step(closure_for(plain, plain_opt))
    assert (plain.head.weight - sam.head.weight).abs().max() > 1e-5


def test_rho_without_a_closure_is_a_config_error():
    model = toy()
    model.loss().backward()
    with pytest.raises(ConfigError, match=r"optimizer\.rho=0\.02 needs step\(closure\)"):
        ARS2Neo(model.parameters()).step()


# -- Muon routing ---------------------------------------------------------------------------------
def _routing(opt: MuonAdamW) -> dict[str, set[int]]:
    return {type(inner).__name__: {id(p) for g in inner.param_groups for p in g["params"]}
            for inner in opt.inner}


def test_muon_named_parameters_give_block_matrices_to_muon_and_the_rest_to_adamw():
    model = toy()
    opt = MuonAdamW(model.named_parameters())
    routes = _routing(opt)
    assert routes["Muon"] == {id(model.block[0].weight)}
    names = {id(p): n for n, p in model.named_parameters()}
    assert {names[i] for i in routes["AdamW"]} == {
        "embed.weight", "block.0.bias", "block.1.weight", "block.1.bias", "head.weight", "head.bias"}
    assert [type(o).__name__ for o in opt.inner] == ["AdamW", "Muon"]
    assert opt.param_groups[0]["lr"] == 1e-3 and opt.param_groups[1]["lr"] == 0.02


def test_muon_bare_parameters_route_by_shape_and_one_step_changes_both():
    model = toy()
    opt = MuonAdamW(model.parameters())
    routes = _routing(opt)
    matrices = {id(p) for p in model.parameters() if p.ndim == 2}
    assert routes["Muon"] == matrices
    assert routes["AdamW"] == {id(p) for p in model.parameters()} - matrices
    before = {id(p): p.detach().clone() for p in model.parameters()}
    opt.step(closure_for(model, opt))
    for p in model.parameters():
        assert not torch.equal(p, before[id(p)]), p.shape


# -- resume and schedules -------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(BUILDERS))
def test_state_dict_round_trip_gives_the_same_next_step(name):
    build = BUILDERS[name]
    model = toy()
    opt = build(model.parameters())
    for seed in range(2):
        opt.step(closure_for(model, opt, seed))
    buffer = io.BytesIO()
    torch.save(opt.state_dict(), buffer)  # what a checkpoint holds
    resumed = copy.deepcopy(model)
    fresh = build(resumed.parameters())
    buffer.seek(0)
    fresh.load_state_dict(torch.load(buffer, weights_only=True))
    opt.step(closure_for(model, opt, 5))
    fresh.step(closure_for(resumed, fresh, 5))
    for a, b in zip(model.parameters(), resumed.parameters(), strict=True):
        assert torch.equal(a, b)
    if isinstance(fresh, MuonAdamW):  # the loaded groups are the ones the inner optimizers use
        inner_groups = [g for inner in fresh.inner for g in inner.param_groups]
        assert all(a is b for a, b in zip(fresh.param_groups, inner_groups, strict=True))
        assert all(inner.state is fresh.state for inner in fresh.inner)


@pytest.mark.parametrize("name", list(BUILDERS))
def test_warmup_cosine_scales_every_group_and_the_inner_optimizers_follow(name):
    model = toy()
    opt = BUILDERS[name](model.parameters())
    base = [g["lr"] for g in opt.param_groups]
    warmup_cosine(opt, total_steps=100)  # 5 warm-up steps: the rate starts at 1/6
    for group, lr in zip(opt.param_groups, base, strict=True):
        assert group["lr"] == pytest.approx(lr / 6)
    for group in opt.param_groups:  # a rate of 0 must freeze every parameter, whichever optimizer
        group["lr"] = 0.0
    before = [p.detach().clone() for p in model.parameters()]
    opt.step(closure_for(model, opt))
    for p, old in zip(model.parameters(), before, strict=True):
        assert torch.equal(p, old)


# -- config errors --------------------------------------------------------------------------------
@pytest.mark.parametrize("cls, kwargs, message", [
    (ARS2Neo, {"rho": -1}, "optimizer.rho=-1 is out of range"),
    (ARS2Neo, {"lr": 0}, "optimizer.lr=0 is out of range"),
    (ARS2Neo, {"eps": "tiny"}, "optimizer.eps='tiny' is out of range"),
    (ARS2Neo, {"betas": (0.9, 1.0)}, r"optimizer.betas=\[0.9, 1.0\] is not allowed"),
    (ARS2Neo, {"weight_decay": -0.1}, "optimizer.weight_decay=-0.1"),
    (MuonAdamW, {"lr": -1}, "optimizer.lr=-1 is out of range"),
    (MuonAdamW, {"adamw_lr": 0.0}, "optimizer.adamw_lr=0.0 is out of range"),
    (MuonAdamW, {"momentum": 1.0}, r"optimizer.momentum=1.0 is out of range; allowed: \[0, 1\)"),
    (MuonAdamW, {"adjust_lr_fn": "fast"}, "optimizer.adjust_lr_fn='fast' is unknown; allowed: None"),
])
def test_bad_optimizer_values_are_one_line_config_errors(cls, kwargs, message):
    with pytest.raises(ConfigError, match=message) as info:
        cls(toy().parameters(), **kwargs)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("option, override, message", [
    ("ars2_neo", "optimizer.rho=-1", "optimizer.rho=-1 is not allowed; allowed: a number >= 0"),
    ("ars2_neo", "optimizer.eps=0", "optimizer.eps=0 is not allowed; allowed: a number > 0"),
    ("muon", "optimizer.adamw_lr=0", "optimizer.adamw_lr=0 is not allowed; allowed: a number > 0"),
    ("muon", "optimizer.adjust_lr_fn=fast", "optimizer.adjust_lr_fn='fast' is not allowed"),
])
def test_bad_composed_values_fail_validation(compose_cfg, option, override, message):
    with pytest.raises(ConfigError, match=message):
        validate_config(compose_cfg(f"optimizer={option}", override))


# -- inside the real module -----------------------------------------------------------------------
@pytest.mark.parametrize("scheduler", ["none", "warmup_cosine"])
@pytest.mark.parametrize("optimizer", ["adamw", "muon", "ars2_neo"])
def test_each_optimizer_trains_a_step_in_the_module(compose_cfg, optimizer, scheduler):
    cfg = compose_cfg(f"optimizer={optimizer}", f"scheduler={scheduler}", *TINY, "trainer.fast_dev_run=true")
    module, datamodule = build_module(cfg)
    before = {n: p.detach().clone() for n, p in module.named_parameters()}
    trainer = build_trainer(cfg)
    trainer.fit(module, datamodule=datamodule)
    assert math.isfinite(float(trainer.callback_metrics["train/loss"]))
    changed = {n for n, p in module.named_parameters() if not torch.equal(p.detach(), before[n])}
    assert any(n.startswith("model.block.") for n in changed)
    opt = trainer.optimizers[0]
    if optimizer == "muon":  # both inner optimizers moved their parameters
        for inner in opt.inner:
            ids = {id(p) for g in inner.param_groups for p in g["params"]}
            assert any(id(p) in ids for n, p in module.named_parameters() if n in changed)
    if scheduler == "warmup_cosine":  # the one step decayed every group's rate
        assert all(g["lr"] < g["initial_lr"] for g in opt.param_groups)
    else:
        assert all(g["lr"] == lr for g, lr in zip(opt.param_groups, _configured_lrs(cfg), strict=True))


def _configured_lrs(cfg) -> list[float]:
    if "adamw_lr" in cfg.optimizer:
        return [cfg.optimizer.adamw_lr, cfg.optimizer.lr]
    return [cfg.optimizer.lr]


@pytest.mark.parametrize("optimizer", ["muon", "ars2_neo"])
def test_lightning_checkpoint_resumes_the_optimizer_state(compose_cfg, tmp_path, optimizer):
    def fit(steps: int, ckpt: str | None = None):
        cfg = compose_cfg(f"optimizer={optimizer}", "scheduler=warmup_cosine", *TINY, "trainer.max_epochs=3",
                          f"+trainer.max_steps={steps}", "+trainer.limit_val_batches=0",
                          "trainer.enable_progress_bar=false")
        module, datamodule = build_module(cfg)
        trainer = build_trainer(cfg)
        trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt)
        return trainer

    fit(2).save_checkpoint(tmp_path / "two.ckpt")
    trainer = fit(3, str(tmp_path / "two.ckpt"))
    assert trainer.global_step == 3
    opt = trainer.optimizers[0]
    steps = {int(s["step"]) for s in opt.state.values() if "step" in s}
    assert steps == {3}  # two steps from the checkpoint, one after it
    if optimizer == "muon":  # the loaded groups and state are the ones the inner optimizers use
        inner_groups = [g for inner in opt.inner for g in inner.param_groups]
        assert all(a is b for a, b in zip(opt.param_groups, inner_groups, strict=True))
        assert all(inner.state is opt.state for inner in opt.inner)
        assert any("momentum_buffer" in s for s in opt.state.values())
