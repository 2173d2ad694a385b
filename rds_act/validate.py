"""One validation pass over the config values a user can type, before data or model are built.

The names and types of every built part's keys come from its target's signature
(``rds_act.schema``); this table adds the ranges (an integer >= 1, a rate in [0, 1]) and the keys
no signature holds (``seed``, ``test``, ``task.T_max``). Each rule names a dotted key and what is
allowed; a bad value fails in one line (``ConfigError``, exit 2 at the entry points). Keys a
config does not have are skipped, so one table serves every task, model and optimizer. Checks
that need the objects themselves (a strategy's own ranges, a task's own counts) stay with them.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass

import torch
from omegaconf import DictConfig, ListConfig, OmegaConf

from rds_act.cli import check_task_variant
from rds_act.errors import ConfigError
from rds_act.models.layers import SEQUENCE_EMBEDS
from rds_act.schema import check_schema, is_number

PRECISIONS = ("64-true", "32-true", "16-mixed", "bf16-mixed", "16-true", "bf16-true",
              "64", "32", "16", "bf16", 64, 32, 16)


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: object) -> bool:
    return is_number(v, finite=True)


@dataclass(frozen=True)
class Rule:
    test: Callable[[object], bool]
    allowed: str


INT_GE0 = Rule(lambda v: _is_int(v) and v >= 0, "an integer >= 0")
INT_GE1 = Rule(lambda v: _is_int(v) and v >= 1, "an integer >= 1")
POSITIVE = Rule(lambda v: _is_num(v) and v > 0, "a number > 0")
NON_NEGATIVE = Rule(lambda v: _is_num(v) and v >= 0, "a number >= 0")
UNIT_OPEN = Rule(lambda v: _is_num(v) and 0 <= v < 1, "a number in [0, 1)")
UNIT_HALF_OPEN = Rule(lambda v: _is_num(v) and 0 < v <= 1, "a number in (0, 1]")
NUMBER_OR_NULL = Rule(lambda v: v is None or _is_num(v), "a number or null")
UNIT = Rule(lambda v: _is_num(v) and 0 <= v <= 1, "a number in [0, 1]")
UNIT_OR_NULL = Rule(lambda v: v is None or (_is_num(v) and 0 <= v <= 1), "a number in [0, 1] or null")
BOOL = Rule(lambda v: isinstance(v, bool), "true or false")
INT_GE1_OR_NULL = Rule(lambda v: v is None or (_is_int(v) and v >= 1), "an integer >= 1 or null")
BETAS = Rule(lambda v: isinstance(v, list | tuple) and len(v) == 2
             and all(_is_num(b) and 0 <= b < 1 for b in v), "two numbers in [0, 1), e.g. [0.9, 0.95]")

RULES: dict[str, Rule] = {
    "seed": INT_GE0,
    "test": BOOL,
    "trainer.max_epochs": INT_GE1,
    "trainer.check_val_every_n_epoch": INT_GE1_OR_NULL,
    "trainer.log_every_n_steps": INT_GE1,
    "task.T_max": INT_GE1,
    "task.ood_T_max": INT_GE1_OR_NULL,
    "task.halt_grad": UNIT,
    "model.T_max": INT_GE1,
    "model.halt_grad": UNIT,
    "act.explore_prob": UNIT,
    "act.threshold": UNIT,
    "act.tolerance": NON_NEGATIVE,
    "act.halt_weight": NON_NEGATIVE,
    "act.ds_weight": NON_NEGATIVE,
    "act.beta": NON_NEGATIVE,
    "act.tau": NON_NEGATIVE,
    "act.margin": Rule(_is_num, "a number"),
    "scheduler.warmup_frac": UNIT,
    "scheduler.decay_frac": UNIT,
    "scheduler.hold_frac": UNIT,
    "scheduler.min_lr_ratio": UNIT,
    "trainer.precision": Rule(lambda v: v in PRECISIONS, ", ".join(map(str, PRECISIONS[:6]))),
    "trainer.gradient_clip_val": Rule(lambda v: v is None or (_is_num(v) and v > 0), "a number > 0 or null"),
    "model.d_model": INT_GE1,
    "model.n_heads": INT_GE1,
    "model.mlp_ratio": POSITIVE,
    "model.dropout": UNIT_OPEN,
    "model.num_experts": INT_GE0,
    "model.block_layers": INT_GE1,
    "model.n_latent": INT_GE1,
    "model.cycles": INT_GE1,
    "model.mixer": Rule(lambda v: v in ("attention", "mlp"), "attention or mlp"),
    "model.top_k": INT_GE1,
    "model.balance_weight": NON_NEGATIVE,
    "callbacks.ema.decay": UNIT_OPEN,
    "optimizer.lr": POSITIVE,
    "optimizer.weight_decay": NON_NEGATIVE,
    "optimizer.betas": BETAS,
    "optimizer.momentum": UNIT_OPEN,
    "optimizer.adamw_lr": POSITIVE,
    "optimizer.eps": POSITIVE,
    "optimizer.rho": NON_NEGATIVE,
    "optimizer.adjust_lr_fn": Rule(lambda v: v in (None, "original", "match_rms_adamw"),
                                   "null, original or match_rms_adamw"),
    "task.datamodule.dim": Rule(lambda v: _is_int(v) and v >= 2, "an integer >= 2"),
    "task.datamodule.frac": UNIT_HALF_OPEN,
    "task.datamodule.noise_std": NON_NEGATIVE,
    "task.encoder.embed": Rule(lambda v: v in SEQUENCE_EMBEDS, " or ".join(SEQUENCE_EMBEDS)),
    "eval.threshold": NUMBER_OR_NULL,
    "eval.calibrate.max_drop": UNIT_OR_NULL,
    "eval.calibrate.delta": UNIT,
    "eval.adaptive": BOOL,
}
_MISSING = object()


def validate_config(cfg: DictConfig) -> None:
    """Check every key of ``RULES`` the config has; then that attention heads divide d_model."""
    check_task_variant(cfg)  # first: the task's values may interpolate through its variant
    for key, rule in RULES.items():
        value = OmegaConf.select(cfg, key, default=_MISSING, throw_on_missing=False)
        if value is _MISSING:
            continue
        if isinstance(value, ListConfig | DictConfig):
            value = OmegaConf.to_container(value, resolve=True)
        if not rule.test(value):
            raise ConfigError(f"{key}={value!r} is not allowed; allowed: {rule.allowed}")
    check_machine(cfg)
    check_schema(cfg)  # every built part against its target's signature
    d_model = OmegaConf.select(cfg, "model.d_model", default=None)
    heads = OmegaConf.select(cfg, "model.n_heads", default=None)
    if d_model and heads and d_model % heads:
        raise ConfigError(f"model.d_model={d_model} is not a multiple of model.n_heads={heads}; "
                          "allowed: d_model divisible by n_heads")


# logger option -> (module it needs, pip extra that installs it)
LOGGER_PACKAGES = {"tensorboard": ("tensorboard", "tensorboard"), "wandb": ("wandb", None)}


def check_machine(cfg: DictConfig) -> None:
    """What the config asks of this machine: a GPU that exists, no more devices than it has, and
    the logger packages installed; each missing one named in one line."""
    accelerator = str(OmegaConf.select(cfg, "trainer.accelerator", default="auto"))
    devices = OmegaConf.select(cfg, "trainer.devices", default="auto")
    gpus = torch.cuda.device_count()
    if accelerator in ("gpu", "cuda") and gpus == 0:
        raise ConfigError(f"trainer.accelerator={accelerator!r} but this machine has no CUDA GPU; "
                          "allowed here: trainer=cpu (or trainer.accelerator=cpu / auto)")
    if _is_int(devices):
        have = gpus if accelerator in ("gpu", "cuda") or (accelerator == "auto" and gpus) else None
        if devices < 1 or (have is not None and devices > have):
            raise ConfigError(f"trainer.devices={devices} is not allowed; allowed: 1.."
                              f"{have if have is not None else 'N'} on this machine, or auto")
    for name in (OmegaConf.select(cfg, "logger", default=None) or {}):
        module, extra = LOGGER_PACKAGES.get(name, (None, None))
        if module and importlib.util.find_spec(module) is None:
            how = f"pip install 'rds-act[{extra}]'" if extra else f"pip install {module}"
            raise ConfigError(f"logger={name} needs the {module!r} package, which is not "
                              f"installed; {how}, or choose logger=csv")
