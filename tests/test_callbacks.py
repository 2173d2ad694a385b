"""Optional callbacks: callbacks=ema validates, checkpoints and tests with averaged weights."""

from __future__ import annotations

import torch
from helpers import TINY

from rds_act.build import build_module, build_trainer


def test_ema_callback_validates_and_saves_the_averaged_weights(compose_cfg, tmp_path):
    overrides = [a for a in TINY if not a.startswith("callbacks")]
    cfg = compose_cfg(*overrides, "callbacks=ema", "callbacks.ema.decay=0.9", "trainer.max_epochs=2",
                      "trainer.enable_progress_bar=false")
    module, datamodule = build_module(cfg)
    trainer = build_trainer(cfg)
    ema = next(cb for cb in trainer.callbacks if type(cb).__name__ == "EMAWeightAveraging")
    trainer.fit(module, datamodule=datamodule)
    averaged = dict(ema._average_model.module.named_parameters())
    for name, param in module.named_parameters():  # training ends on the averaged weights
        torch.testing.assert_close(param, averaged[name])
    ckpt = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=False)
    assert "current_model_state" in ckpt  # the raw weights, for resuming
    raw, saved = ckpt["current_model_state"], ckpt["state_dict"]
    moved = [k for k in saved if saved[k].is_floating_point() and not torch.equal(saved[k], raw[k])]
    assert moved, "the checkpoint holds the raw weights, not the average"
    for name in moved:
        torch.testing.assert_close(saved[name], averaged[name])


def test_last_checkpoint_is_the_newest_epoch_not_the_best(compose_cfg, tmp_path):
    """last.ckpt is what a resume continues from: it must hold the final epoch even when the
    monitored val/loss stopped improving (Lightning's own save_last copy follows the best one).
    Monitoring the epoch number in min mode makes epoch 0 the only "best" here."""
    overrides = [a for a in TINY if not a.startswith("callbacks")]
    cfg = compose_cfg(*overrides, "trainer.max_epochs=3", "trainer.enable_progress_bar=false",
                      "callbacks.model_checkpoint.monitor=epoch")
    module, datamodule = build_module(cfg)
    trainer = build_trainer(cfg)
    trainer.fit(module, datamodule=datamodule)
    checkpoints = tmp_path / "checkpoints"
    assert sorted(p.name for p in checkpoints.iterdir()) == ["epoch000.ckpt", "last.ckpt"]
    assert torch.load(checkpoints / "epoch000.ckpt", weights_only=False)["epoch"] == 0
    assert torch.load(checkpoints / "last.ckpt", weights_only=False)["epoch"] == 2
    assert trainer.checkpoint_callback.best_model_path.endswith("epoch000.ckpt")
