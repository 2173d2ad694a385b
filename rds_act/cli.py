"""Command-line plumbing shared by every entry point; light (no torch import) so tools start fast."""

from __future__ import annotations

import sys
from collections.abc import Callable
from functools import wraps
from pathlib import Path

from rds_act.errors import ConfigError

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"
# groups whose option names are checked before Hydra starts (hydra/* come from plugins)
CHECKED_GROUPS = ("task", "model", "act", "optimizer", "scheduler", "trainer", "logger", "callbacks",
                  "experiment", "hparams_search")


def group_options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


def check_group_choices(argv: list[str]) -> None:
    """Fail in one line on ``act=nope``-style overrides, naming the bad value and the options."""
    for arg in argv:
        key, sep, value = arg.partition("=")
        key = key.lstrip("+~")
        if not sep or key not in CHECKED_GROUPS or "(" in value:
            continue
        options = group_options(key)
        for choice in (v.strip() for v in value.split(",")):
            if choice and choice != "null" and choice not in options:
                raise ConfigError(f"unknown {key} {choice!r}; allowed: {', '.join(options)}")


def one_line_errors(fn: Callable) -> Callable:
    """Report bad input (a ConfigError anywhere in the cause chain) as one line and exit 2."""

    @wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - we re-raise everything that is not bad input
            err: BaseException | None = exc
            while err is not None and not isinstance(err, ConfigError | FloatingPointError):
                err = err.__cause__ or err.__context__
            if err is None:
                raise
            print(f"error: {err}", file=sys.stderr)
            raise SystemExit(2) from None

    return wrapper
