"""Each ACT strategy on hand-built step stacks: loss values, targets, halting, bad input."""

from __future__ import annotations

import math

import pytest
import torch
from helpers import make_stack

from rds_act.act import (
    PLSD,
    ACTGraves,
    BetterPLSD,
    Overthink,
    Ponder,
    QLearning,
    StepStack,
    first_exit,
    first_stable_correct,
    oracle_step,
    tolerant_step,
)
from rds_act.act.act_graves import act_weights
from rds_act.act.ponder import halting_distribution, truncated_geometric
from rds_act.errors import ConfigError
from rds_act.losses import CrossEntropyLoss
from rds_act.models.dyntrm import Unrolled


def bce(x: float, y: float) -> float:
    """Binary cross-entropy of logit x against target y."""
    return math.log1p(math.exp(x)) - x * y


def sig(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def logit(p: float) -> float:
    return math.log(p / (1.0 - p))


# -- Q-learning ---------------------------------------------------------------------------------
# three steps (rows), two samples (columns)
Q_LOSSES = [[1.0, 2.0], [0.5, 1.5], [0.2, 1.0]]
Q_CORRECT = [[False, False], [True, False], [True, True]]
Q_HALT = [[-1.0, -2.0], [1.0, -1.0], [2.0, 0.0]]
Q_CONT = [[0.0, 0.0], [0.0, 0.0], [0.0, 1.0]]


def test_qlearning_loss_value_counts_only_steps_that_ran():
    stack = make_stack(Q_LOSSES, Q_CORRECT, Q_HALT, Q_CONT)
    strategy = QLearning(explore_prob=0.0, q_weight=0.5)
    # sample 0 halts at step 2 (q_halt 1 > q_cont 0); sample 1 never does, so it runs to 3
    assert strategy.training_exit(stack).tolist() == [2, 3]
    loss, logs = strategy.loss(stack, {})
    task = (1.0 + 0.5 + 2.0 + 1.5 + 1.0) / 5
    q_halt = (bce(-1, 0) + bce(1, 1) + bce(-2, 0) + bce(-1, 0) + bce(0, 1)) / 5
    q_cont = math.log(2.0)  # every continue logit at steps 1..2 is 0: BCE = log 2 for any target
    assert logs["task_loss"].item() == pytest.approx(task)
    assert logs["q_halt_loss"].item() == pytest.approx(q_halt, rel=1e-6)
    assert logs["q_continue_loss"].item() == pytest.approx(q_cont, rel=1e-6)
    assert logs["q_halt_acc"].item() == pytest.approx(4 / 5)  # q_halt=0 at (3, b1) is "wrong"
    assert loss.item() == pytest.approx(task + 0.5 * (q_halt + q_cont), rel=1e-6)


def test_qlearning_bce_targets_bootstrap_and_last_step_uses_halt_only():
    halt = [[0.0], [1.0], [-1.0]]
    cont = [[0.0], [2.0], [4.0]]
    stack = make_stack([[1.0], [1.0], [1.0]], halt=halt, cont=cont)
    targets = QLearning().continue_targets(stack)
    assert targets.shape == (2, 1)  # no continue target at the last step
    assert targets[0, 0].item() == pytest.approx(sig(2.0))  # max(q_halt_2, q_cont_2)
    assert targets[1, 0].item() == pytest.approx(sig(-1.0))  # step 3 is last: q_halt_3 only
    assert QLearning().halt_targets(make_stack(Q_LOSSES, Q_CORRECT)).tolist() == [
        [0.0, 0.0], [1.0, 0.0], [1.0, 1.0]]


def test_qlearning_targets_carry_no_grad():
    stack = make_stack(Q_LOSSES, Q_CORRECT, Q_HALT, Q_CONT)
    stack.unrolled.halt_logits.requires_grad_(True)
    stack.losses.requires_grad_(True)
    for target in ("bce", "adl"):
        strategy = QLearning(target=target, explore_prob=0.0)
        for value in (strategy.continue_targets(stack), strategy.halt_targets(stack)):
            assert not value.requires_grad and value.grad_fn is None
        loss, _ = strategy.loss(stack, {})
        loss.backward()  # the Q losses still train the logits
        assert stack.unrolled.halt_logits.grad.abs().sum() > 0


def test_qlearning_adl_targets_use_differential_reward():
    # r = (0, 3-1, 1-2) = (0, 2, -1)
    halt, cont = [[0.0], [0.5], [0.25]], [[0.0], [1.0], [9.0]]
    stack = make_stack([[3.0], [1.0], [2.0]], halt=halt, cont=cont)
    strategy = QLearning(target="adl", gamma=0.9, explore_prob=0.0)
    targets = strategy.continue_targets(stack)
    assert targets[0, 0].item() == pytest.approx(2.0 + 0.9 * 1.0)  # r_2 + γ max(0.5, 1.0)
    assert targets[1, 0].item() == pytest.approx(-1.0 + 0.9 * 0.25)  # r_3 + γ Q_halt_3
    assert strategy.halt_targets(stack).abs().sum() == 0
    # no step halts (q_halt - q_cont <= 0), so all three steps ran; MSE against the targets
    loss, logs = strategy.loss(stack, {})
    q_halt = (0.0 + 0.25 + 0.0625) / 3
    q_cont = ((0.0 - 2.9) ** 2 + (1.0 + 0.775) ** 2) / 2
    assert logs["q_halt_loss"].item() == pytest.approx(q_halt)
    assert logs["q_continue_loss"].item() == pytest.approx(q_cont, rel=1e-6)
    assert loss.item() == pytest.approx(2.0 + 0.5 * (q_halt + q_cont), rel=1e-6)


def test_qlearning_halting_rules():
    logits = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.5, -3.0], [2.0, 1.0]])
    assert QLearning().halts(logits).tolist() == [True, False, True, True]
    assert QLearning(use_continue=False).halts(logits).tolist() == [True, False, True, True]
    assert QLearning(use_continue=False).halts(torch.tensor([[0.0, -5.0]])).tolist() == [False]
    adl = QLearning(target="adl", margin=0.5)  # halt when q_halt - q_cont > 0.5
    assert adl.halts(logits).tolist() == [True, False, True, True]
    assert QLearning(target="adl", margin=1.0).halts(logits).tolist() == [False, False, True, False]
    # the default margin 0 is greedy: halt as soon as halting is worth more than continuing
    assert QLearning(target="adl").halts(logits).tolist() == [True, False, True, True]
    assert QLearning(target="adl", margin=-1.5).halts(logits).tolist() == [True, True, True, True]


def test_qlearning_without_continue_has_no_continue_loss():
    stack = make_stack(Q_LOSSES, Q_CORRECT, Q_HALT, Q_CONT)
    # halting on q_halt > 0: sample 0 at step 2, sample 1 never -> the same 5 steps ran
    loss, logs = QLearning(use_continue=False, explore_prob=0.0).loss(stack, {})
    assert logs["q_continue_loss"].item() == 0.0
    assert loss.item() == pytest.approx(logs["task_loss"].item() + 0.5 * logs["q_halt_loss"].item())


def test_qlearning_exploration_sets_a_random_minimum_step():
    n, steps = 400, 4
    halt = torch.full((steps, n), -5.0)
    halt[0], halt[2] = 5.0, 5.0  # halting fires at steps 1 and 3 only
    stack = make_stack([[1.0] * n] * steps, halt=halt.tolist())
    torch.manual_seed(0)
    assert QLearning(explore_prob=0.0).training_exit(stack).unique().tolist() == [1]
    exits = QLearning(explore_prob=1.0).training_exit(stack)
    # m in {2, 3} -> first halting step >= m is 3; m = 4 -> forced at T
    assert sorted(exits.unique().tolist()) == [3, 4]
    assert 0.2 < (exits == 4).float().mean() < 0.45  # P(m = 4) = 1/3
    mixed = QLearning(explore_prob=0.5).training_exit(stack)
    assert 0.35 < (mixed == 1).float().mean() < 0.65


@pytest.mark.parametrize("kwargs, message", [
    ({"explore_prob": 1.5}, r"act.explore_prob=1.5 is out of range; allowed: \[0.0, 1.0\]"),
    ({"target": "nope"}, "act.target='nope' is unknown; allowed: bce, adl"),
    ({"margin": float("nan")}, r"act.margin=nan is out of range; allowed: a finite number"),
    ({"margin": float("inf")}, r"act.margin=inf is out of range; allowed: a finite number"),
    ({"margin": "0.5"}, r"act.margin=0.5 is out of range; allowed: a finite number"),
    ({"gamma": 2.0}, r"act.gamma=2.0 is out of range"),
    ({"target": "adl", "use_continue": False}, "use_continue=false is only allowed"),
])
def test_qlearning_bad_input(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        QLearning(**kwargs)


# -- Better-PLSD --------------------------------------------------------------------------------
LOSSES = [[2.0, 1.0, 0.9],
          [1.0, 1.0, 0.3],
          [0.2, 1.0, 0.3],
          [0.4, 2.0, 0.1]]  # t* = 3, 1 (a tie over steps 1..3: earliest), 4


def test_better_plsd_loss_is_task_loss_at_own_t_star():
    loss, logs = BetterPLSD(halt_weight=0.5).loss(make_stack(LOSSES), {})
    task = (0.2 + 1.0 + 0.1) / 3
    assert logs["task_loss"].item() == pytest.approx(task)
    assert logs["halt_target_step"].item() == pytest.approx((3 + 1 + 4) / 3)
    assert loss.item() == pytest.approx(task + 0.5 * math.log(2.0), rel=1e-6)


def test_better_plsd_ds_weight_adds_mean_over_steps():
    loss, logs = BetterPLSD(ds_weight=0.5).loss(make_stack(LOSSES), {})
    mean = sum(sum(row) for row in LOSSES) / 12
    assert logs["task_loss"].item() == pytest.approx((0.2 + 1.0 + 0.1) / 3 + 0.5 * mean)


def test_tolerance_moves_the_halting_target_to_the_earliest_good_enough_step():
    # sample 2: best 0.1 at step 4, but 0.3 at step 2 is within 0.25 of it
    assert tolerant_step(torch.tensor(LOSSES), tolerance=0.25).tolist() == [3, 1, 2]
    assert tolerant_step(torch.tensor(LOSSES), tolerance=0.0).tolist() == [3, 1, 4]
    assert oracle_step(torch.tensor(LOSSES)).tolist() == [3, 1, 4]  # the metrics' t*: argmin only
    _, logs = PLSD(tolerance=0.25).loss(make_stack(LOSSES), {})
    assert logs["halt_target_step"].item() == pytest.approx((3 + 1 + 2) / 3)
    with pytest.raises(ConfigError, match="act.tolerance=-1"):
        PLSD(tolerance=-1)


def test_loss_right_never_targets_a_wrong_step_within_the_tolerance():
    """The halting collapse of parity seed 2: a two-class loss near 0.69 nats puts a step that is
    barely wrong within 0.1 of a later step that is barely right, and `loss` teaches it to stop
    there. `loss_right` keeps the tolerance among steps as right as the best one."""
    losses = [[0.70, 0.30, 0.72], [0.62, 0.29, 0.71], [0.61, 0.28, 0.70]]  # [T=3][B=3]
    correct = [[False, True, False], [True, True, False], [True, True, False]]
    stack = make_stack(losses, correct=correct)
    _, plain = PLSD(tolerance=0.1, halt_target="loss").loss(stack, {})
    _, right = PLSD(tolerance=0.1, halt_target="loss_right").loss(stack, {})
    # sample 0 is wrong at step 1 (0.70) and right from step 2: loss says 1, loss_right 2;
    # sample 1 is right throughout and sample 2 wrong throughout: the tolerance alone decides
    assert plain["halt_target_step"].item() == pytest.approx((1 + 1 + 1) / 3)
    assert right["halt_target_step"].item() == pytest.approx((2 + 1 + 1) / 3)


@pytest.mark.parametrize("cls", [PLSD, BetterPLSD, Overthink])
def test_unsolved_last_teaches_a_sample_no_step_solves_to_think_to_the_end(cls):
    """The halting collapse: a sample wrong at every step has about equal losses, so the tolerant
    argmin sends it to step 1, beside the samples step 1 solves. `unsolved=last` sends it to T."""
    losses = [[0.70, 0.30, 0.72], [0.62, 0.29, 0.69], [0.61, 0.28, 0.70]]  # [T=3][B=3]
    correct = [[False, True, False], [True, True, False], [True, True, False]]
    stack = make_stack(losses, correct=correct)
    kw = {"mode": "step_cost", "beta": 0.0} if cls is Overthink else {}
    _, argmin = cls(tolerance=0.1, **kw).loss(stack, {})
    _, last = cls(tolerance=0.1, unsolved="last", **kw).loss(stack, {})
    # sample 2 is wrong at every step: argmin 1, last 3; samples 0 and 1 keep their targets (1, 1)
    assert argmin["halt_target_step"].item() == pytest.approx((1 + 1 + 1) / 3)
    assert last["halt_target_step"].item() == pytest.approx((1 + 1 + 3) / 3)
    _, right = cls(tolerance=0.1, halt_target="loss_right", unsolved="last", **kw).loss(stack, {})
    assert right["halt_target_step"].item() == pytest.approx((2 + 1 + 3) / 3)
    with pytest.raises(ConfigError, match="act.unsolved='first' is unknown; allowed: argmin, last"):
        cls(unsolved="first")


def test_correct_halt_target_is_first_step_from_which_the_answer_stays_right():
    correct = torch.tensor([[False, True, True],
                            [True, False, True],
                            [True, True, True],
                            [True, False, True]])
    fallback = torch.tensor([7, 7, 7])
    # sample 0: right from step 2 on; sample 1: wrong at the last step -> fallback; sample 2: step 1
    assert first_stable_correct(correct, fallback).tolist() == [2, 7, 1]
    _, logs = PLSD(halt_target="correct").loss(make_stack(LOSSES, correct=correct.tolist()), {})
    # sample 1 is wrong at the last step: taught to think to the end (T = 4)
    assert logs["halt_target_step"].item() == pytest.approx((2 + 4 + 1) / 3)
    with pytest.raises(ConfigError, match="act.halt_target='nope' is unknown"):
        PLSD(halt_target="nope")


def test_better_plsd_targets_take_earliest_tie():
    # sample 1 ties over steps 1..3: t* = 1, so its target is 1 at every step
    halt = [[-5.0, 5.0, -5.0], [-5.0, 5.0, -5.0], [5.0, 5.0, -5.0], [5.0, 5.0, 5.0]]
    _, logs = BetterPLSD().loss(make_stack(LOSSES, halt=halt), {})
    assert logs["halt_acc"].item() == 1.0


def test_better_plsd_halts_above_threshold():
    step = make_stack([[1.0, 1.0]], halt=[[logit(0.6), logit(0.8)]]).unrolled.step(1)
    assert BetterPLSD(threshold=0.5).halt(step, 1)[0].tolist() == [True, True]
    assert BetterPLSD(threshold=0.7).halt(step, 1)[0].tolist() == [False, True]
    assert BetterPLSD(threshold=0.9).halt(step, 1)[0].tolist() == [False, False]
    assert BetterPLSD().threshold == 0.7 and Overthink().threshold == 0.7


def test_better_plsd_raising_threshold_never_exits_earlier():
    g = torch.Generator().manual_seed(0)
    halt = torch.randn(8, 300, generator=g) * 2
    stack = make_stack(torch.ones(8, 300).tolist(), halt=halt.tolist())
    exits = [first_exit(stack.unrolled, BetterPLSD(threshold=float(threshold)))
             for threshold in torch.linspace(0, 1, 11)]
    for earlier, later in zip(exits, exits[1:], strict=False):
        assert (later >= earlier).all()
    assert exits[-1].float().mean() > exits[0].float().mean()


@pytest.mark.parametrize("threshold", [-0.1, 1.5, float("nan")])
def test_better_plsd_bad_threshold(threshold):
    with pytest.raises(ConfigError, match=r"act.threshold=.* is out of range; allowed: \[0.0, 1.0\]"):
        BetterPLSD(threshold=threshold)


# -- Overthink ----------------------------------------------------------------------------------
SLOW = [[2.0], [0.5], [0.45], [0.4]]  # plain t* = 4, but steps 3 and 4 buy only 0.05 each


def test_overthink_privileged_penalty_is_zero_up_to_steps_required():
    strategy = Overthink(mode="privileged")
    penalty = strategy.step_penalty(5, {"steps_required": torch.tensor([2, 4])})
    assert penalty.T.tolist() == [[0, 0, 1, 2, 3], [0, 0, 0, 0, 1]]


@pytest.mark.parametrize("mode", ["privileged", "step_cost"])
def test_overthink_penalty_moves_t_star_earlier(mode):
    batch = {"steps_required": torch.tensor([2])}
    stack = make_stack(SLOW)
    assert Overthink(mode=mode, beta=0.0, warmup=0).halt_step(stack, batch).tolist() == [4]
    # privileged: curve (2, .5, .55, .6); step_cost: (2.1, .7, .75, .8) -> t* = 2 in both
    assert Overthink(mode=mode, beta=0.1, warmup=0).halt_step(stack, batch).tolist() == [2]


def test_overthink_ramp():
    strategy = Overthink(warmup=4)
    strategy.set_epoch(2)
    assert strategy.ramp() == 0.5
    strategy.set_epoch(10)
    assert strategy.ramp() == 1.0
    assert Overthink(warmup=0).ramp() == 1.0
    strategy.set_epoch(0)
    assert Overthink(warmup=4, beta=0.1).halt_step(make_stack(SLOW), {}).tolist() == [4]  # w = 0


def test_overthink_start_holds_the_cost_off():
    strategy = Overthink(warmup=4, start=10, beta=0.1)
    strategy.set_epoch(9)
    assert strategy.ramp() == 0.0
    assert strategy.halt_step(make_stack(SLOW), {}).tolist() == [4]  # as if beta were 0
    strategy.set_epoch(12)
    assert strategy.ramp() == 0.5
    strategy.set_epoch(14)
    assert strategy.ramp() == 1.0
    assert strategy.halt_step(make_stack(SLOW), {}).tolist() == [2]
    sudden = Overthink(warmup=0, start=3)
    sudden.set_epoch(2)
    assert sudden.ramp() == 0.0
    sudden.set_epoch(3)
    assert sudden.ramp() == 1.0


def test_overthink_loss_value():
    # halt logits 0 -> σ = 0.5; t* = 2 of T = 4 -> steps 2 and 3 count, 0.5 each
    stack = make_stack(SLOW)
    loss, logs = Overthink(mode="step_cost", beta=0.1, warmup=0, halt_weight=1.0).loss(
        stack, {})
    assert logs["overthink_penalty"].item() == pytest.approx(0.1 * 1.0)
    assert logs["task_loss"].item() == pytest.approx(0.5)
    assert loss.item() == pytest.approx(0.5 + math.log(2.0) + 0.1, rel=1e-6)
    # a head that halts confidently from t* on pays (almost) nothing
    sure = make_stack(SLOW, halt=[[-20.0], [20.0], [20.0], [20.0]])
    assert Overthink(beta=0.1, warmup=0).loss(sure, {})[1]["overthink_penalty"].item() < 1e-6


def test_overthink_bad_input():
    with pytest.raises(ConfigError, match="act.mode='nope' is unknown; allowed: step_cost, priv"):
        Overthink(mode="nope")
    with pytest.raises(ConfigError, match="act.beta=-1.0 is out of range; allowed: >= 0.0"):
        Overthink(beta=-1.0)
    with pytest.raises(ConfigError, match="act.warmup=-2 is out of range"):
        Overthink(warmup=-2)
    for start in (-1, 2.5, "3"):
        with pytest.raises(ConfigError, match=f"act.start={start!r} must be a whole epoch >= 0"):
            Overthink(start=start)
    with pytest.raises(ConfigError, match="act.threshold=2.0 is out of range"):
        Overthink(threshold=2.0)
    with pytest.raises(ConfigError, match="needs batch\\['steps_required'\\]"):
        Overthink(mode="privileged").loss(make_stack(SLOW), {})


# -- PonderNet ----------------------------------------------------------------------------------
def test_ponder_distribution_sums_to_one_with_remainder_at_last_step():
    p = halting_distribution(torch.zeros(3, 1))  # λ = 0.5 everywhere
    assert p[:, 0].tolist() == pytest.approx([0.5, 0.25, 0.25])
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 50, generator=g) * 3
    p = halting_distribution(logits)
    assert torch.allclose(p.sum(0), torch.ones(50))
    halt_prob = torch.sigmoid(logits)
    assert torch.allclose(p[-1], torch.prod(1 - halt_prob[:-1], 0))
    logits[-1] += 7.0  # λ_T itself never matters
    assert torch.allclose(halting_distribution(logits), p)


def test_ponder_loss_value():
    stack = make_stack([[1.0], [2.0], [4.0]])  # λ = 0.5 -> p = (0.5, 0.25, 0.25)
    loss, logs = Ponder(beta=0.1, lambda_p=0.5).loss(stack, {})
    task = 0.5 * 1 + 0.25 * 2 + 0.25 * 4
    prior = [0.5 / 0.875, 0.25 / 0.875, 0.125 / 0.875]
    kl = sum(p * math.log(p / q) for p, q in zip([0.5, 0.25, 0.25], prior, strict=True))
    assert logs["task_loss"].item() == pytest.approx(task)
    assert logs["ponder_kl"].item() == pytest.approx(kl, rel=1e-5)
    assert logs["expected_steps"].item() == pytest.approx(0.5 + 0.5 + 0.75)
    assert loss.item() == pytest.approx(task + 0.1 * kl, rel=1e-6)
    assert truncated_geometric(0.5, 3).tolist() == pytest.approx(prior)


def test_ponder_lambda_p_one_stays_finite():
    loss, _ = Ponder(lambda_p=1.0).loss(make_stack([[1.0], [2.0]]), {})
    assert torch.isfinite(loss)


def test_ponder_gradient_stays_finite_when_a_halting_unit_saturates():
    """σ(20) is 1.0 in float32, so every later p is exactly 0: the KL's p log p must not send
    log 0 into the gradient (it turned a parity run's weights NaN at epoch 8)."""
    halt = torch.tensor([[20.0, 0.0], [0.0, 40.0], [0.0, 0.0]], requires_grad=True)
    unrolled = Unrolled(torch.zeros(3, 2, 3), torch.stack([halt, torch.zeros(3, 2)], -1),
                        torch.zeros(3, 2, 4))
    stack = StepStack(unrolled, torch.tensor([[1.0, 1.0], [2.0, 2.0], [4.0, 4.0]]),
                      torch.zeros(3, 2, dtype=torch.bool), None)
    loss, _ = Ponder(beta=0.1).loss(stack, {})
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(halt.grad).all(), halt.grad


def test_ponder_cumulative_inference():
    # λ = 0.3 then 0.4: halting mass 0.3, then 1 - 0.7 * 0.6 = 0.58 > 0.5 -> exit at 2
    # sample 2: λ = 0.1 throughout -> 0.1, 0.19, 0.271 -> forced at 3
    halt = [[logit(0.3), logit(0.1)], [logit(0.4), logit(0.1)], [logit(0.9), logit(0.1)]]
    stack = make_stack([[1.0, 1.0]] * 3, halt=halt)
    strategy = Ponder()
    decision, carry = strategy.halt(stack.unrolled.step(1), 1, None)
    assert decision.tolist() == [False, False] and carry.tolist() == pytest.approx([0.7, 0.9])
    assert first_exit(stack.unrolled, strategy).tolist() == [2, 3]


def test_ponder_sample_inference_uses_lambda():
    stack = make_stack([[1.0, 1.0, 1.0]], halt=[[30.0, -30.0, 0.0]])
    torch.manual_seed(0)
    draws = torch.stack([Ponder(inference="sample").halt(stack.unrolled.step(1), 1)[0]
                         for _ in range(400)]).float().mean(0)
    assert draws[0] == 1.0 and draws[1] == 0.0 and 0.4 < draws[2] < 0.6


@pytest.mark.parametrize("kwargs, message", [
    ({"beta": -0.1}, "act.beta=-0.1 is out of range; allowed: >= 0.0"),
    ({"lambda_p": 0.0}, r"act.lambda_p=0.0 is out of range; allowed: \(0, 1\]"),
    ({"lambda_p": 1.5}, r"act.lambda_p=1.5 is out of range"),
    ({"inference": "argmax"}, "act.inference='argmax' is unknown; allowed: cumulative, sample"),
])
def test_ponder_bad_input(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        Ponder(**kwargs)


# -- Graves ACT ---------------------------------------------------------------------------------
H = [[0.3, 0.1], [0.5, 0.1], [0.4, 0.1], [0.9, 0.1]]  # sample 0 reaches 0.9 at step 3, 1 never
H_LOGITS = [[logit(h) for h in row] for row in H]


def test_act_graves_weights_and_remainder():
    weights, n, remainder = act_weights(torch.tensor(H_LOGITS), epsilon=0.1)
    assert n.tolist() == [3, 4]
    assert remainder.tolist() == pytest.approx([1 - 0.8, 1 - 0.3])
    assert weights.T.tolist()[0] == pytest.approx([0.3, 0.5, 0.2, 0.0])
    assert weights.T.tolist()[1] == pytest.approx([0.1, 0.1, 0.1, 0.7])
    assert torch.allclose(weights.sum(0), torch.ones(2))


def test_act_graves_ponder_cost_grad_flows_only_through_remainder():
    logits = torch.tensor(H_LOGITS, requires_grad=True)
    _, n, remainder = act_weights(logits, epsilon=0.1)
    (n + remainder).sum().backward()
    h = torch.tensor(H)
    expected = -h * (1 - h)  # dR/dlogit_t = -σ'(logit_t) for t < N, 0 from N on
    expected[2:, 0] = 0.0
    expected[3:, 1] = 0.0
    assert torch.allclose(logits.grad, expected, atol=1e-6)


def test_act_graves_loss_value():
    preds = torch.zeros(4, 2, 3)
    preds[:, 0, 0] = torch.tensor([1.0, 2.0, 3.0, 4.0])  # sample 0, class 0 logit per step
    preds[:, 1, 1] = torch.tensor([0.0, 0.0, 0.0, 10.0])  # sample 1, class 1 logit per step
    stack = make_stack([[1.0, 1.0]] * 4, halt=H_LOGITS, preds=preds, task_loss=CrossEntropyLoss())
    batch = {"y": torch.tensor([0, 2])}
    loss, logs = ACTGraves(epsilon=0.1, tau=0.01).loss(stack, batch)
    mix0 = 0.3 * 1 + 0.5 * 2 + 0.2 * 3  # mixed class-0 logit of sample 0 = 1.9
    mix1 = 0.7 * 10  # mixed class-1 logit of sample 1 = 7
    ce0 = -(mix0 - math.log(math.exp(mix0) + 2))
    ce1 = -(0.0 - math.log(math.exp(mix1) + 2))
    ponder = ((3 + 0.2) + (4 + 0.7)) / 2
    assert logs["task_loss"].item() == pytest.approx((ce0 + ce1) / 2, rel=1e-5)
    assert logs["ponder_cost"].item() == pytest.approx(ponder, rel=1e-6)
    assert logs["expected_steps"].item() == pytest.approx((1.9 + 3.4) / 2, rel=1e-6)
    assert loss.item() == pytest.approx((ce0 + ce1) / 2 + 0.01 * ponder, rel=1e-5)


def test_act_graves_eval_halting_matches_training_n():
    stack = make_stack([[1.0, 1.0]] * 4, halt=H_LOGITS)
    strategy = ACTGraves(epsilon=0.1)
    assert first_exit(stack.unrolled, strategy).tolist() == [3, 4]
    _, carry = strategy.halt(stack.unrolled.step(1), 1, None)
    assert carry.tolist() == pytest.approx([0.3, 0.1])


def test_act_graves_bad_input():
    for eps in (0.0, 1.0, -0.5):
        with pytest.raises(ConfigError, match=r"act.epsilon=.* is out of range; allowed: \(0, 1\)"):
            ACTGraves(epsilon=eps)
    with pytest.raises(ConfigError, match="act.tau=-1.0 is out of range"):
        ACTGraves(tau=-1.0)
    with pytest.raises(ConfigError, match="StepStack.task_loss must be set"):
        ACTGraves().loss(make_stack([[1.0]] * 3), {})


# -- shared -------------------------------------------------------------------------------------
@pytest.mark.parametrize("strategy", [
    QLearning(explore_prob=0.0), BetterPLSD(), Overthink(), Ponder(), ACTGraves(),
])
def test_every_strategy_logs_task_loss_as_detached_scalars(strategy):
    preds = torch.randn(4, 3, 5, requires_grad=True)
    losses = CrossEntropyLoss().loss(preds, {"y": torch.tensor([0, 1, 2])})
    halt = torch.randn(4, 3, 2, requires_grad=True)
    stack = StepStack(Unrolled(preds, halt, torch.zeros(4, 3, 4)), losses,
                      torch.zeros(4, 3, dtype=torch.bool), CrossEntropyLoss())
    loss, logs = strategy.loss(stack, {"y": torch.tensor([0, 1, 2])})
    assert "task_loss" in logs and loss.dim() == 0
    assert all(v.dim() == 0 and not v.requires_grad for v in logs.values())
    loss.backward()
    assert preds.grad.abs().sum() > 0 and halt.grad.abs().sum() > 0
