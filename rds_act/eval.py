"""``rds-act-eval ckpt_path=...``: re-evaluate a checkpoint into a fresh run dir's metrics.json.

The checkpoint carries the config it was trained with (see ``rds_act.checkpoint``); whatever of
model, task, act and optimizer the user names on the command line overrides it.
"""

from __future__ import annotations

import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from rds_act.build import build_trainer
from rds_act.checkpoint import load_module, with_checkpoint_choices
from rds_act.cli import (
    CONF_DIR,
    check_composes,
    check_group_choices,
    check_override_keys,
    one_line_errors,
)
from rds_act.results import collect_metrics, save_results


@one_line_errors
def run_eval(cfg: DictConfig) -> dict[str, float]:
    """Test the checkpoint's model on the test and ood splits; returns what metrics.json holds."""
    module, datamodule, cfg = load_module(cfg, list(HydraConfig.get().overrides.task))
    trainer = build_trainer(cfg, with_callbacks=False)
    trainer.test(module, datamodule=datamodule, verbose=False)
    metrics = collect_metrics(trainer, ("test", "ood"))
    save_results(metrics, module.predictions, HydraConfig.get().runtime.output_dir)
    return metrics


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="eval")
def _hydra_main(cfg: DictConfig) -> None:
    run_eval(cfg)


def main() -> None:
    sys.argv[1:] = with_checkpoint_choices(sys.argv[1:])  # the user's config dirs too
    one_line_errors(check_group_choices)(sys.argv[1:])
    one_line_errors(check_override_keys)(sys.argv[1:], "eval")
    one_line_errors(check_composes)(sys.argv[1:], "eval")
    _hydra_main()


if __name__ == "__main__":
    main()
