"""Resuming a run: ``ckpt_path=last`` finds the newest run of the same config, a resume that
would train something else than the run it resumes is refused, and resuming in place keeps the
earlier attempt's Hydra record beside the new one (all before Hydra starts)."""

from __future__ import annotations

import shutil
from pathlib import Path

import yaml
from omegaconf import DictConfig, ListConfig, OmegaConf

from rds_act.cli import check_composes, checkpoint_arg, is_multirun, parse_override
from rds_act.errors import ConfigError

# where a single training run lands (conf/hydra/default.yaml: outputs/${run_kind}/runs/<time>)
TRAIN_RUNS = Path("outputs") / "train" / "runs"
LAST = Path("checkpoints") / "last.ckpt"
# what a resume compares with the checkpoint's own config: everything that decides what is trained
RESUME_COMPARED = ("seed", "task", "model", "act", "optimizer", "scheduler", "training", "trainer")
# what a resume may change: how long it trains, where and how it runs, how much it tests; not
# what it learns
RESUME_MAY_CHANGE = ("trainer.max_epochs", "trainer.enable_progress_bar", "trainer.log_every_n_steps",
                     "trainer.accelerator", "trainer.devices", "trainer.num_nodes", "trainer.strategy",
                     "task.datamodule.n_test", "task.datamodule.n_ood", "task.datamodule.eval_batch_size",
                     "trainer.default_root_dir")


def _setting(overrides: list[str]) -> set[str]:
    """The overrides that define a run's config: not where it runs, not what it resumes from."""
    return {o for o in overrides
            if parse_override(o)[0] != "ckpt_path" and not o.lstrip("+~").startswith("hydra.")}


def _overrides(run_dir: Path) -> list[str] | None:
    try:
        loaded = yaml.safe_load((run_dir / ".hydra" / "overrides.yaml").read_text())
    except (OSError, yaml.YAMLError):
        return None
    return [str(o) for o in loaded] if isinstance(loaded, list) else None


def find_last_run(argv: list[str], root: Path = TRAIN_RUNS) -> Path | None:
    """The newest run dir under ``root`` trained with the same overrides as ``argv`` (ckpt_path and
    hydra.* aside) that holds a ``checkpoints/last.ckpt``."""
    want = _setting(argv)
    dirs = sorted((d for d in root.glob("*") if d.is_dir()), key=lambda d: d.name, reverse=True)
    for run_dir in dirs:
        overrides = _overrides(run_dir)
        if overrides is not None and _setting(overrides) == want and (run_dir / LAST).is_file():
            return run_dir
    return None


def resolve_last(argv: list[str], root: Path = TRAIN_RUNS) -> list[str]:
    """``ckpt_path=last`` -> that run's ``last.ckpt``, resumed in its own dir (unless
    ``hydra.run.dir`` is given); other argv pass through unchanged."""
    if "ckpt_path=last" not in argv:
        return argv
    if is_multirun(argv):
        raise ConfigError("ckpt_path=last resumes one run; in a sweep (-m) give each job's "
                          "ckpt_path=<run dir>/checkpoints/last.ckpt")
    run_dir = find_last_run(argv, root)
    if run_dir is None:
        raise ConfigError(f"ckpt_path=last: no run under {str(root)!r} with these overrides has "
                          f"{LAST.as_posix()}; allowed: a path to a checkpoint, or last once one exists")
    out = [f"ckpt_path={run_dir / LAST}" if a == "ckpt_path=last" else a for a in argv]
    if not any(parse_override(a)[0] == "hydra.run.dir" for a in argv):
        out.append(f"hydra.run.dir={run_dir}")
    return out


EARLIER_RESULTS = ("metrics.json", "predictions.csv")
# what ckpt_path= may be, for the one line an empty value gets
RESUME_FROM = "a path to a checkpoint, last, or null (train from scratch)"


def keep_earlier_attempt(argv: list[str]) -> None:
    """Resuming in place (``hydra.run.dir`` = an earlier run's dir): move that run's ``.hydra``
    record (config, overrides) and its results (metrics.json, predictions.csv) to
    ``.hydra/attempt-<n>/`` before Hydra writes the new ones, so the dir never shows an earlier
    attempt's status as this one's (a resume that fails on a full disk must not read "completed")."""
    run_dirs = [v for k, v, _ in map(parse_override, argv) if k == "hydra.run.dir" and v]
    if not run_dirs:
        return
    hydra_dir = Path(run_dirs[-1]) / ".hydra"
    files = [p for p in hydra_dir.glob("*.yaml")] if hydra_dir.is_dir() else []
    if not files:
        return
    n = 1
    while (hydra_dir / f"attempt-{n}").exists():
        n += 1
    keep = hydra_dir / f"attempt-{n}"
    keep.mkdir()
    results = [hydra_dir.parent / name for name in EARLIER_RESULTS]
    for path in [*files, *(p for p in results if p.is_file())]:
        shutil.move(str(path), keep / path.name)


def _leaves(value: object, key: str):
    """(dotted key, value) of every leaf of a saved config part (lists are leaves)."""
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _leaves(v, f"{key}.{k}")
    else:
        yield key, value


def check_resume(argv: list[str]) -> None:
    """A resume (``ckpt_path=``) continues the run it resumes: every typed value that decides what
    is trained (``RESUME_COMPARED``) must equal the checkpoint's, except how long and where it
    runs (``RESUME_MAY_CHANGE``: e.g. ``trainer.max_epochs=30`` to train on). Anything else
    (``optimizer.lr=1e6``) is refused in one line naming the value, before Hydra writes
    anything, instead of being recorded and silently not applied. Keys the checkpoint predates
    are not compared."""
    path = checkpoint_arg(argv, "ckpt_path", RESUME_FROM)
    if path is None or is_multirun(argv):
        return
    from rds_act.checkpoint import load_checkpoint

    saved = load_checkpoint(path)["rds_act_config"]
    cfg = check_composes(argv, "train")
    missing = object()
    for group in RESUME_COMPARED:
        for key, old in _leaves(saved.get(group, missing), group):
            if old is missing or key in RESUME_MAY_CHANGE:
                continue
            try:
                new = OmegaConf.select(cfg, key, default=missing, throw_on_resolution_failure=True)
            except Exception:  # noqa: BLE001 - a path resolved by Hydra at run time: not a setting
                continue
            if isinstance(new, DictConfig | ListConfig):
                new = OmegaConf.to_container(new, resolve=True)
            if new is not missing and new != old:
                raise ConfigError(
                    f"ckpt_path={path} resumes a run trained with {key}={old!r}, but this "
                    f"command sets {key}={new!r}; a resume continues that run as it was trained "
                    f"(it may change only {', '.join(RESUME_MAY_CHANGE[:-1])}): drop the override, "
                    "or train a new run without ckpt_path")
