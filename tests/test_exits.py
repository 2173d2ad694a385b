"""Training-free exit rules at evaluation: choices, thresholds, carries, bad names."""

from __future__ import annotations

import math

import pytest
import torch

from rds_act.act import ACTGraves, BetterPLSD, Fixed, Ponder, StepStack, build_exit_rule, first_exit
from rds_act.act.exits import (
    AccelerationExit,
    EntropyExit,
    KLExit,
    OracleExit,
    RoutingExit,
    StabilityExit,
)
from rds_act.errors import ConfigError
from rds_act.models import DynTRM
from rds_act.models.dyntrm import Unrolled
from rds_act.models.layers import ClassReadout, PairTokenEncoder


def unrolled(preds=None, summaries=None, steps=3, n=2) -> Unrolled:
    preds = torch.zeros(steps, n, 4) if preds is None else preds
    summaries = torch.ones(steps, n, 2) if summaries is None else summaries
    steps, n = preds.shape[:2]
    return Unrolled(preds, torch.zeros(steps, n, 2), summaries)


def test_unknown_exit_names_value_and_choices():
    with pytest.raises(ConfigError, match="eval.exit_rule='nope' is unknown; allowed: halt_head, "
                                          "entropy, stability, kl, acceleration, routing, oracle, fixed"):
        build_exit_rule("nope", Fixed())


def test_halt_head_is_the_strategy_and_fixed_never_halts():
    strategy = BetterPLSD()
    assert build_exit_rule("halt_head", strategy) is strategy
    assert first_exit(unrolled(), build_exit_rule("fixed", strategy)).tolist() == [3, 3]


def test_default_and_explicit_thresholds():
    assert build_exit_rule("entropy", Fixed()).threshold == 0.5
    assert build_exit_rule("stability", Fixed()).threshold == 0.99
    assert build_exit_rule("stability", Fixed(), threshold=0.5).threshold == 0.5
    with pytest.raises(ConfigError, match="eval.threshold=0.3 does not apply to eval.exit_rule=oracle"):
        build_exit_rule("oracle", Fixed(), threshold=0.3)
    with pytest.raises(ConfigError, match=r"eval.threshold=-1.0 is out of range; allowed: >= 0.0"):
        build_exit_rule("entropy", Fixed(), threshold=-1.0)
    with pytest.raises(ConfigError, match=r"eval.threshold=2.0 is out of range; allowed: \[-1"):
        build_exit_rule("stability", Fixed(), threshold=2.0)


def test_entropy_exit():
    preds = torch.zeros(3, 2, 4)  # uniform: entropy log 4 = 1.39 nats
    preds[1, 0, 0] = 10.0  # sample 0 becomes confident at step 2
    preds[2, 1, 0] = 1.0  # sample 1 only slightly peaked at step 3
    rule = build_exit_rule("entropy", Fixed())
    assert first_exit(unrolled(preds), rule).tolist() == [2, 3]
    p = torch.softmax(torch.tensor([1.0, 0, 0, 0]), 0)
    entropy = -(p * p.log()).sum().item()  # about 1.17 nats
    assert rule(unrolled(preds).step(3), 3, None)[0].tolist() == [False, False]
    assert EntropyExit(entropy + 0.01)(unrolled(preds).step(3), 3, None)[0].tolist() == [
        False, True]
    assert math.log(4) > entropy


def test_entropy_exit_on_a_model_stops_each_sample_when_it_becomes_sure():
    """On a real DynTRM: each sample leaves at the first step whose own prediction's entropy is
    below the threshold, saving the later steps; a threshold above log C exits everything at
    step 1, and 0 (never sure) runs every sample to T_max."""
    torch.manual_seed(0)
    model = DynTRM(PairTokenEncoder(16, 32), ClassReadout(32, 16), d_model=32, n_heads=4, T_max=6).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(3.0)  # large weights: confidence differs from sample to sample and step to step
        g = torch.Generator().manual_seed(1)
        x = torch.randint(0, 16, (64, 9, 2), generator=g)
        batch = {"x": x, "y": torch.zeros(64, dtype=torch.long)}
        logp = torch.log_softmax(model.unroll(batch).preds, -1)
    entropy = -(logp.exp() * logp).sum(-1)  # [T, B]
    threshold = float(entropy.median())
    sure = entropy < threshold
    want = torch.where(sure.any(0), sure.float().argmax(0) + 1, torch.tensor(6))
    _, exits = model.adaptive_forward(batch, EntropyExit(threshold))
    assert torch.equal(exits, want) and 1 < exits.float().mean() < 6  # the rule decides, per sample
    assert model.adaptive_forward(batch, EntropyExit(math.log(16) + 1))[1].eq(1).all()
    assert model.adaptive_forward(batch, EntropyExit(0.0))[1].eq(6).all()


def test_entropy_averages_over_sequence_positions():
    preds = torch.zeros(2, 5, 4)  # [B, L, C]
    preds[0, :, 0] = 20.0
    preds[1, :2, 0] = 20.0  # only two of five positions confident: mean entropy ~0.83
    step = Unrolled(preds[None], torch.zeros(1, 2, 2), torch.zeros(1, 2, 2)).step(1)
    assert EntropyExit(0.5)(step, 1, None)[0].tolist() == [True, False]


def test_entropy_is_refused_for_regression():
    with pytest.raises(ConfigError, match="eval.exit_rule=entropy needs a predicted class "
                                          "distribution, but this task is regression"):
        build_exit_rule("entropy", Fixed(), task_kind="regression")


def test_stability_exit_compares_successive_summaries():
    summaries = torch.tensor([[[1.0, 0.0], [1.0, 0.0]],
                              [[1.0, 0.01], [0.0, 1.0]],  # cos 0.99995 vs cos 0
                              [[0.0, 1.0], [0.0, 1.0]]])
    rule = build_exit_rule("stability", Fixed())
    halt, carry = rule(unrolled(summaries=summaries).step(1), 1, None)
    assert halt.tolist() == [False, False]  # nothing to compare with at t = 1
    assert torch.equal(carry, summaries[0])  # per-sample rows, compactable
    assert first_exit(unrolled(summaries=summaries), rule).tolist() == [2, 3]
    assert first_exit(unrolled(summaries=summaries), StabilityExit(0.99999)).tolist() == [3, 3]


def test_oracle_exit_uses_the_whole_stack():
    losses = torch.tensor([[2.0, 1.0], [1.0, 1.0], [0.5, 2.0]])
    stack = StepStack(unrolled(), losses, losses < 1)
    rule = build_exit_rule("oracle", Fixed())
    assert isinstance(rule, OracleExit) and rule.exit_steps(stack).tolist() == [3, 1]
    with pytest.raises(ConfigError, match="eval.exit_rule=oracle needs every step's loss"):
        rule(stack.unrolled.step(1), 1, None)


@pytest.fixture(scope="module")
def model_and_batch():
    """A tiny DynTRM with large random weights, so that samples really exit at different steps."""
    torch.manual_seed(0)
    model = DynTRM(PairTokenEncoder(64, 16), ClassReadout(16, 64), d_model=16, n_heads=2, T_max=6)
    with torch.no_grad():
        for p in model.block.parameters():
            p.mul_(4.0)
        model.halt_head.weight.normal_(0, 2.0)
        model.halt_head.bias.fill_(-1.0)
    g = torch.Generator().manual_seed(1)
    x = torch.randint(0, 64, (16, 9, 2), generator=g)
    x[:, -1, 1] = 64
    return model.eval(), {"x": x, "y": torch.randint(0, 64, (16,), generator=g)}


@pytest.mark.parametrize("rule", [
    StabilityExit(0.95), Ponder(), ACTGraves(epsilon=0.3), EntropyExit(4.0), KLExit(0.05),
    AccelerationExit(0.3),
])
def test_carry_rules_agree_with_adaptive_compaction(model_and_batch, rule):
    """adaptive_forward drops finished rows from the carry; exits must match the masked loop."""
    model, batch = model_and_batch
    with torch.no_grad():
        masked = first_exit(model.unroll(batch), rule)
    _, adaptive = model.adaptive_forward(batch, rule)
    assert torch.equal(masked, adaptive)
    assert len(masked.unique()) > 1  # samples really leave at different steps


def sure_model():
    """A DynTRM with large random weights: confidence and state moves differ per sample and step."""
    torch.manual_seed(0)
    model = DynTRM(PairTokenEncoder(16, 32), ClassReadout(32, 16), d_model=32, n_heads=4, T_max=6).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(3.0)
    g = torch.Generator().manual_seed(1)
    return model, {"x": torch.randint(0, 16, (64, 9, 2), generator=g), "y": torch.zeros(64, dtype=torch.long)}


def first_true(flags: torch.Tensor, steps: int) -> torch.Tensor:
    """1-based first step where ``flags [T, B]`` holds, else ``steps``."""
    return torch.where(flags.any(0), flags.float().argmax(0) + 1, torch.tensor(steps))


def test_kl_exit_on_a_model_stops_when_successive_predictions_agree():
    """Huginn's rule on a real DynTRM: each sample leaves at the first step t >= 2 whose
    KL(p_t || p_{t-1}) is below the threshold (computed here by hand from the unrolled steps)."""
    model, batch = sure_model()
    with torch.no_grad():
        logp = torch.log_softmax(model.unroll(batch).preds, -1)  # [T, B, C]
    kl = (logp[1:].exp() * (logp[1:] - logp[:-1])).sum(-1)  # [T-1, B]: steps 2..T
    threshold = float(kl.median())
    want = first_true(torch.cat([torch.zeros(1, 64, dtype=torch.bool), kl < threshold]), 6)
    _, exits = model.adaptive_forward(batch, KLExit(threshold))
    assert torch.equal(exits, want) and 2 <= exits.min() and exits.float().mean() < 6
    assert len(exits.unique()) > 1
    assert model.adaptive_forward(batch, KLExit(0.0))[1].eq(6).all()  # KL is never below 0
    assert build_exit_rule("kl", Fixed()).threshold == 5e-4  # Huginn's


def test_acceleration_exit_on_a_model_stops_when_the_step_size_settles():
    """Pappone's second-order rule on a real DynTRM: with s_t the pooled state's move at step t,
    a sample leaves at the first t >= 3 with |s_t - s_{t-1}| < threshold * s_{t-1}."""
    model, batch = sure_model()
    with torch.no_grad():
        summaries = model.unroll(batch).summaries.float()  # [T, B, d]
    size = (summaries[1:] - summaries[:-1]).norm(dim=-1)  # s_2..s_T
    ratio = (size[1:] - size[:-1]).abs() / size[:-1]  # for t = 3..T
    threshold = float(ratio.median())
    never = torch.zeros(2, 64, dtype=torch.bool)
    want = first_true(torch.cat([never, ratio < threshold]), 6)
    _, exits = model.adaptive_forward(batch, AccelerationExit(threshold))
    assert torch.equal(exits, want) and 3 <= exits.min() and len(exits.unique()) > 1
    assert model.adaptive_forward(batch, AccelerationExit(0.0))[1].eq(6).all()


def test_kl_is_refused_for_regression_and_thresholds_are_checked():
    with pytest.raises(ConfigError, match="eval.exit_rule=kl needs a predicted class distribution"):
        build_exit_rule("kl", Fixed(), task_kind="regression")
    with pytest.raises(ConfigError, match="eval.threshold=-1"):
        build_exit_rule("acceleration", Fixed(), threshold=-1.0)


def test_routing_exit_on_an_expert_model_stops_when_its_routing_turns_sparse():
    """The activation-sparsity rule on a real dyntrm_moe: each sample leaves at the first step
    whose mean router entropy over its tokens (computed here from the router by hand) is below
    the threshold; the compacted path agrees; a dense model is one error line."""
    torch.manual_seed(0)
    model = DynTRM(PairTokenEncoder(16, 32), ClassReadout(32, 16), d_model=32, n_heads=4, T_max=6,
                   num_experts=4, top_k=1).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(3.0)
    g = torch.Generator().manual_seed(1)
    batch = {"x": torch.randint(0, 16, (64, 9, 2), generator=g)}
    logits, state = [], model.init_state(batch)
    hook = model.experts.router.register_forward_hook(lambda m, i, o: logits.append(o))
    with torch.no_grad():
        for _ in range(6):  # one router call per step: the library is the block's one MLP
            state = model.step(state).state
        hook.remove()
        probs = torch.softmax(torch.stack(logits).float(), -1)  # [T, B * L, E]
        entropy = (-(probs * probs.log()).sum(-1)).view(6, 64, -1).mean(2)  # [T, B]
        unrolled = model.unroll(batch)
    torch.testing.assert_close(unrolled.router_entropy, entropy)
    assert entropy.max() <= math.log(4) + 1e-5
    threshold = float(entropy.median())
    want = first_true(entropy < threshold, 6)
    assert torch.equal(first_exit(unrolled, RoutingExit(threshold)), want)
    _, exits = model.adaptive_forward(batch, RoutingExit(threshold))
    assert torch.equal(exits, want) and len(exits.unique()) > 1
    assert model.adaptive_forward(batch, RoutingExit(0.0))[1].eq(6).all()
    assert build_exit_rule("routing", Fixed()).threshold == 0.1
    dense, dense_batch = sure_model()
    with pytest.raises(ConfigError, match="eval.exit_rule=routing reads the expert library's routing"):
        dense.adaptive_forward(dense_batch, RoutingExit(0.5))
