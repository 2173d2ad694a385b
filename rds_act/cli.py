"""Command-line plumbing shared by every entry point; light (no torch import) so tools start fast."""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
from collections.abc import Callable
from functools import wraps
from pathlib import Path

import yaml
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf, open_dict

from rds_act.errors import ConfigError, cause_chain, check_choice, disk_full, disk_full_line

# the checkout's conf/ (editable install, tests) or the copy shipped inside the wheel
_CONF_DIRS = (Path(__file__).resolve().parent.parent / "conf", Path(__file__).resolve().parent / "conf")
CONF_DIR = next((d for d in _CONF_DIRS if (d / "train.yaml").is_file()), _CONF_DIRS[0])
# the config groups under conf/ (hydra/* come from plugins); their option names are checked
# before Hydra starts
CONFIG_GROUPS = ("task", "model", "act", "optimizer", "scheduler", "trainer", "training", "logger",
                 "callbacks", "experiment", "hparams_search", "contender")
# the groups a checkpoint fixes: recorded in it at training time, restored by rds-act-eval
TRAINED_GROUPS = ("task", "model", "act", "optimizer")


def is_multirun(argv: list[str]) -> bool:
    """Whether the command line asks for a sweep (``-m`` / ``--multirun``)."""
    return "-m" in argv or "--multirun" in argv


def checkpoint_arg(argv: list[str], key: str, empty_means: str) -> str | None:
    """The last ``key=<path>`` on the command line, None when absent or null. An empty value
    (``key=$CKPT`` with CKPT unset) is refused in one line instead of read as "none"."""
    given = [v for k, v, _ in map(parse_override, argv) if k == key]
    if given and given[-1] is not None and not given[-1].strip():
        raise ConfigError(f"{key}='' is empty; allowed: {empty_means}")
    return None if not given or given[-1] in (None, "null", "None") else given[-1]


def parse_override(arg: str) -> tuple[str, str | None, bool]:
    """One Hydra override as (key, value, deleted): ``+a.b=v`` -> ("a.b", "v", False),
    ``~a.b`` -> ("a.b", None, True); a word without ``=`` has value None."""
    key, sep, value = arg.partition("=")
    return key.lstrip("+~"), (value if sep else None), key.startswith("~")


CONFIG_DIR_FLAGS = ("--config-dir", "-cd")


def search_path(argv: list[str]) -> list[str]:
    """The config dirs the command line adds to conf/, as Hydra URLs (``file://...``,
    ``pkg://...``): the entries of ``hydra.searchpath=[...]`` and ``--config-dir DIR`` (``-cd``).
    This is how a user's own tasks, strategies, models and optimizers reach every entry point."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    urls: list[str] = []
    for i, arg in enumerate(argv):
        flag, eq, value = arg.partition("=")
        if flag in CONFIG_DIR_FLAGS:
            value = value if eq else (argv[i + 1] if i + 1 < len(argv) else "")
            if value:
                urls.append(f"file://{Path(value).absolute()}")
        elif parse_override(arg)[0] == "hydra.searchpath" and not arg.startswith("~"):
            try:
                entries = OverridesParser.create().parse_overrides([arg])[0].value()
            except Exception:  # noqa: BLE001 - any parse error of the list
                raise ConfigError(f"{arg!r} is not a list of config dirs; allowed: e.g. "
                                  "hydra.searchpath=[file:///a/conf,pkg://my_pkg.conf]") from None
            urls += [str(e) for e in (entries if isinstance(entries, list) else [entries])]
    return urls


def search_dir(url: str) -> Path:
    """The directory a search-path URL names; one error line when there is none."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        scheme, rest = "file", url
    if scheme == "file":
        path = Path(rest)
    elif scheme == "pkg":
        top, *sub = rest.split(".")
        spec = importlib.util.find_spec(top) if _has(top) else None
        roots = list(spec.submodule_search_locations or []) if spec else []
        path = Path(roots[0], *sub) if roots else Path("<no package>")
    else:
        raise ConfigError(f"hydra.searchpath entry {url!r}: allowed: file://<dir> or pkg://<package>")
    if not path.is_dir():
        raise ConfigError(f"hydra.searchpath entry {url!r} is not a directory; allowed: file://<an "
                          "existing config dir> or pkg://<an importable package with configs>")
    return path


def group_options(group: str, argv: list[str] | None = None) -> list[str]:
    """The options of a config group: conf/'s and those of the command line's search path."""
    dirs = [CONF_DIR, *(search_dir(u) for u in search_path(argv or []))]
    return sorted({p.stem for d in dirs for p in (d / group).glob("*.yaml")})


def check_group_choices(argv: list[str]) -> None:
    """Fail in one line on ``act=nope``-style overrides, naming the bad value and the options."""
    for arg in argv:
        key, value, _ = parse_override(arg)
        if value is None or key not in CONFIG_GROUPS or "(" in value:
            continue
        options = group_options(key, argv)
        for choice in (v.strip() for v in value.split(",")):
            if choice and choice != "null":
                check_choice(key, choice, options)


# Hydra plug-ins an override needs: (group, options or None = any) -> (plug-in module, pip extra)
PLUGINS = {
    ("hparams_search", None): ("hydra_plugins.hydra_optuna_sweeper", "sweep"),
    ("hydra/sweeper", ("optuna",)): ("hydra_plugins.hydra_optuna_sweeper", "sweep"),
    ("hydra/launcher", ("local", "slurm", "submitit_local", "submitit_slurm")):
        ("hydra_plugins.hydra_submitit_launcher", "cluster"),
}


def check_plugins(argv: list[str]) -> None:
    """Fail in one line, naming the extra to install, when an override needs a Hydra plug-in
    (the Optuna sweeper, the submitit launcher) that is not installed."""
    for arg in argv:
        key, value, _ = parse_override(arg)
        if not value or value == "null":
            continue
        for (group, options), (module, extra) in PLUGINS.items():
            if key == group and (options is None or value in options):
                if not _has(module):
                    raise ConfigError(f"{key}={value} needs the Hydra plug-in {module.split('.')[1]}, "
                                      f"which is not installed; pip install 'rds-act[{extra}]'")


def _has(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


def _top_keys(config_name: str) -> set[str]:
    """Top-level keys of ``conf/<config_name>.yaml`` and of the configs it extends."""
    tree = yaml.safe_load((CONF_DIR / f"{config_name}.yaml").read_text()) or {}
    keys = {k for k in tree if k != "defaults"}
    for entry in tree.get("defaults", []):
        if isinstance(entry, str) and entry != "_self_" and (CONF_DIR / f"{entry}.yaml").is_file():
            keys |= _top_keys(entry)
    return keys


def check_override_keys(argv: list[str], config_name: str) -> None:
    """Fail in one line on a misspelt top-level key (``modle.d_model=64``) before Hydra starts;
    ``+key=...`` adds a key on purpose and is left to Hydra."""
    allowed = set(CONFIG_GROUPS) | {"hydra", "paths"} | _top_keys(config_name)
    for arg in argv:
        key, value, deleted = parse_override(arg)
        if value is None or deleted or arg.startswith(("+", "-")):
            continue
        top = key.split(".")[0].split("/")[0].split("@")[0]
        if top not in allowed:
            raise ConfigError(f"{key}={value!r}: {top!r} is not a config key; allowed top-level "
                              f"keys: {', '.join(sorted(allowed))}")


def check_output_dir(argv: list[str], run_kind: str) -> None:
    """Fail in one line when the run (or sweep) dir cannot be created: its nearest existing
    parent is a file or not writable (Hydra would stop with a traceback)."""
    sweep = is_multirun(argv)
    key = "hydra.sweep.dir" if sweep else "hydra.run.dir"
    given = [v for k, v, _ in map(parse_override, argv) if k == key and v]
    target = Path(given[-1]) if given else Path("multirun" if sweep else f"outputs/{run_kind}")
    parent = target.absolute()
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        what = "is not a directory" if not parent.is_dir() else "is not writable"
        raise ConfigError(f"{key}={str(target)!r} cannot be created: {str(parent)!r} {what}; "
                          "allowed: a path under a writable directory")
    if given:
        check_not_another_run(target, sweep, run_kind, argv)


# what a finished (or started) run leaves in its dir
RUN_OUTPUTS = ("metrics.json", "predictions.csv", "checkpoints", "csv", "summary.csv")


def _holds_run(path: Path) -> list[str]:
    return [n for n in RUN_OUTPUTS if (path / n).exists()] if path.is_dir() else []


def check_not_another_run(target: Path, sweep: bool, run_kind: str, argv: list[str]) -> None:
    """Earlier outputs are never overwritten: a run dir that holds a run is refused in one line,
    unless this is that run's own resume (``rds-act-train ckpt_path=<dir>/checkpoints/...``);
    rds-act-eval never writes into a run's dir; a sweep dir must not hold earlier jobs."""
    if sweep:
        jobs = [c.name for c in target.iterdir() if _holds_run(c)] if target.is_dir() else []
        if jobs:
            raise ConfigError(f"hydra.sweep.dir={str(target)!r} already holds the jobs of a sweep "
                              f"({', '.join(sorted(jobs)[:3])}, ...); allowed: a new directory")
        return
    found = _holds_run(target)
    if not found:
        return
    ckpt = next((v for k, v, _ in map(parse_override, argv) if k == "ckpt_path" and v), None)
    resume = (run_kind == "train" and ckpt not in (None, "last")
              and target.resolve() in Path(ckpt).resolve().parents)
    if not resume:
        hint = (f"; to resume it: ckpt_path={target}/checkpoints/last.ckpt" if run_kind == "train"
                else "")
        raise ConfigError(f"hydra.run.dir={str(target)!r} holds another run ({', '.join(found)}); "
                          f"allowed: a new directory{hint}")


_NOISE = ("full_key:", "object_type", "reference_type", "See https", "Set the environment")


def check_composes(argv: list[str], config_name: str) -> DictConfig:
    """Compose the config once with the command line's plain overrides before Hydra runs, so a
    key the config does not have (``model.nope=3``) or an override Hydra cannot parse is one
    ``error:`` line, not Hydra's multi-line report; so is an unknown ``task.datamodule.variant``
    (``check_task_variant``). Sweep values and hydra.* are left to Hydra. Returns the config."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from rds_act.sweep import check_launch

    sweep = is_multirun(argv)
    plain = [a for a in argv if not a.startswith("-") and "=" in a
             and (not a.lstrip("+~").startswith(("hydra.", "hydra/")) or _is_launch_key(a))
             and not (sweep and ("," in a or "(" in a))]
    plain += search_path_override(argv)  # the user's config dirs (--config-dir, hydra.searchpath)
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            cfg = compose(config_name=config_name, overrides=plain, return_hydra_config=True)
    except Exception as exc:  # noqa: BLE001 - Hydra's override and composition errors, all kinds
        raise ConfigError(hydra_error_line(exc)) from None
    finally:
        GlobalHydra.instance().clear()
    with open_dict(cfg):
        hydra_cfg = cfg.pop("hydra")
    check_launch(hydra_cfg, sweep)
    check_task_variant(cfg)
    return cfg


def hydra_error_line(exc: BaseException) -> str:
    """One line from Hydra's multi-line report: its message and its cause's, the options it
    lists comma-separated, the config search path and the hints left out."""
    text = str(exc) + ("\n" + str(exc.__cause__) if exc.__cause__ else "")
    text = text.split("Config search path:")[0]
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.strip().startswith(_NOISE)]
    out: list[str] = []
    for line in lines:
        if out and out[-1].endswith(":") and "Available options" in out[-1]:
            out[-1] += " " + line
        elif out and "Available options" in out[-1]:
            out[-1] += ", " + line
        else:
            out.append(line)
    return "; ".join(out).replace("Available options in", "allowed options in") or type(exc).__name__


def _is_launch_key(arg: str) -> bool:
    """A launcher / sweeper choice or setting (not the sweeper's search space)."""
    key = parse_override(arg)[0]
    return (key in ("hydra/launcher", "hydra/sweeper")
            or (key.startswith(("hydra.launcher.", "hydra.sweeper."))
                and not key.startswith("hydra.sweeper.params")))


def user_search_path() -> list[str]:
    """Inside a Hydra run: the config dirs the user added (``--config-dir``, ``hydra.searchpath``)."""
    sources = HydraConfig.get().runtime.config_sources
    return [f"{s.schema}://{s.path}" for s in sources
            if s.provider == "command-line" or str(s.provider).startswith("hydra.searchpath")]


def search_path_override(argv: list[str]) -> list[str]:
    """``hydra.searchpath=[...]`` for Hydra's compose API, which has no ``--config-dir``: both
    forms of the command line's search path in one override (none when it has none)."""
    urls = search_path(argv)
    for url in urls:
        search_dir(url)
    return [search_path_arg(urls)] if urls else []


def search_path_arg(urls: list[str]) -> str:
    """One ``hydra.searchpath=[...]`` override holding ``urls``."""
    return "hydra.searchpath=[" + ",".join(f"'{u}'" for u in urls) + "]"


def config_dir_as_search_path(argv: list[str]) -> list[str]:
    """``argv`` for Hydra's compose API: ``--config-dir DIR`` and ``hydra.searchpath=`` become one
    ``hydra.searchpath=[...]`` override."""
    rest, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg in CONFIG_DIR_FLAGS:
            skip = True
        elif arg.partition("=")[0] not in CONFIG_DIR_FLAGS and parse_override(arg)[0] != "hydra.searchpath":
            rest.append(arg)
    return rest + search_path_override(argv)


def check_task_variant(cfg: DictConfig) -> None:
    """A task with a ``variants`` table (parity) reads its datamodule's values from the row that
    ``task.datamodule.variant`` names: an unknown name is one line naming the rows, not the
    interpolation error that resolving any of those values would raise."""
    variants = OmegaConf.select(cfg, "task.variants", default=None)
    if isinstance(variants, DictConfig):
        variant = OmegaConf.select(cfg, "task.datamodule.variant", default=None)
        check_choice("task.datamodule.variant", variant, list(variants))


# the packages whose exceptions come from what a user typed or the machine, not from a bug of ours
BOUNDARY = ("hydra", "omegaconf", "optuna", "submitit")


def hydra_boundary(hydra_main: Callable[[], object]) -> None:
    """Run a ``@hydra.main`` function with Hydra's errors raised to us (``HYDRA_FULL_ERROR``)
    instead of its multi-line report: a full disk anywhere (Hydra writing .hydra/ included) and
    whatever Hydra, OmegaConf, Optuna or submitit raise are one ``error:`` line, exit 2; our own
    bugs keep their traceback, as does everything when the user set ``HYDRA_FULL_ERROR``."""
    user_full = os.environ.get("HYDRA_FULL_ERROR")
    os.environ["HYDRA_FULL_ERROR"] = "1"
    try:
        hydra_main()
    except Exception as exc:  # noqa: BLE001 - sorted below; the rest re-raised
        full = disk_full(exc)
        if full is not None:
            print(f"error: {disk_full_line(full)}", file=sys.stderr)
            raise SystemExit(2) from None
        if user_full or not _raised_in(exc, BOUNDARY):
            raise
        print(f"error: {hydra_error_line(exc)}", file=sys.stderr)
        raise SystemExit(2) from None
    finally:
        if user_full is None:
            os.environ.pop("HYDRA_FULL_ERROR", None)


def _raised_in(exc: BaseException, packages: tuple[str, ...]) -> bool:
    """Whether the innermost frame of ``exc``'s traceback is in one of ``packages``."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    name = str(tb.tb_frame.f_globals.get("__name__", "")) if tb is not None else ""
    top = name.split(".")[1] if name.startswith("hydra_plugins.") else name.split(".")[0]
    return top in packages or top.removeprefix("hydra_") in packages


last_error: str | None = None  # the last line one_line_errors printed (a sweep job's record)


def one_line_errors(fn: Callable) -> Callable:
    """Report bad input (a ConfigError anywhere in the cause chain) as one line and exit 2."""

    @wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - we re-raise everything that is not bad input
            full = disk_full(exc)
            if full is not None:  # a full disk in any phase: one line, never a traceback
                run_dir = HydraConfig.get().runtime.output_dir if HydraConfig.initialized() else None
                print(f"error: {disk_full_line(full, run_dir)}", file=sys.stderr)
                raise SystemExit(2) from None
            err = next((e for e in cause_chain(exc)
                        if isinstance(e, ConfigError | FloatingPointError)), None)
            if err is None:
                raise
            if isinstance(err, ConfigError):
                discard_rejected_run_dir()
            global last_error
            last_error = str(err)
            print(f"error: {err}", file=sys.stderr)
            raise SystemExit(2) from None

    return wrapper


# what Hydra writes into a run dir before the run itself starts
_HYDRA_ONLY = {".hydra", "train.log", "eval.log", "report.log"}


def discard_rejected_run_dir() -> None:
    """A config rejected before the run wrote anything leaves no run dir behind; a dir with any
    output of an earlier run in it (resume in place) is left alone."""
    from rds_act.sweep import in_sweep_job

    if not HydraConfig.initialized() or in_sweep_job():  # a sweep job keeps its failed record
        return
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    names = {p.name for p in run_dir.iterdir()} if run_dir.is_dir() else set()
    if ".hydra" in names and names <= _HYDRA_ONLY:
        shutil.rmtree(run_dir, ignore_errors=True)
