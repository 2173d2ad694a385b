"""Re-count the bad-input, signal, full-disk and run-dir cases of the reliability issue through the
entry points, as a user meets them: each case is a fresh ``python -m rds_act.train|eval``
subprocess in its own working dir, and is held when it ends the way the project promises —

- bad input: exit 2, exactly one ``error:`` line, no traceback, nothing left on disk (no run dir,
  and any earlier run it names byte-identical afterwards);
- a signal: exit 143 (SIGTERM) / 130 (SIGINT) and ``metrics.json`` saying ``interrupted`` with the
  phase, a ``last.ckpt`` to resume from where one is possible;
- a full disk (a real tmpfs of 1 MiB or 400 KiB; needs root, otherwise that case is reported as
  not run): exit 2, one line, ``metrics.json`` never ``completed``.

    python scripts/probe_inputs.py [only=<part of a case's name>] [keep=true]

Prints one row per case (held or FAILED, its exit code, its error line) and the count; exits 1 if
any case failed. About 15 minutes on 2 cores (each case starts an interpreter with torch).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from _common import run_main

from rds_act.errors import ConfigError

TINY = ["task.datamodule.n_train=64", "task.datamodule.n_val=32", "task.datamodule.n_test=32",
        "task.datamodule.n_ood=32", "task.datamodule.batch_size=16", "task.datamodule.eval_batch_size=32",
        "model.d_model=32", "logger=none", "trainer.enable_progress_bar=false", "trainer.max_epochs=1"]


@dataclass
class Case:
    kind: str
    name: str
    args: list[str]                      # after `python -m rds_act.<entry>`; {run} = the finished run
    entry: str = "train"
    rc: int = 2
    leaves_nothing: bool = True          # a refused input writes nothing
    run: Callable[[Case, Path, Path], tuple[int, str, list[str]]] | None = None  # custom driver


def tree_hash(path: Path) -> dict[str, str]:
    return {str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(path.rglob("*")) if p.is_file()}


def call(entry: str, args: list[str], cwd: Path, timeout: int = 600) -> tuple[int, str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run([sys.executable, "-m", f"rds_act.{entry}", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)
    return proc.returncode, proc.stdout + proc.stderr


def signal_when(entry: str, args: list[str], cwd: Path, signum: int, ready: Callable[[str], bool],
                timeout: int = 300) -> tuple[int, str]:
    """Start the entry point, send ``signum`` once ``ready(output so far)`` holds."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", f"rds_act.{entry}", *args], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    seen: list[str] = []

    def read() -> None:  # in chunks: a progress bar's \r-lines end in no newline
        while chunk := os.read(proc.stdout.fileno(), 1 << 16):
            seen.append(chunk.decode(errors="replace"))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    deadline, hit = time.time() + timeout, False
    while not hit and proc.poll() is None and time.time() < deadline:
        time.sleep(0.1)
        hit = ready("".join(seen))
    if proc.poll() is None:
        proc.send_signal(signum)
    try:
        code = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        code = -9
    reader.join(timeout=5)
    return code, "".join(seen) + ("" if hit else "\n[probe: the signal's moment never came]")


def record(run_dir: Path) -> dict:
    try:
        return json.loads((run_dir / "metrics.json").read_text())
    except (OSError, ValueError):
        return {}


def interrupted(run_dir: Path, phase: str = "", resumable: bool = False) -> list[str]:
    """What is wrong with a stopped run's record: not ``interrupted``, not naming ``phase``, or
    (``resumable``) no last.ckpt."""
    rec, problems = record(run_dir), []
    if rec.get("status") != "interrupted" or phase not in rec.get("reason", ""):
        problems.append(f"metrics.json: {rec.get('status')!r} {rec.get('reason', '')!r}")
    if resumable and not (run_dir / "checkpoints" / "last.ckpt").exists():
        problems.append("no last.ckpt to resume from")
    return problems


# --- the signal and full-disk drivers: (exit code, output, problems) ---------------------------

def sig_test_pass(signum: int):
    def run(case: Case, work: Path, base: Path) -> tuple[int, str, list[str]]:
        out_dir = work / "run"
        args = [*TINY, "task.datamodule.n_test=20000", f"hydra.run.dir={out_dir}"]
        code, out = signal_when("train", args, work, signum,
                                lambda s: "Restoring states from the checkpoint" in s)
        return code, out, interrupted(out_dir, "test pass")
    return run


def sig_fit(signum: int):
    def run(case: Case, work: Path, base: Path) -> tuple[int, str, list[str]]:
        out_dir = work / "run"
        args = [*TINY, "task.datamodule.n_train=16384", "trainer.max_epochs=200", "test=false",
                f"hydra.run.dir={out_dir}"]
        last = out_dir / "checkpoints" / "last.ckpt"
        code, out = signal_when("train", args, work, signum, lambda s: last.exists())
        return code, out, interrupted(out_dir, "at epoch 0", resumable=True)
    return run


def sig_validation(case: Case, work: Path, base: Path) -> tuple[int, str, list[str]]:
    """rds-act-train stopped in epoch 0's validation pass (a large val split, its bar watched)."""
    out_dir = work / "run"
    args = [*TINY, "task.datamodule.n_val=100000", "task.datamodule.eval_batch_size=8",
            "trainer.enable_progress_bar=true", f"hydra.run.dir={out_dir}"]
    code, out = signal_when("train", args, work, signal.SIGTERM, lambda s: "Validation DataLoader 0:" in s)
    return code, out, interrupted(out_dir, "at epoch 0", resumable=True)


def sig_start(case: Case, work: Path, base: Path) -> tuple[int, str, list[str]]:
    """rds-act-train stopped as soon as Hydra made its run dir (while it builds the model)."""
    out_dir = work / "run"
    code, out = signal_when("train", [*TINY, f"hydra.run.dir={out_dir}"], work, signal.SIGTERM,
                            lambda s: (out_dir / ".hydra").is_dir())
    return code, out, interrupted(out_dir)


def sig_eval(signum: int, early: bool):
    """rds-act-eval stopped in its test pass, or ``early`` as soon as Hydra made its run dir."""
    def run(case: Case, work: Path, base: Path) -> tuple[int, str, list[str]]:
        out_dir = work / "eval"  # one sample a batch: a test pass of seconds
        args = [f"ckpt_path={base / 'checkpoints' / 'last.ckpt'}", "task.datamodule.n_test=4000",
                "task.datamodule.eval_batch_size=1", f"hydra.run.dir={out_dir}"]
        ready = (lambda s: (out_dir / ".hydra").is_dir()) if early else (lambda s: "testing " in s)
        code, out = signal_when("eval", args, work, signum, ready)
        return code, out, interrupted(out_dir, "" if early else "test pass")
    return run


def full_disk(resume: bool):
    size = "400k" if resume else "1m"  # room for the copied run, not for one more checkpoint

    def run(case: Case, work: Path, base: Path) -> tuple[int, str, list[str]]:
        mnt = work / "small"
        mnt.mkdir()
        try:
            subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mnt)], check=True,
                           capture_output=True)
        except (OSError, subprocess.CalledProcessError):
            return -1, "", ["not run: cannot mount a small tmpfs here (needs root)"]
        try:
            out_dir = mnt / "run"
            args = [*TINY, f"hydra.run.dir={out_dir}"]
            if resume:  # an earlier completed attempt in place, then a resume that fills the disk
                shutil.copytree(base, out_dir, ignore=shutil.ignore_patterns("epoch*.ckpt"))
                args = [*args, "trainer.max_epochs=3", f"ckpt_path={out_dir / 'checkpoints' / 'last.ckpt'}"]
            else:
                args = [*args, "model.d_model=256"]  # a checkpoint bigger than the disk
            code, out = call("train", args, work)
            rec, problems = record(out_dir), []
            if rec.get("status") == "completed":
                problems.append("metrics.json says completed")
            return code, out, problems
        finally:
            subprocess.run(["umount", str(mnt)], capture_output=True)
    return run


def cases() -> list[Case]:
    r = "{run}"
    ckpt = f"ckpt_path={r}/checkpoints/last.ckpt"
    c = [
        # signals outside fit (and in it, for the record)
        Case("signal", "SIGTERM in the test pass", [], rc=143, run=sig_test_pass(signal.SIGTERM)),
        Case("signal", "SIGINT in the test pass", [], rc=130, run=sig_test_pass(signal.SIGINT)),
        Case("signal", "SIGTERM in epoch 0", [], rc=143, run=sig_fit(signal.SIGTERM)),
        Case("signal", "SIGINT in epoch 0", [], rc=130, run=sig_fit(signal.SIGINT)),
        Case("signal", "SIGTERM in epoch 0's validation", [], rc=143, run=sig_validation),
        Case("signal", "SIGTERM as rds-act-train starts", [], rc=143, run=sig_start),
        Case("signal", "SIGTERM in rds-act-eval's test pass", [], entry="eval", rc=143,
             run=sig_eval(signal.SIGTERM, early=False)),
        Case("signal", "SIGINT in rds-act-eval's test pass", [], entry="eval", rc=130,
             run=sig_eval(signal.SIGINT, early=False)),
        Case("signal", "SIGTERM as rds-act-eval starts", [], entry="eval", rc=143,
             run=sig_eval(signal.SIGTERM, early=True)),
        # earlier outputs
        Case("run dir", "train hydra.run.dir=<a finished run>", [*TINY, f"hydra.run.dir={r}"]),
        Case("run dir", "eval into the training run's dir", [ckpt, f"hydra.run.dir={r}"], entry="eval"),
        Case("run dir", "rejected config aimed at a finished run",
             [*TINY, "model.d_model=0", f"hydra.run.dir={r}"]),
        Case("run dir", "rejected eval aimed at a finished run",
             [ckpt, "eval.exit_rule=bogus", f"hydra.run.dir={r}"], entry="eval"),
        # resume
        Case("resume", "resume with optimizer.lr=1e6", [*TINY, "trainer.max_epochs=2", ckpt,
                                                        "optimizer.lr=1e6", f"hydra.run.dir={r}"]),
        Case("resume", "resume with model.d_model=64", [*TINY, "trainer.max_epochs=2", ckpt,
                                                        "model.d_model=64", f"hydra.run.dir={r}"]),
        Case("resume", "resume from a missing checkpoint", [*TINY, "ckpt_path=/nonexistent/last.ckpt"]),
        # full disk
        Case("full disk", "checkpoint larger than the disk", [], leaves_nothing=False, run=full_disk(False)),
        Case("full disk", "resume onto a full disk", [], leaves_nothing=False, run=full_disk(True)),
    ]
    values = [  # values once taken without a word, tracebacks, Hydra's multi-line reports
        ("value", ["model.step_signal=maybe"]), ("value", ["model.state_norm=sometimes"]),
        ("value", ["model.halt_confidence=7"]), ("value", ["act=fixed", "act.deep_supervision=maybe"]),
        ("value", ["test=maybe"]), ("value", ["trainer.deterministic=maybe"]),
        ("value", ["model.n_heads=3"]), ("value", ["optimizer.lr=nan"]), ("value", ["optimizer.lr=-1"]),
        ("value", ["task.datamodule.batch_size=0"]), ("value", ["trainer.max_epochs=-1"]),
        ("value", ["act=plsd", "act.tolerance=abc"]), ("value", ["task=bogus"]), ("value", ["act=bogus"]),
        ("value", ["model.T_max=0"]), ("value", ["task.T_max=2.5"]),
        ("traceback", ["seed=abc"]), ("traceback", ["seed=-1"]),
        ("traceback", ["scheduler=warmup_stable_decay", "scheduler.decay_frac=abc"]),
        ("traceback", ["trainer.check_val_every_n_epoch=0"]), ("traceback", ["task.T_max=100000"]),
        ("traceback", ["task.T_max=100000", "task.ood_T_max=100000"]),
        ("traceback", ["callbacks.progress_bar.refresh_rate=abc"]),
        ("traceback", ["+trainer.max_steps=abc"]), ("traceback", ["init_from=/nonexistent.ckpt"]),
        ("multi-line", ["task.T_max=four"]), ("multi-line", ["+model.foo=1"]),
        ("multi-line", ["act=qlearning", "act.explore_prob=abc"]), ("multi-line", ["hydra/launcher=ray"]),
        ("multi-line", ["task.halt_grad=half"]), ("multi-line", ["model.d_model"]),
        ("multi-line", ["~model"]), ("multi-line", ["optimizer=bogus"]),
        ("run dir left", ["scheduler=warmup_cosine", "scheduler.warmup_frac=2"]),
        ("run dir left", ["scheduler=warmup_cosine", "scheduler.min_lr_ratio=3"]),
    ]
    c += [Case(kind, " ".join(a), [*TINY, *a]) for kind, a in values]
    c += [  # sweeps and launchers
        Case("sweep", "-m seed=0,-1", ["-m", *TINY, "seed=0,-1"]),
        Case("sweep", "-m model.d_model=32,abc", ["-m", *TINY, "model.d_model=32,abc"]),
        Case("sweep", "optuna hydra.sweeper.n_trials=-1",
             ["-m", *TINY, "hparams_search=rpc_optuna", "hydra.sweeper.n_trials=-1"]),
        Case("sweep", "-m hydra/launcher=slurm (no SLURM here)", ["-m", *TINY, "hydra/launcher=slurm"]),
        # rds-act-eval
        Case("eval", "eval of an RPC checkpoint with task=parity", [ckpt, "task=parity"], entry="eval"),
        Case("eval", "eval of a missing checkpoint", ["ckpt_path=/nonexistent.ckpt"], entry="eval"),
        Case("eval", "eval of a corrupt checkpoint", ["ckpt_path={corrupt}"], entry="eval"),
        Case("eval", "eval without ckpt_path", [], entry="eval"),
        Case("eval", "eval.exit_rule=bogus", [ckpt, "eval.exit_rule=bogus"], entry="eval"),
        Case("eval", "eval model.d_model=abc", [ckpt, "model.d_model=abc"], entry="eval"),
        Case("eval", "eval task.datamodule.n_test=-5", [ckpt, "task.datamodule.n_test=-5"], entry="eval"),
    ]
    return c


def judge(case: Case, code: int, out: str, problems: list[str], before: dict, after: dict,
          left: list[str]) -> tuple[bool, str, list[str]]:
    errors = [ln for ln in out.splitlines() if ln.startswith("error:")]
    problems = list(problems)
    if problems and problems[0].startswith("not run"):
        return False, "", problems
    if code != case.rc:
        problems.append(f"exit {code}, want {case.rc}")
    if "Traceback" in out:
        problems.append("a traceback")
    if case.rc == 2 and len(errors) != 1:
        problems.append(f"{len(errors)} error: lines")
    if before != after:
        problems.append("the finished run it names changed on disk")
    if case.rc == 2 and case.leaves_nothing and left:
        problems.append(f"left on disk: {left[0]}")
    line = errors[0] if errors else ""
    return not problems, line, problems


def parse(argv: list[str]) -> tuple[str, bool]:
    opts = dict(a.split("=", 1) if "=" in a else (a, "") for a in argv)
    unknown = sorted(set(opts) - {"only", "keep"})
    if unknown:
        raise ConfigError(f"{unknown[0]}={opts[unknown[0]]!r}: unknown option; allowed: "
                          "only=<part of a case's name>, keep=true|false")
    keep = opts.get("keep", "false")
    if keep not in ("true", "false"):
        raise ConfigError(f"keep={keep!r} is not allowed; allowed: true or false")
    only = opts.get("only", "")
    if not any(only in c.name for c in cases()):
        raise ConfigError(f"only={only!r} names no case; allowed: part of a case's name, e.g. 'seed'")
    return only, keep == "true"


def main() -> None:
    only, keep = parse(sys.argv[1:])
    top = Path(tempfile.mkdtemp(prefix="rds-probe-"))
    try:
        base = top / "finished"
        code, out = call("train", [*TINY, f"hydra.run.dir={base}"], top)
        if code != 0:
            raise ConfigError(f"the finished run every case compares with did not train (exit {code}): "
                              f"{out.strip().splitlines()[-1] if out.strip() else 'no output'}")
        corrupt = top / "corrupt.ckpt"
        corrupt.write_bytes(b"not a checkpoint" * 64)
        held = failed = notrun = 0
        for i, case in enumerate(c for c in cases() if only in c.name):
            work = top / f"case{i:02d}"
            work.mkdir()
            args = [a.replace("{run}", str(base)).replace("{corrupt}", str(corrupt)) for a in case.args]
            before = tree_hash(base)
            start = time.time()
            if case.run:
                code, out, problems = case.run(case, work, base)
            else:
                code, out = call(case.entry, args, work)
                problems = []
            left = sorted(str(p.relative_to(work)) for p in work.rglob("*") if p.is_file())
            ok, line, problems = judge(case, code, out, problems, before, tree_hash(base), left)
            if problems and problems[0].startswith("not run"):
                notrun += 1
                verdict = "not run"
            else:
                held, failed = held + ok, failed + (not ok)
                verdict = "held" if ok else "FAILED"
            shown = line or (problems[0] if problems else "")
            print(f"{verdict:7s} | {case.kind:12s} | rds-act-{case.entry} {case.name} | exit {code} | "
                  f"{time.time() - start:5.1f} s | {shown[:160]}", flush=True)
            for p in problems[1 if not line else 0:]:
                print(f"{'':7s}   - {p}", flush=True)
            if not ok and os.environ.get("PROBE_SHOW"):
                print(out[-3000:])
            if not keep:
                shutil.rmtree(work, ignore_errors=True)
        print(f"\n{held + failed + notrun} cases: {held} held, {failed} failed, {notrun} not run")
    finally:
        if keep:
            print(f"kept: {top}")
        else:
            shutil.rmtree(top, ignore_errors=True)
    if failed:
        sys.exit(1)


if __name__ == "__main__":
    run_main(main)
