"""Helpers shared by several test files (imported as ``helpers``; fixtures live in conftest.py)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from lightning.pytorch.callbacks import Callback

from rds_act.act import StepStack, first_exit
from rds_act.models.dyntrm import Unrolled

# overrides that shrink any task to a few seconds of CPU
TINY = [
    "task.datamodule.n_train=64", "task.datamodule.n_val=32", "task.datamodule.n_test=32",
    "task.datamodule.n_ood=32", "task.datamodule.batch_size=16", "task.datamodule.eval_batch_size=32",
    "model.d_model=32", "logger=none", "callbacks=none",
]


def make_stack(losses, correct=None, halt=None, cont=None, preds=None, task_loss=None) -> StepStack:
    """A hand-built ``StepStack`` from per-step losses ``[T][B]``: halt / continue logits default
    to 0, predictions to zeros over 3 classes, ``correct`` to ``loss < 0.5``."""
    losses = torch.tensor(losses, dtype=torch.float32)
    steps, n = losses.shape
    halt = torch.zeros(steps, n) if halt is None else torch.tensor(halt, dtype=torch.float32)
    cont = torch.zeros(steps, n) if cont is None else torch.tensor(cont, dtype=torch.float32)
    preds = torch.zeros(steps, n, 3) if preds is None else preds
    unrolled = Unrolled(preds, torch.stack([halt, cont], -1), torch.zeros(steps, n, 4))
    correct = losses < 0.5 if correct is None else torch.tensor(correct)
    return StepStack(unrolled, losses, correct, task_loss)


def run_cli(module: str, args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    """``python -m module *args`` in ``cwd``, output captured as text."""
    return subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True,
                          cwd=cwd, timeout=600)


def run_script(path: Path, args: list[str], capsys) -> tuple[int, str, str]:
    """``python path *args`` inside this process (``runpy`` as ``__main__``, argv patched): the
    script's own entry code without a second interpreter's start-up (~10 s with torch), for the
    bad-input cases whose one subprocess twin shows the same path from a shell. Returns
    (exit code, stdout, stderr)."""
    import runpy

    capsys.readouterr()
    saved = sys.argv, list(sys.path)
    sys.argv = [str(path), *args]
    sys.path.insert(0, str(Path(path).resolve().parent))  # as `python path` puts it first
    code = 0
    try:
        runpy.run_path(str(path), run_name="__main__")
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
    finally:
        sys.argv, sys.path[:] = saved
    out, err = capsys.readouterr()
    return code, out, err


def run_entry(module: str, args: list[str], capsys, cwd: Path) -> tuple[int, str, str]:
    """``python -m module *args`` inside this process, in ``cwd`` (``runpy`` as ``__main__``): the
    entry point's own code (pre-flight checks, Hydra's main, the one-line error wrapper) without a
    second interpreter's start-up. For the bad-input cases: each entry point keeps subprocess
    twins (``run_cli``) that show the same path from a shell. Returns (exit code, stdout, stderr)."""
    import runpy

    from hydra.core.global_hydra import GlobalHydra

    capsys.readouterr()
    saved = sys.argv, list(sys.path), os.getcwd()
    sys.argv = [module, *args]
    os.chdir(cwd)
    code = 0
    try:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
    finally:
        sys.argv, sys.path[:] = saved[0], saved[1]
        os.chdir(saved[2])
        GlobalHydra.instance().clear()
    out, err = capsys.readouterr()
    return code, out, err


def run_if(min_gpus: int = 0, min_cpus: int = 0) -> pytest.MarkDecorator:
    """Skip a test unless the machine has the hardware it needs (GPU and DDP tests): the skip
    reason names what is missing, so a CPU-only CI shows what it did not run."""
    gpus = torch.cuda.device_count()
    cpus = os.cpu_count() or 1
    missing = [f"{min_gpus} GPU(s), found {gpus}" for _ in [0] if gpus < min_gpus]
    missing += [f"{min_cpus} CPUs, found {cpus}" for _ in [0] if cpus < min_cpus]
    return pytest.mark.skipif(bool(missing), reason="needs " + "; ".join(missing))


class HaltAtOwnStep:
    """Exit rule: sample b halts at step (b % steps) + 1, so samples exit at different steps
    (its carry is the active rows' original indices, compacted with them)."""

    def __init__(self, steps: int):
        self.steps = steps

    def __call__(self, step, t, carry):
        idx = carry if carry is not None else torch.arange(step.pred.shape[0])
        return (idx % self.steps) + 1 == t, idx


def check_adaptive_matches_masked(
    model, batch: dict, steps: int
) -> tuple[torch.Tensor, torch.Tensor, Unrolled]:
    """Compacted per-sample halting (``adaptive_forward``) against the masked reference under
    ``HaltAtOwnStep(steps)``: the same exits, and each sample's prediction the unrolled one at its
    exit. Returns (pred, exits, the unrolled reference) for the caller's own checks."""
    rule = HaltAtOwnStep(steps)
    pred, exits = model.adaptive_forward(batch, rule)
    with torch.no_grad():
        unrolled = model.unroll(batch)
    ref = first_exit(unrolled, rule)
    assert torch.equal(exits, ref)
    rows = torch.arange(exits.shape[0])
    torch.testing.assert_close(pred, unrolled.preds[ref - 1, rows], atol=1e-5, rtol=1e-4)
    return pred, exits, unrolled




class SlowBatch(Callback):
    """A callback whose training batch ``at`` lasts ``seconds`` (a batch that outlasts a
    SIGTERM's grace), after writing ``marker`` so a test knows it is inside it."""

    def __init__(self, marker: str, at: int = 1, seconds: float = 600.0):
        self.marker, self.at, self.seconds = marker, at, seconds

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        if batch_idx == self.at:
            Path(self.marker).write_text("in the batch")
            time.sleep(self.seconds)
