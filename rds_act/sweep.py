"""Sweeps (``-m``): bad jobs refused before any runs, each failure recorded, one summary at the end.

Before Hydra starts, every job of a basic sweep (Hydra's cartesian product of the comma values)
is composed and validated, so ``-m seed=0,-1`` names job 1 and runs nothing; the launcher and
sweeper settings are checked too (``check_launch``). A job that still fails while running (a
non-finite loss, a value only the built objects can check) writes ``status: failed`` with the
reason into its own dir and hands the sweep a non-number, so the other jobs run on (Hydra's basic
launcher and Optuna both carry on past it); the sweep then prints one line per failed job and one
summary line, and exits 2. Whatever Hydra, OmegaConf, Optuna or submitit raise for the sweep as a
whole is one ``error:`` line (exit 2).
"""

from __future__ import annotations

import itertools
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

import yaml
from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from rds_act.errors import ConfigError

MAX_CHECKED_JOBS = 256  # a larger product is checked job by job as it runs


def in_sweep_job() -> bool:
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def sweep_jobs(argv: list[str]) -> list[list[str]] | None:
    """The override list of every job of a basic sweep, in Hydra's order; None when another
    sweeper (Optuna) picks the jobs. Hydra's own keys are left out (they do not change a job's
    config)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    args = [a for a in argv if not a.startswith("-") and "=" in a]
    overrides = OverridesParser.create().parse_overrides(args)
    if any(o.get_key_element().lstrip("+~") in ("hydra/sweeper", "hparams_search")
           and o.value() not in (None, "basic") for o in overrides):
        return None
    choices = []
    for o in overrides:
        key = o.get_key_element()
        if key.lstrip("+~").startswith(("hydra.", "hydra/")):
            continue
        if o.is_sweep_override():
            choices.append([f"{key}={v}" for v in o.sweep_string_iterator()])
        else:
            choices.append([o.input_line])
    return [list(job) for job in itertools.product(*choices)]


def check_sweep_jobs(argv: list[str], config_name: str,
                     validate: Callable[[DictConfig], None]) -> list[list[str]] | None:
    """Compose and validate every job of a basic sweep; the first bad one is one line naming
    the job, and nothing runs. Returns the jobs (``sweep_jobs``)."""
    from rds_act.cli import check_composes, search_path_override

    jobs = sweep_jobs(argv)
    if not jobs or len(jobs) > MAX_CHECKED_JOBS:
        return jobs
    extra = search_path_override(argv)
    for num, job in enumerate(jobs):
        try:
            validate(check_composes([*job, *extra], config_name))
        except ConfigError as exc:
            swept = [o for o in job if o in _swept_values(argv)]
            raise ConfigError(f"sweep job {num} of {len(jobs)} ({' '.join(swept) or ' '.join(job)}): "
                              f"{exc}; no job was run") from None
    return jobs


def _swept_values(argv: list[str]) -> set[str]:
    from hydra.core.override_parser.overrides_parser import OverridesParser

    args = [a for a in argv if not a.startswith("-") and "=" in a]
    return {f"{o.get_key_element()}={v}" for o in OverridesParser.create().parse_overrides(args)
            if o.is_sweep_override() for v in o.sweep_string_iterator()}


def _int_at_least(node: DictConfig, key: str, low: int, where: str) -> None:
    value = node.get(key)
    if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < low):
        raise ConfigError(f"{where}.{key}={value!r} is not allowed; allowed: an integer >= {low}")


def check_launch(hydra_cfg: DictConfig, sweep: bool) -> None:
    """The launcher's and sweeper's settings a user can type, checked before anything runs."""
    launcher = hydra_cfg.get("launcher") or {}
    target = str(launcher.get("_target_", ""))
    if "submitit" in target:
        for key in ("timeout_min", "cpus_per_task", "nodes", "tasks_per_node", "array_parallelism"):
            _int_at_least(launcher, key, 1, "hydra.launcher")
        for key in ("gpus_per_node", "mem_gb"):
            _int_at_least(launcher, key, 0, "hydra.launcher")
        if sweep and target.endswith("SlurmLauncher") and not shutil.which("sbatch"):
            raise ConfigError("hydra/launcher=slurm submits the jobs to SLURM, but there is no "
                              "`sbatch` on this machine's PATH; allowed: run it on a SLURM login "
                              "node, or hydra/launcher=local (each job a process on this machine)")
    sweeper = hydra_cfg.get("sweeper") or {}
    if "optuna" in str(sweeper.get("_target_", "")):
        for key in ("n_trials", "n_jobs"):
            _int_at_least(sweeper, key, 1, "hydra.sweeper")
        rate = sweeper.get("max_failure_rate")
        if rate is not None and not (isinstance(rate, int | float) and 0 <= rate <= 1):
            raise ConfigError(f"hydra.sweeper.max_failure_rate={rate!r} is not allowed; "
                              "allowed: a number in [0, 1]")


class SweepDir(Callback):
    """Remembers the sweep dir (resolved once, as Hydra made it) for the summary at the end."""

    path: str | None = None

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        SweepDir.path = str(config.hydra.sweep.dir)


def run_job(fn: Callable[[], float | None]) -> float | None:
    """One job of a sweep: a job stopped by bad input or a failed run records ``failed`` with
    its reason in its dir and returns NaN to the sweeper, so the sweep goes on; a signal stops
    the sweep (exit 143 / 130). Outside a sweep, ``fn()`` as it is."""
    if not in_sweep_job():
        return fn()
    from rds_act import cli
    from rds_act.results import METRICS_FILE, write_metrics

    try:
        return fn()
    except SystemExit as exc:
        if exc.code != 2:
            raise
        out_dir = Path(HydraConfig.get().runtime.output_dir)
        if not (out_dir / METRICS_FILE).is_file():
            out_dir.mkdir(parents=True, exist_ok=True)
            write_metrics({}, out_dir, status="failed", reason=cli.last_error or "exit 2")
        return float("nan")


def summarise(expected: int | None) -> int:
    """One line per job that did not complete and one line for the sweep; returns the exit
    code: 0 when every job completed, 2 otherwise."""
    if SweepDir.path is None or not Path(SweepDir.path).is_dir():
        return 0
    root = Path(SweepDir.path)
    jobs = sorted((d for d in root.iterdir() if (d / ".hydra").is_dir()),
                  key=lambda d: (not d.name.isdigit(), int(d.name) if d.name.isdigit() else 0, d.name))
    counts = {"completed": 0, "failed": 0, "interrupted": 0, "no record": 0}
    overrides = {d.name: _job_overrides(d) for d in jobs}
    shared = set.intersection(*map(set, overrides.values())) if len(jobs) > 1 else set()
    for d in jobs:
        status, reason = _status(d)
        counts[status] += 1
        if status != "completed":
            own = " ".join(o for o in overrides[d.name] if o not in shared)  # what names this job
            print(f"sweep job {d.name} ({own}): {status}" + (f": {reason}" if reason else ""),
                  file=sys.stderr)
    skipped = max(0, (expected or 0) - len(jobs))
    parts = [f"{n} {k}" for k, n in counts.items() if n] + ([f"{skipped} not run"] if skipped else [])
    print(f"sweep {root}: {len(jobs) + skipped} jobs: {', '.join(parts) or 'none run'}", file=sys.stderr)
    return 0 if counts["completed"] == len(jobs) and not skipped else 2


def _status(run_dir: Path) -> tuple[str, str]:
    from rds_act.results import METRICS_FILE

    path = run_dir / METRICS_FILE
    if not path.is_file():
        return "no record", "stopped before it wrote metrics.json"
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError:
        return "no record", "metrics.json is unreadable"
    status = raw.get("status", "completed")
    known = status in ("completed", "failed", "interrupted")
    return (status if known else "no record"), raw.get("reason", "")


def _job_overrides(run_dir: Path) -> list[str]:
    try:
        return [str(o) for o in OmegaConf.load(run_dir / ".hydra" / "overrides.yaml")]
    except Exception:  # noqa: BLE001 - the summary names what it can
        return ["?"]


def run_sweep(hydra_main: Callable[[], object], expected: int | None) -> None:
    """Run a sweep inside the entry points' error boundary, then the summary; exit 2 unless every
    job completed (a signal's exit code when one stopped it)."""
    from rds_act.cli import hydra_boundary

    stopped: SystemExit | None = None
    try:
        hydra_boundary(hydra_main)
    except SystemExit as exc:
        stopped = exc
    code = summarise(expected)
    if stopped is not None and stopped.code not in (0, None):
        raise stopped
    if code:
        raise SystemExit(code)
