"""The difficulty curriculum: the training range starts easy, widens on mastery, survives a resume."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from helpers import TINY

from rds_act.build import build_module, build_trainer
from rds_act.data import ParityDataModule, RPCDataModule, SparseTransformDataModule
from rds_act.data.curriculum import Curriculum
from rds_act.errors import ConfigError

CURRICULUM = {"start": 2, "step": 3, "threshold": 0.8}


class FakeTrainer:
    current_epoch = 0


@pytest.mark.parametrize(
    "cls, top", [(RPCDataModule, 8), (SparseTransformDataModule, 8), (ParityDataModule, 48)]
)
def test_training_range_starts_easy_and_widens_on_mastery(cls, top):
    dm = cls(n_train=400, n_val=50, n_test=50, n_ood=50, seed=1, curriculum=CURRICULUM)
    dm.trainer = FakeTrainer()
    dm.setup()
    lo = dm.difficulty_range("train")[0]
    assert set(dm.data["train"].tensors["difficulty"].tolist()) == set(range(lo, 3))
    assert int(dm.data["val"].tensors["difficulty"].max()) > 2  # evaluation sees the full range
    assert not dm.promote(0.79)  # below the threshold: no change
    assert dm.level == 2
    assert dm.promote(0.8)
    assert dm.level == 5
    new = dm.train_dataloader().dataset.tensors["difficulty"]  # same epoch, new range: regenerated
    assert set(new.tolist()) == set(range(lo, 6))
    while dm.promote(1.0):
        pass
    assert dm.level == top and not dm.promote(1.0)  # capped at the task's own top difficulty


@pytest.mark.parametrize("batched", [True, False])
@pytest.mark.parametrize("cls", [RPCDataModule, ParityDataModule])
def test_mix_draws_that_share_from_the_whole_range_and_zero_leaves_the_stream(cls, batched):
    def train(mix):
        dm = cls(n_train=4000, n_val=50, n_test=50, n_ood=50, seed=1, batched=batched,
                 curriculum={**CURRICULUM, "mix": mix})
        return dm.make_split("train")["difficulty"]

    before = cls(n_train=4000, n_val=50, n_test=50, n_ood=50, seed=1, batched=batched,
                 curriculum=CURRICULUM).make_split("train")["difficulty"]
    assert torch.equal(train(0.0), before)  # mix 0: today's stream, sample for sample
    mixed = train(0.25)
    lo, hi = cls(seed=1).difficulty_range("train")
    above = (mixed > 2).float().mean().item()  # a whole-range draw lands above level 2 ...
    assert above == pytest.approx(0.25 * (hi - 2) / (hi - lo + 1), abs=0.025)
    assert int(mixed.max()) == hi and int(mixed.min()) == lo  # ... up to the top


def test_a_mixed_curriculum_promotes_on_the_samples_within_its_level(compose_cfg):
    """The samples drawn above the level are not yet learnt; counted, they would hold the
    curriculum back. The epoch's accuracy averages the rows within the level only."""
    cfg = compose_cfg("task=rpc", *TINY, "task.datamodule.curriculum.mix=0.5",
                      "task.datamodule.curriculum.start=1")
    L.seed_everything(0)
    module, dm = build_module(cfg)
    module.log = module.log_dict = lambda *args, **kwargs: None  # no trainer attached
    dm.trainer = FakeTrainer()
    dm.setup()
    batch = next(iter(dm.train_dataloader()))
    within = batch["difficulty"] <= 1
    assert 0 < int(within.sum()) < len(within)
    module.curriculum_level = 1  # what CurriculumStep sets at the epoch's start
    module.training_step(batch, 0)
    with torch.no_grad():
        final = module.stack(batch).correct[-1]
    assert float(module.train_acc["final"].compute()) == pytest.approx(float(final[within].float().mean()))


def test_training_with_a_mix_scores_each_epoch_at_its_own_level(compose_cfg):
    cfg = compose_cfg("task=rpc", *TINY, "trainer.max_epochs=3", "task.datamodule.curriculum.mix=0.3",
                      "task.datamodule.curriculum.threshold=0.0",
                      "task.datamodule.curriculum.start=1", "trainer.enable_progress_bar=false")
    L.seed_everything(0)
    module, datamodule = build_module(cfg)
    build_trainer(cfg).fit(module, datamodule=datamodule)
    assert datamodule.level == 4 and module.curriculum_level == 3  # the last epoch began at 3
    assert int(datamodule.data["train"].tensors["difficulty"].max()) > 3  # the mix reached above


def test_mix_is_refused_by_a_fixed_training_set():
    from rds_act.data.sudoku import SudokuDataModule

    with pytest.raises(ConfigError, match=r"curriculum.mix=0.2 is not supported by task=sudoku.*allowed: 0"):
        SudokuDataModule(size=4, curriculum={"start": 4, "mix": 0.2})


def test_curriculum_state_round_trips():
    dm = RPCDataModule(seed=0, curriculum=CURRICULUM)
    dm.promote(0.9)
    other = RPCDataModule(seed=0, curriculum=CURRICULUM)
    other.load_state_dict(dm.state_dict())
    assert other.level == dm.level == 5


def test_without_curriculum_the_full_range_is_drawn():
    dm = RPCDataModule(n_train=300, seed=0, curriculum=None)
    assert set(dm.make_split("train")["difficulty"].tolist()) == set(range(1, 9))
    assert not dm.promote(1.0) and dm.level is None and dm.state_dict() == {}


@pytest.mark.parametrize(
    "kwargs, message",
    [({"start": 0}, "curriculum.start=0"), ({"step": 1.5}, "curriculum.step=1.5"),
     ({"threshold": 1.2}, r"curriculum.threshold=1.2 must be a number in \[0, 1\]"),
     ({"mix": 1.0}, r"curriculum.mix=1.0 must be a number in \[0, 1\)")],
)
def test_bad_curriculum_values(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        Curriculum(**kwargs)


def test_bad_curriculum_type():
    with pytest.raises(ConfigError, match="curriculum=3 must be null or a mapping"):
        RPCDataModule(curriculum=3)


def test_training_promotes_and_logs_the_level(compose_cfg):
    """threshold 0: every epoch widens the range, and the level is logged per epoch."""
    cfg = compose_cfg("task=rpc", *TINY, "trainer.max_epochs=3",
                      "task.datamodule.curriculum.threshold=0.0",
                      "task.datamodule.curriculum.start=1", "trainer.enable_progress_bar=false")
    L.seed_everything(0)
    module, datamodule = build_module(cfg)
    build_trainer(cfg).fit(module, datamodule=datamodule)
    assert datamodule.level == 4
    assert float(module.trainer.callback_metrics["curriculum/level"]) == 4.0
    assert module.samples_seen == 3 * 64
    assert set(datamodule.data["train"].tensors["difficulty"].tolist()) <= {1, 2, 3}


def test_each_curriculum_metric_is_the_accuracy_at_its_own_step(compose_cfg):
    """``final`` scores the last step, ``oracle`` each sample's lowest-loss step t*, ``exit`` its
    exit: a loss at t* alone never trains the last step, so it needs ``oracle`` to promote."""
    cfg = compose_cfg("task=sparse_transform", *TINY, "task.loss.tol=2.0", "model.T_max=4",
                      "task.T_max=4", "task.ood_T_max=4")
    L.seed_everything(0)
    module, dm = build_module(cfg)
    module.log = module.log_dict = lambda *args, **kwargs: None  # no trainer attached
    dm.trainer = FakeTrainer()
    dm.setup()
    batch = next(iter(dm.train_dataloader()))
    module.training_step(batch, 0)
    with torch.no_grad():
        stack = module.stack(batch)
    t_star = stack.losses.argmin(0)
    oracle = stack.correct.gather(0, t_star[None])[0].float().mean()
    final = stack.correct[-1].float().mean()
    assert oracle != final  # this batch tells the two apart
    assert float(module.train_acc["oracle"].compute()) == pytest.approx(float(oracle))
    assert float(module.train_acc["final"].compute()) == pytest.approx(float(final))


@pytest.mark.parametrize("metric, ds_weight, warned", [
    ("final", 0.0, True), ("oracle", 0.0, False), ("final", 0.5, False)])
def test_a_curriculum_scored_at_a_step_the_loss_never_trains_is_warned(
        compose_cfg, caplog, metric, ds_weight, warned):
    cfg = compose_cfg("task=rpc", "act=better_plsd", f"act.ds_weight={ds_weight}",
                      f"task.datamodule.curriculum.metric={metric}")
    with caplog.at_level("WARNING", logger="rds_act.build"):
        build_module(cfg)
    assert ("curriculum.metric=final with act=better_plsd" in caplog.text) == warned
