"""Gradient clipping keeps the halting loss off a backbone that ``halt_grad=0`` keeps it off."""

from __future__ import annotations

from pathlib import Path

import torch
from helpers import TINY, run_entry


def _weights(run: Path) -> dict[str, torch.Tensor]:
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    return ckpt["state_dict"]


def test_with_halt_grad_0_the_halting_loss_leaves_the_backbone_as_it_is(tmp_path, capsys):
    """Two runs that differ only in the halting loss's weight: with ``task.halt_grad=0`` and a
    clip small enough to act on every step, the backbone ends bit for bit the same and only the
    halting head differs (one global norm over both made the backbone's step depend on it)."""
    tiny = [o for o in TINY if not o.startswith("callbacks=")]  # callbacks=default: last.ckpt
    runs = {}
    for weight in ("0.0", "5.0"):
        runs[weight] = tmp_path / f"w{weight}"
        code, _, err = run_entry("rds_act.train", [
            "task=parity", "act=plsd", *tiny, "task.halt_grad=0", f"act.halt_weight={weight}", "seed=0",
            "trainer.gradient_clip_val=0.01", "trainer.max_epochs=2", "test=false",
            f"hydra.run.dir={runs[weight]}"], capsys, tmp_path)
        assert code == 0, err
    a, b = _weights(runs["0.0"]), _weights(runs["5.0"])
    head = [k for k in a if ".halt_head." in k]
    assert head and any(not torch.equal(a[k], b[k]) for k in head)
    backbone = [k for k in a if k not in head]
    assert backbone and all(torch.equal(a[k], b[k]) for k in backbone), \
        [k for k in backbone if not torch.equal(a[k], b[k])][:3]
