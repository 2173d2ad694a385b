"""Turn a composed config into objects (module, datamodule, trainer); shared by train, eval,
the scripts and the tests. Writing results is ``rds_act.results``' job."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import hydra
from hydra.errors import InstantiationException
from lightning import Callback, LightningDataModule, Trainer
from lightning.pytorch.callbacks import ProgressBar
from lightning.pytorch.loggers import Logger
from omegaconf import DictConfig, OmegaConf

from rds_act.act.base import ACTStrategy
from rds_act.act.exits import build_exit_rule
from rds_act.callbacks import CurriculumStep
from rds_act.errors import ConfigError
from rds_act.module import ACTLitModule
from rds_act.validate import validate_config

log = logging.getLogger(__name__)


def build_module(
    cfg: DictConfig, choices: dict[str, str | None] | None = None,
    searchpath: list[str] | None = None, validated: bool = False,
) -> tuple[ACTLitModule, LightningDataModule]:
    """The datamodule and the LightningModule (backbone + strategy + task loss).

    ``choices`` (group -> option, e.g. ``{"act": "plsd"}``) and ``searchpath`` (the user's config
    dirs, as Hydra URLs) are recorded with the config the module saves in its checkpoints, so
    evaluation can compose the same groups again, a user's own included.

    ``cfg.eval.exit_rule`` / ``cfg.eval.threshold`` pick the exit rule used when evaluating
    (validation, test); without them the strategy's own halting rule decides.
    """
    if not validated:  # the entry points validate once, before the seed is used
        validate_config(cfg)  # every typed value, before anything is built
    datamodule = instantiate(cfg, "task.datamodule")
    model = instantiate(cfg, "model")
    act = instantiate(cfg, "act")
    task_loss = instantiate(cfg, "task.loss")
    optimizer = instantiate(cfg, "optimizer")
    scheduler = instantiate(cfg, "scheduler") if cfg.get("scheduler") else None
    eval_cfg = cfg.get("eval") or {}
    exit_rule = build_exit_rule(
        eval_cfg.get("exit_rule", "halt_head"), act, eval_cfg.get("threshold"), task_loss.kind
    )
    warn_untrained_curriculum_step(datamodule, act)
    ood_T_max = int(cfg.task.get("ood_T_max") or model.T_max)
    if ood_T_max < model.T_max:
        raise ConfigError(
            f"task.ood_T_max={ood_T_max} is below model.T_max={model.T_max} (OOD gets at least "
            "the training steps); raise task.ood_T_max, or set the step budget with task.T_max"
        )
    factory, extra = module_factory(cfg)
    module = factory(
        model, act, task_loss, optimizer, ood_T_max=ood_T_max, exit_rule=exit_rule,
        scheduler=scheduler, **extra,
        run_config={
            **OmegaConf.to_container(
                OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"]), resolve=True
            ),
            **({"choices": dict(choices)} if choices is not None else {}),
            **({"searchpath": list(searchpath)} if searchpath else {}),
        },
    )
    return module, datamodule


def instantiate(cfg: DictConfig, key: str) -> Any:
    """``hydra.utils.instantiate`` of one part; a constructor that rejects its arguments (an
    unknown ``+act.foo=1``, a wrong type, a user class's own check) is one line naming the key.
    Our own classes' ConfigErrors pass through as they are."""
    try:
        return hydra.utils.instantiate(OmegaConf.select(cfg, key))
    except InstantiationException as exc:
        err: BaseException | None = exc
        while err is not None and not isinstance(err, ConfigError):
            err = err.__cause__ or err.__context__
        if err is not None:
            raise err from None
        cause = exc.__cause__ or exc
        target = OmegaConf.select(cfg, f"{key}._target_", default="?")
        raise ConfigError(f"{key}: {target} rejected its arguments ({type(cause).__name__}: "
                          f"{cause}); check the {key}.* values") from None


def module_factory(cfg: DictConfig) -> tuple[Callable[..., ACTLitModule], dict[str, Any]]:
    """The LightningModule class of the ``training`` group (unroll when the config has none) and
    what it takes beyond the parts: a regime that clips its own gradients gets the trainer's."""
    if cfg.get("training") is None:
        return ACTLitModule, {}
    factory = hydra.utils.instantiate(cfg.training)
    if clips_own_gradients(cfg):
        return factory, {"gradient_clip_val": cfg.trainer.get("gradient_clip_val")}
    return factory, {}


def clips_own_gradients(cfg: DictConfig) -> bool:
    """Whether the training regime optimises by hand (Lightning then refuses its own clipping)."""
    target = OmegaConf.select(cfg, "training._target_", default=None)
    return bool(target) and getattr(hydra.utils.get_class(target), "clips_gradients", False)


def warn_untrained_curriculum_step(datamodule: LightningDataModule, act: ACTStrategy) -> None:
    """A curriculum scored at the last step, with a loss that does not train it (the loss at t*
    alone), promotes only when t* happens to be the last step: it would stall without saying
    why, so say it once in the log."""
    curriculum = getattr(datamodule, "curriculum", None)
    if curriculum is not None and curriculum.metric == "final" and not act.trains_last_step:
        log.warning(f"task.datamodule.curriculum.metric=final with act={act.name}: the loss "
                    "trains only each sample's t*, never the last step the curriculum scores; "
                    "use curriculum.metric=oracle (or exit)")


def build_trainer(
    cfg: DictConfig, with_callbacks: bool = True, extra_callbacks: list[Callback] | None = None
) -> Trainer:
    # the curriculum is the task's: every trainer drives it, whatever the callbacks group says
    callbacks: list[Callback] = [CurriculumStep(), *(extra_callbacks or [])]
    bar_on = cfg.trainer.get("enable_progress_bar", True)
    if with_callbacks:
        for conf in (cfg.get("callbacks") or {}).values():
            callback = hydra.utils.instantiate(conf)
            if bar_on or not isinstance(callback, ProgressBar):  # trainer.enable_progress_bar wins
                callbacks.append(callback)
    loggers: list[Logger] = [
        hydra.utils.instantiate(conf) for conf in (cfg.get("logger") or {}).values()
    ]
    config = OmegaConf.to_container(OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"]),
                                    resolve=True)
    for logger in loggers:  # the resolved config, as every dashboard's hyper-parameters
        logger.log_hyperparams(config)
    manual = {"gradient_clip_val": None} if clips_own_gradients(cfg) else {}
    return hydra.utils.instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False, **manual)
