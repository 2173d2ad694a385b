"""``rds-act-train``: compose a config with Hydra, fit with Lightning, write metrics.json."""

from __future__ import annotations

import sys

import hydra
import lightning as L
from hydra.core.hydra_config import HydraConfig
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig

from rds_act.build import build_module, build_trainer
from rds_act.checkpoint import check_fits
from rds_act.cli import (
    CONF_DIR,
    TRAINED_GROUPS,
    check_composes,
    check_group_choices,
    check_output_dir,
    check_override_keys,
    check_plugins,
    one_line_errors,
    user_search_path,
)
from rds_act.results import collect_metrics, save_results, write_metrics
from rds_act.resume import check_resume, keep_earlier_attempt, resolve_last
from rds_act.validate import validate_config


@one_line_errors
def train(cfg: DictConfig) -> dict[str, float]:
    """Fit, then test on the best checkpoint; returns the flat metric dict written to disk.

    A run that does not complete still leaves a record: metrics.json with ``status`` interrupted
    (SIGTERM / Ctrl-C: exit 143 / 130; ``last.ckpt`` from the last full epoch resumes it) or
    failed (a non-finite loss: exit 2), never a success.
    """
    validate_config(cfg)  # before anything reads a value (the seed first)
    L.seed_everything(cfg.seed, workers=True)
    choices = HydraConfig.get().runtime.choices
    module, datamodule = build_module(cfg, choices={g: choices.get(g) for g in TRAINED_GROUPS},
                                      searchpath=user_search_path())
    if cfg.get("ckpt_path"):
        check_fits(module, cfg.ckpt_path)  # one line for a missing, corrupt or foreign file
    trainer = build_trainer(cfg)
    out_dir = HydraConfig.get().runtime.output_dir

    def record(status: str, reason: str) -> None:
        if not trainer.is_global_zero:
            return
        partial = collect_metrics(trainer, ("val", "ood", "curriculum"))
        write_metrics({**partial, "train/samples": float(module.samples_seen)}, out_dir,
                      status=status, reason=reason)

    try:
        trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
    except SIGTERMException:  # pre-emption (SLURM sends SIGTERM): Lightning raises SystemExit
        record("interrupted", f"SIGTERM at epoch {trainer.current_epoch}")
        raise SystemExit(143) from None
    except SystemExit:  # Lightning turns Ctrl-C into sys.exit(1)
        record("interrupted", f"SIGINT at epoch {trainer.current_epoch}")
        raise SystemExit(130) from None
    except FloatingPointError as exc:
        record("failed", str(exc))
        raise
    metrics = collect_metrics(trainer, ("val", "ood", "curriculum"))
    metrics["train/samples"] = float(module.samples_seen)
    if cfg.get("test"):
        best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
        trainer.test(module, datamodule=datamodule, ckpt_path=best or None, verbose=False)
        metrics.update(collect_metrics(trainer, ("test", "ood")))
    save_results(metrics, module.predictions, out_dir)
    return metrics


def objective(metrics: dict[str, float], cfg: DictConfig) -> float | None:
    """What a sweeper optimises: ``optimized_metric`` minus ``objective_step_cost`` x val/avg_exit."""
    value = metrics.get(cfg.get("optimized_metric"))
    cost = float(cfg.get("objective_step_cost") or 0.0)
    if value is None or not cost:
        return value
    return value - cost * metrics.get("val/avg_exit", float("nan"))


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="train")
def _hydra_main(cfg: DictConfig) -> float | None:
    return objective(train(cfg), cfg)


def main() -> None:
    one_line_errors(check_group_choices)(sys.argv[1:])
    one_line_errors(check_override_keys)(sys.argv[1:], "train")
    one_line_errors(check_plugins)(sys.argv[1:])
    one_line_errors(check_composes)(sys.argv[1:], "train")
    one_line_errors(check_output_dir)(sys.argv[1:], "train")
    sys.argv[1:] = one_line_errors(resolve_last)(sys.argv[1:])
    one_line_errors(check_resume)(sys.argv[1:])
    keep_earlier_attempt(sys.argv[1:])
    _hydra_main()


if __name__ == "__main__":
    main()
