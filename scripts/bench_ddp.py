"""CPU DDP against one process: the same budget and global batch, trained both ways.

    python scripts/bench_ddp.py [task.datamodule.n_train=4000] [trainer.max_epochs=4] ...

Runs `rds-act-train` twice as a user would (each a subprocess with its own run dir under a temp
dir): one process with batch B, then `trainer=ddp trainer.accelerator=cpu trainer.devices=2` with
B/2 per process (the same global batch). Prints training samples per wall second (start-up
included) and the two runs' test metrics, which should agree within seed noise. Each process uses
one thread, so the ratio measures the parallel speed-up on two cores.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DEFAULTS = ["task.datamodule.n_train=4000", "trainer.max_epochs=4", "logger=none",
            "trainer.enable_progress_bar=false", "task.datamodule.batch_size=128"]
SHOWN = ("test/acc", "test/avg_exit", "ood/acc", "ood/avg_exit", "train/samples")


def run(args: list[str], run_dir: Path) -> tuple[dict, float]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "rds_act.train", *args, f"hydra.run.dir={run_dir}"],
                          capture_output=True, text=True, env=env, cwd=run_dir.parent)
    seconds = time.perf_counter() - start
    if proc.returncode:
        raise SystemExit(f"error: {' '.join(args)} failed:\n{proc.stderr[-2000:]}")
    return json.loads((run_dir / "metrics.json").read_text()), seconds


def main() -> None:
    args = [*DEFAULTS, *sys.argv[1:]]
    batch = int(next(a for a in reversed(args) if a.startswith("task.datamodule.batch_size="))
                .split("=")[1])
    with tempfile.TemporaryDirectory() as tmp:
        single, t1 = run(args, Path(tmp) / "single")
        ddp, t2 = run([*args, "trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2",
                       f"task.datamodule.batch_size={batch // 2}"], Path(tmp) / "ddp")
    print(f"{'':14}{'1 process':>12}{'ddp x2':>12}")
    for key in SHOWN:
        print(f"{key:14}{single[key]:12.4f}{ddp[key]:12.4f}")
    s1, s2 = single["train/samples"] / t1, ddp["train/samples"] / t2
    print(f"samples/s     {s1:12.0f}{s2:12.0f}   ratio ddp/1 = {s2 / s1:.2f} (wall time, start-up included)")


if __name__ == "__main__":
    main()
