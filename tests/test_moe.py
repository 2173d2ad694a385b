"""model=dyntrm_moe: one expert library routed per token, shared by every recursive step."""

from __future__ import annotations

import math

import pytest
import torch
from helpers import TINY

from rds_act.build import build_module, build_trainer
from rds_act.callbacks import StepDashboards
from rds_act.errors import ConfigError
from rds_act.models import DynTRM
from rds_act.models.layers import MLP, ClassReadout, PairTokenEncoder
from rds_act.models.moe import ExpertLibrary


def make_model(**kwargs) -> DynTRM:
    torch.manual_seed(0)
    return DynTRM(PairTokenEncoder(64, 32), ClassReadout(32, 64), d_model=32, n_heads=4, T_max=4, **kwargs)


def batch(n: int = 6) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    x = torch.randint(0, 64, (n, 9, 2), generator=g)
    x[:, -1, 1] = 64
    return {"x": x}


@pytest.mark.parametrize("top_k", [4, 2])
def test_identical_experts_equal_the_dense_mlp(top_k):
    """top_k = E: the full softmax mix of one MLP; top_k < E: the top-k weights renormalised to 1."""
    torch.manual_seed(0)
    dense = MLP(16, 2.0)
    library = ExpertLibrary(16, num_experts=4, top_k=top_k, mlp_ratio=2.0)
    for expert in library.experts:
        expert.load_state_dict(dense.state_dict())
    x = torch.randn(3, 5, 16)
    torch.testing.assert_close(library(x)[0], dense(x), atol=1e-5, rtol=0)


def test_routing_is_per_token():
    torch.manual_seed(0)
    library = ExpertLibrary(16, num_experts=4, top_k=2)
    x = torch.randn(2, 5, 16)
    _, before, _ = library.route(x.view(-1, 16))
    out, _ = library(x)
    changed = x.clone()
    # token (1, 2) points hard at the experts the router scores lowest for it: its top-2 must change
    changed[1, 2] = -8 * library.router.weight[before[7]].sum(0)
    _, after, _ = library.route(changed.view(-1, 16))
    new_out, _ = library(changed)
    others = torch.ones(2, 5, dtype=torch.bool)
    others[1, 2] = False
    assert not torch.equal(after[7], before[7])
    assert torch.equal(after[others.view(-1)], before[others.view(-1)])
    # the other tokens' outputs: equal up to rounding (an expert's matmul sees a different row set)
    torch.testing.assert_close(new_out[others], out[others], atol=1e-6, rtol=0)
    assert not torch.allclose(new_out[1, 2], out[1, 2])


def one_hot_library(num_experts: int = 4) -> ExpertLibrary:
    """A router that sends the one-hot token e to expert e with probability 1."""
    library = ExpertLibrary(num_experts, num_experts=num_experts, top_k=1)
    with torch.no_grad():
        library.router.weight.copy_(torch.eye(num_experts) * 1000.0)
        library.router.bias.zero_()
    return library


def test_balance_loss_is_one_when_uniform_and_larger_when_collapsed():
    library = one_hot_library()
    _, routing = library(torch.eye(4).repeat(8, 1))  # every expert gets a quarter of the tokens
    assert float(routing.balance_loss) == pytest.approx(1.0)
    torch.testing.assert_close(routing.usage, torch.full((4,), 0.25))
    _, routing = library(torch.eye(4)[[2]].repeat(32, 1))  # every token to expert 2
    assert float(routing.balance_loss) == pytest.approx(4.0)
    torch.testing.assert_close(routing.usage, torch.tensor([0.0, 0.0, 1.0, 0.0]))
    assert not [k for k in vars(library) if k.startswith("last_")]  # nothing left on the module


def test_balance_loss_trains_the_router():
    torch.manual_seed(0)
    library = ExpertLibrary(16, num_experts=4, top_k=2)
    _, routing = library(torch.randn(4, 6, 16))
    routing.balance_loss.backward()
    assert library.router.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in library.experts.parameters())


def test_dense_model_is_unchanged():
    """num_experts=0 is today's model: same parameters, same outputs, nothing extra."""
    base, dense = make_model(), make_model(num_experts=0, top_k=3, balance_weight=0.5)
    assert isinstance(dense.block.mlp, MLP) and dense.experts is None
    assert list(base.state_dict()) == list(dense.state_dict())
    a, b = base.unroll(batch()), dense.unroll(batch())
    assert torch.equal(a.preds, b.preds) and torch.equal(a.halt_logits, b.halt_logits)
    assert b.balance_loss is None and b.expert_usage is None


def test_one_library_shared_by_every_step():
    model = make_model(num_experts=3, top_k=2)
    one_mlp = sum(p.numel() for p in MLP(32).parameters())
    router = 32 * 3 + 3
    expert_params = {n: p for n, p in model.named_parameters() if "experts." in n}
    assert sum(p.numel() for p in expert_params.values()) == 3 * one_mlp
    assert {n.split(".")[3] for n in expert_params} == {"0", "1", "2"}  # block.mlp.experts.<e>.
    assert sum(p.numel() for p in model.block.mlp.parameters()) == 3 * one_mlp + router
    assert not any("experts" in n for n, _ in model.named_parameters() if not n.startswith("block.mlp."))
    out = model.unroll(batch(), steps=6)  # more steps than T_max: still the same library
    assert out.expert_usage.shape == (6, 3)
    torch.testing.assert_close(out.expert_usage.sum(1), torch.ones(6))
    # the unroll's balance loss is the mean of its steps' losses
    state, per_step = model.init_state(batch()), []
    for _ in range(6):
        step = model.step(state)
        state = step.state
        per_step.append(step.routing.balance_loss)
    torch.testing.assert_close(out.balance_loss, torch.stack(per_step).mean())


def test_balance_loss_backprops_under_activation_checkpointing():
    plain, ckpt = make_model(num_experts=4, top_k=1), make_model(num_experts=4, top_k=1,
                                                                  activation_checkpointing=True)
    for model in (plain, ckpt):
        model.unroll(batch()).balance_loss.backward()
    torch.testing.assert_close(ckpt.experts.router.weight.grad, plain.experts.router.weight.grad)
    assert plain.experts.router.weight.grad.abs().sum() > 0



def test_adaptive_forward_matches_the_unroll():
    """No expert capacity: running only the still-active rows routes them as the full batch did."""
    model = make_model(num_experts=4, top_k=2).eval()

    def halt_at_own_step(step, t, carry):  # sample b halts at step b % 4 + 1
        idx = carry if carry is not None else torch.arange(step.pred.shape[0])
        return idx % 4 + 1 == t, idx

    pred, exits = model.adaptive_forward(batch(8), halt_at_own_step)
    with torch.no_grad():
        ref = model.unroll(batch(8)).preds[exits - 1, torch.arange(8)]
    assert exits.tolist() == [1, 2, 3, 4] * 2
    torch.testing.assert_close(pred, ref, atol=1e-5, rtol=1e-4)

@pytest.mark.parametrize("kwargs, message", [
    ({"num_experts": 4, "top_k": 5}, "model.top_k=5 must be <= model.num_experts=4"),
    ({"num_experts": 4, "top_k": 0}, "model.top_k=0 must be >= 1"),
    ({"num_experts": -1}, r"model.num_experts=-1 must be >= 0 \(0 = a dense MLP\)"),
    ({"num_experts": 2, "balance_weight": -1.0}, r"model.balance_weight=-1.0 is out of range; allowed: >= 0"),
])
def test_bad_values_are_one_line_errors(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        make_model(**kwargs)


def test_library_needs_an_expert():
    with pytest.raises(ConfigError, match="model.num_experts=0 must be >= 1 for an expert library"):
        ExpertLibrary(16, num_experts=0)


DASHBOARDS = [o if o != "callbacks=none" else "callbacks=dashboards" for o in TINY]


def test_dyntrm_moe_fits_and_logs_balance_and_usage(compose_cfg):
    cfg = compose_cfg("model=dyntrm_moe", *DASHBOARDS, "trainer.fast_dev_run=true")
    module, datamodule = build_module(cfg)
    assert module.model.experts is not None and module.model.balance_weight == 0.01
    trainer = build_trainer(cfg)
    trainer.fit(module, datamodule=datamodule)
    balance = float(trainer.callback_metrics["train/balance_loss"])
    assert math.isfinite(balance) and balance >= 0.0
    trainer.validate(module, datamodule=datamodule, verbose=False)
    logged = trainer.callback_metrics
    steps, experts = cfg.task.T_max, cfg.model.num_experts
    for t in range(1, steps + 1):
        usage = [float(logged[f"val_curve/expert_usage_t{t:02d}_e{e}"]) for e in range(experts)]
        assert all(0.0 <= u <= 1.0 for u in usage)
        assert sum(usage) == pytest.approx(1.0)
    assert not any(k.startswith("val_curve/expert_usage") and k.endswith(f"_e{experts}") for k in logged)



def test_the_module_adds_the_weighted_balance_loss(compose_cfg):
    """Same first batch, same initial weights: the training losses differ by weight x balance."""
    logged = {}
    for weight in (0.0, 10.0):
        cfg = compose_cfg("model=dyntrm_moe", *TINY, "trainer.fast_dev_run=true",
                          "+trainer.limit_val_batches=0", f"model.balance_weight={weight}")
        torch.manual_seed(0)
        module, datamodule = build_module(cfg)
        trainer = build_trainer(cfg)
        trainer.fit(module, datamodule=datamodule)
        logged[weight] = {k: float(v) for k, v in trainer.callback_metrics.items()}
    balance = logged[10.0]["train/balance_loss"]
    assert balance == pytest.approx(logged[0.0]["train/balance_loss"])
    assert logged[10.0]["train/loss"] - logged[0.0]["train/loss"] == pytest.approx(10.0 * balance, rel=1e-4)

def test_dense_model_logs_nothing_new(compose_cfg):
    cfg = compose_cfg(*DASHBOARDS, "trainer.fast_dev_run=true")
    module, datamodule = build_module(cfg)
    trainer = build_trainer(cfg)
    dashboards = next(c for c in trainer.callbacks if isinstance(c, StepDashboards))
    trainer.fit(module, datamodule=datamodule)
    trainer.validate(module, datamodule=datamodule, verbose=False)
    assert dashboards.usage is None
    assert any(k.startswith("val_curve/acc_t") for k in trainer.callback_metrics)
    assert not any("balance" in k or "expert" in k for k in trainer.callback_metrics)


def test_top1_routing_lets_the_task_loss_train_the_router():
    """With k = 1 the expert's output is scaled by its router probability (Switch-style): the task
    loss alone (no balance term) sends a gradient to the router."""
    from rds_act.models.moe import ExpertLibrary

    torch.manual_seed(0)
    library = ExpertLibrary(16, num_experts=4, top_k=1)
    library(torch.randn(2, 5, 16))[0].pow(2).sum().backward()
    assert library.router.weight.grad is not None and library.router.weight.grad.abs().sum() > 0
