"""One exception type for bad user input, reported as a single line by the entry points, and the
range and choice checks that raise it."""

from __future__ import annotations

import errno
import importlib
from collections.abc import Iterable, Iterator


class ConfigError(ValueError):
    """A configuration or input value is outside what is allowed; the message names both."""


FULL = (errno.ENOSPC, errno.EDQUOT)


def cause_chain(exc: BaseException | None) -> Iterator[BaseException]:
    """``exc`` and the errors it was raised from (``__cause__``, else ``__context__``), each once:
    a chain can loop back on itself."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def disk_full(exc: BaseException | None) -> OSError | None:
    """The "no space left" error in ``exc``'s cause chain (Lightning and torch re-raise it
    wrapped), or None."""
    return next((e for e in cause_chain(exc) if isinstance(e, OSError) and e.errno in FULL), None)


def disk_full_line(exc: OSError, run_dir: str | None = None) -> str:
    """What a user reads when the disk fills: where, the reason, what to do."""
    where = f" under {run_dir!r}" if run_dir else (f" writing {exc.filename!r}" if exc.filename else "")
    return (f"no space left on the device{where} ({exc.strerror or 'ENOSPC'}); free space there "
            "and run again (a training run resumes from its last.ckpt: "
            "ckpt_path=<run>/checkpoints/last.ckpt)")


def is_positive_int(value: object) -> bool:
    """An integer >= 1 (a count: layers, steps, sizes); bools and floats are not."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def check_range(name: str, value: float, low: float, high: float | None = None) -> None:
    """Raise ConfigError unless ``low <= value <= high`` (``high=None`` means unbounded)."""
    bad = value != value or value < low or (high is not None and value > high)
    if bad:
        allowed = f"[{low}, {high}]" if high is not None else f">= {low}"
        raise ConfigError(f"{name}={value} is out of range; allowed: {allowed}")


def check_choice(name: str, value: object, allowed: Iterable[object]) -> None:
    """Raise ConfigError unless ``value`` is one of ``allowed``, naming both in one line."""
    allowed = list(allowed)
    if value not in allowed:
        raise ConfigError(f"{name}={value!r} is unknown; allowed: {', '.join(map(str, allowed))}")


def locate(name: str, key: str) -> object:
    """The object a dotted path names (``my_pkg.tasks.MyDataModule``), imported; one line naming
    ``key`` and what is missing when the package is not on the path or lacks the name."""
    parts = str(name).split(".")
    if len(parts) < 2 or not all(parts):
        raise ConfigError(f"{key}={name!r} is not a dotted path; allowed: package.module.Name")
    for cut in range(len(parts) - 1, 0, -1):  # the longest importable module prefix
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
            break
        except ImportError as exc:
            error = exc
    else:
        raise ConfigError(f"{key}={name!r} cannot be imported ({error}); put its package on "
                          "PYTHONPATH or pip install it")
    for part in parts[cut:]:
        if not hasattr(obj, part):
            raise ConfigError(f"{key}={name!r}: {getattr(obj, '__name__', obj)!s} has no {part!r}")
        obj = getattr(obj, part)
    return obj
