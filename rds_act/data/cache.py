"""A disk cache for fixed sets made by slow external generators (9x9 Sudoku, for one).

A set is keyed by everything that decides its contents (task, sizes, split, seed, generator
version); the first run builds it with a progress bar and later runs load it in a moment.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)


def default_cache_dir() -> Path:
    """``$RDS_ACT_CACHE``, else ``~/.cache/rds_act``."""
    return Path(os.environ.get("RDS_ACT_CACHE") or Path.home() / ".cache" / "rds_act")


def cache_path(key: dict, cache_dir: str | os.PathLike | None = None) -> Path:
    """Where the set named by ``key`` (a JSON-able dict) lives."""
    digest = hashlib.sha1(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    name = f"{key.get('task', 'set')}-{key.get('split', '')}-{digest}.npz"
    return Path(cache_dir or default_cache_dir()) / name


def cached_rows(
    key: dict, n: int, make_row: Callable[[int], dict[str, np.ndarray]],
    cache_dir: str | os.PathLike | None = None, desc: str = "building",
) -> dict[str, np.ndarray]:
    """Rows ``make_row(0..n-1)`` stacked per field, from the cache when it holds them.

    A cache file that cannot be read (truncated, foreign) is rebuilt, with a warning; the new
    file is written atomically, so an interrupted build never leaves a half-written set.
    """
    path = cache_path({**key, "n": int(n)}, cache_dir)
    if path.is_file():
        try:
            with np.load(path) as data:
                return {k: data[k] for k in data.files}
        except Exception as exc:  # noqa: BLE001 - any unreadable file is rebuilt
            log.warning(f"cached set {path} is unreadable ({type(exc).__name__}); rebuilding it")
    from tqdm import tqdm

    rows = [make_row(i) for i in tqdm(range(n), desc=desc, file=sys.stderr, leave=False,
                                       disable=None, mininterval=1.0)]
    out = {k: np.stack([r[k] for r in rows]) for k in rows[0]}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
        with open(tmp, "wb") as f:
            np.savez(f, **out)
        tmp.replace(path)
    except OSError as exc:  # a read-only or full cache dir costs a rebuild next time, not the run
        log.warning(f"could not write the cached set {path} ({exc.strerror}); it will be rebuilt next run")
    return out


def fixed_set_rows(
    split: str, index: np.ndarray, cached: Callable[[str, int], dict[str, np.ndarray]],
    make: Callable[[str, int], dict[str, np.ndarray]], n_base: int | None, memo: dict,
    level: int | None = None,
) -> dict[str, np.ndarray]:
    """Rows of samples ``index`` (consecutive) of ``split``, TRM's form: an evaluation split is the
    first rows of its cached set (``cached(split, n)``); training sample i is base item
    ``i % n_base`` of a fixed cached set (copies, for the caller to augment), or, with ``n_base``
    None, an item made fresh (``make(split, i)``, never cached). ``memo`` keeps the base set.

    ``level`` (a curriculum's top difficulty) restricts training to the base items whose
    ``difficulty`` is at most ``level`` (item ``i % m`` of those m; the easiest ones where none
    is), so the fixed set itself never changes; fresh items take it from ``make``."""
    if split != "train":
        start = int(index[0]) if len(index) else 0
        return {k: v[start:] for k, v in cached(split, start + len(index)).items()}
    if n_base is None:
        made = [make("train", int(i)) for i in index]
        return {k: np.stack([m[k] for m in made]) for k in made[0]}
    if "train" not in memo:
        memo["train"] = cached("train", n_base)
    base = memo["train"]
    pick = index % n_base
    if level is not None:
        difficulty = base["difficulty"]
        eligible = np.flatnonzero(difficulty <= level)
        if not len(eligible):
            eligible = np.flatnonzero(difficulty == difficulty.min())
        pick = eligible[index % len(eligible)]
    return {k: v[pick].copy() for k, v in base.items()}
