"""Prefetching the next epoch's fresh samples: the same samples as generating them in-process,
and a run with it ends with the same metrics as one without (rds_act/data/base.py)."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch
from helpers import TINY, run_cli

from rds_act.data import RPCDataModule
from rds_act.data.base import Prefetch

pytestmark = pytest.mark.skipif(not Prefetch.available(), reason="no fork start method here")


def epochs_of(dm, n: int) -> list[dict]:
    out = []
    for epoch in range(n):
        dm.trainer = SimpleNamespace(current_epoch=epoch, max_epochs=n,
                                     reload_dataloaders_every_n_epochs=1)
        dm.train_dataloader()
        out.append(dict(dm.data["train"].tensors))
    return out


def test_prefetched_epochs_are_the_samples_made_in_process():
    with_it = RPCDataModule(n_train=64, n_val=8, n_test=8, n_ood=8, prefetch=True)
    without = RPCDataModule(n_train=64, n_val=8, n_test=8, n_ood=8, prefetch=False)
    assert with_it.prefetch is not None and without.prefetch is None
    taken, take = [], with_it.prefetch.take
    with_it.prefetch.take = lambda key: taken.append(take(key)) or taken[-1]
    a, b = epochs_of(with_it, 3), epochs_of(without, 3)
    assert taken[0] is None and all(t is not None for t in taken[1:])  # epochs 1, 2 prefetched
    for x, y in zip(a, b, strict=True):
        assert x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)
    assert not torch.equal(a[0]["index"], a[1]["index"])  # fresh samples each epoch
    assert with_it.prefetch.proc is None  # nothing left running after the last epoch


def test_a_stale_prefetch_is_dropped_even_while_it_writes_a_large_split():
    """A promotion makes the prefetched level stale: the worker, blocked writing a split larger
    than the pipe holds, is ended and the datamodule goes on (it used to wait on it for good)."""
    import signal
    import time

    dm = RPCDataModule(n_train=4000, n_val=8, n_test=8, n_ood=8, prefetch=True)
    # as under Lightning, whose handler only flags a SIGTERM: the fork inherits it
    old = signal.signal(signal.SIGTERM, lambda *_: None)
    try:
        dm.prefetch.start((1, 2), lambda: dm.make_split("train", 4000, 4000))
    finally:
        signal.signal(signal.SIGTERM, old)
    time.sleep(3)  # let it finish generating and block on the full pipe
    start = time.perf_counter()
    assert dm.prefetch.take((1, 3)) is None
    assert time.perf_counter() - start < 10 and dm.prefetch.proc is None


def test_a_run_with_prefetch_ends_where_one_without_does(tmp_path):
    """Through rds-act-train: task.datamodule.prefetch=false gives the same metrics."""
    base = [*TINY, "trainer.max_epochs=3", "trainer.enable_progress_bar=false", "test=false"]
    got = {}
    for flag in ("true", "false"):
        run = tmp_path / flag
        proc = run_cli("rds_act.train", [*base, f"task.datamodule.prefetch={flag}",
                                         f"hydra.run.dir={run}"], tmp_path)
        assert proc.returncode == 0, proc.stderr[-2000:]
        got[flag] = json.loads((run / "metrics.json").read_text())
    for key in ("val/acc", "val/loss", "val/avg_exit", "ood/acc", "train/samples"):
        assert got["true"][key] == got["false"][key], key
