"""Peak memory of one training step vs T_max, backpropagating through all steps or the last k.

    python scripts/bench_memory.py [task=rpc] [model.d_model=64] ...

Each configuration runs in a fresh subprocess; on CPU the figure is the rise of the process's peak
RSS during one forward + backward, on CUDA ``torch.cuda.max_memory_allocated``. With
``grad_steps=1`` memory should stay flat as T_max grows; with all steps it grows linearly.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys

import torch
from _common import build, compose_from_argv, run_main

from rds_act.errors import ConfigError

T_VALUES, BATCH = (4, 8, 16, 32), 512


def child() -> None:
    steps, grad_steps = int(os.environ["BENCH_T"]), os.environ["BENCH_K"]
    cfg = compose_from_argv([f"task.T_max={steps}", f"task.ood_T_max={steps}",
                             f"model.grad_steps={grad_steps}", f"task.datamodule.n_train={BATCH}",
                             f"task.datamodule.batch_size={BATCH}", "task.datamodule.n_val=1",
                             "task.datamodule.n_test=1", "task.datamodule.n_ood=1"])
    module, dm = build(cfg)
    dm.setup()
    cuda = torch.cuda.is_available()
    dev = torch.device("cuda" if cuda else "cpu")
    module = module.to(dev).train()
    batch = {k: v.to(dev) for k, v in next(iter(dm.train_dataloader())).items()}
    if cuda:
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    loss, _ = module.act.loss(module.stack(batch), batch)
    loss.backward()
    peak = torch.cuda.max_memory_allocated() if cuda else resource.getrusage(
        resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"mib": (peak - base) / 2**20}))


def main() -> None:
    build(compose_from_argv())  # bad input is one error line before any table is printed
    print(f"device={'cuda' if torch.cuda.is_available() else 'cpu'} batch={BATCH}")
    print(f"{'T_max':>6} {'all steps (MiB)':>16} {'last 1 (MiB)':>13}")
    for steps in T_VALUES:
        row = []
        for k in ("null", "1"):
            env = {**os.environ, "BENCH_T": str(steps), "BENCH_K": k}
            proc = subprocess.run([sys.executable, __file__, *sys.argv[1:]], env=env, text=True,
                                  capture_output=True)
            if proc.returncode == 2:  # the child's one-line report of bad input
                raise ConfigError(proc.stderr.strip().splitlines()[-1].removeprefix("error: "))
            if proc.returncode:
                raise RuntimeError(f"T_max={steps} failed:\n{proc.stderr[-2000:]}")
            row.append(json.loads(proc.stdout.strip().splitlines()[-1])["mib"])
        print(f"{steps:>6} {row[0]:>16.1f} {row[1]:>13.1f}")


if __name__ == "__main__":
    run_main(child if "BENCH_T" in os.environ else main)
