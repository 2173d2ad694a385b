"""``rds-act-eval ckpt_path=...``: re-evaluate a checkpoint into a fresh run dir's metrics.json.

The checkpoint carries the config it was trained with (see ``rds_act.checkpoint``); whatever of
model, task, act and optimizer the user names on the command line overrides it.
"""

from __future__ import annotations

import sys

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from lightning import LightningDataModule
from omegaconf import DictConfig, ListConfig, OmegaConf

from rds_act.act.calibrate import calibrate, candidate_thresholds, check_calibratable, rule_at
from rds_act.act.fixed import Fixed
from rds_act.adaptive import adaptive_eval, check_adaptive
from rds_act.build import build_trainer
from rds_act.checkpoint import load_module, with_checkpoint_choices
from rds_act.cli import (
    CONF_DIR,
    check_composes,
    check_group_choices,
    check_output_dir,
    check_override_keys,
    hydra_boundary,
    one_line_errors,
)
from rds_act.data.base import named_loaders
from rds_act.interrupt import deferred_signals, signals_interrupt
from rds_act.module import ACTLitModule
from rds_act.results import collect_metrics, save_results, write_metrics


@one_line_errors
def run_eval(cfg: DictConfig) -> dict[str, float]:
    """Test the checkpoint's model on the test and ood splits; returns what metrics.json holds.

    With ``eval.calibrate.max_drop`` the exit rule's threshold is first chosen on the validation
    split (``rds_act.act.calibrate``) and recorded as ``calibrate/*``. With ``eval.adaptive`` the
    compacted per-sample path runs too (``rds_act.adaptive``), recorded as ``adaptive/*``.
    Stopped by SIGTERM / SIGINT in any phase: metrics.json says ``interrupted`` and where, exit
    143 / 130 (nothing to resume: run the same command again)."""
    out_dir = HydraConfig.get().runtime.output_dir
    phase = ["while loading the checkpoint"]

    def on_stop(name: str) -> None:
        write_metrics({}, out_dir, status="interrupted", reason=f"{name} {phase[0]}")

    with signals_interrupt(on_stop) as stopped:
        module, datamodule, cfg = load_module(cfg, list(HydraConfig.get().overrides.task))
        adaptive = bool(OmegaConf.select(cfg, "eval.adaptive", default=False))
        if adaptive:
            check_adaptive(module, cfg.eval.exit_rule)
        phase[0] = "while calibrating the exit"
        calibrated = calibrate_exit(module, datamodule, cfg)
        stopped.trainer = trainer = build_trainer(cfg, with_callbacks=False)
        phase[0] = "in the test pass"
        print(f"testing {cfg.ckpt_path} on the test and ood splits", flush=True)
        trainer.test(module, datamodule=datamodule, verbose=False)
        stopped.check()
        metrics = {**collect_metrics(trainer, ("test", "ood")), **calibrated}
        if adaptive:
            phase[0] = "in the adaptive pass"
            metrics.update(adaptive_eval(module, datamodule, module.predictions))
        phase[0] = "while writing results"
        save_results(metrics, module.predictions, out_dir)
    return metrics


def calibration_options(module: ACTLitModule, cfg: DictConfig) -> dict | None:
    """``eval.calibrate``'s options, checked against the module's strategy and task (None without
    ``max_drop``): a bad value is one line before any work, not after a training run."""
    options = OmegaConf.select(cfg, "eval.calibrate", default=None) or {}
    if options.get("max_drop") is None:
        return None
    name = cfg.eval.exit_rule
    check_calibratable(name, module.act, cfg.eval.get("threshold"))  # their ranges: validate.py
    candidates = options.get("candidates", 40)
    if isinstance(candidates, ListConfig):  # a list of thresholds of the user's choosing
        candidates = OmegaConf.to_container(candidates)
    candidate_thresholds(name, candidates)
    return {"name": name, "max_drop": float(options["max_drop"]), "delta": float(options.get("delta", 0.1)),
            "candidates": candidates}


def calibrate_exit(module: ACTLitModule, datamodule: LightningDataModule, cfg: DictConfig) -> dict:
    """Set ``module.exit_rule`` to the calibrated rule when ``eval.calibrate.max_drop`` is given;
    returns the calibration's metrics (none without it)."""
    options = calibration_options(module, cfg)
    if options is None:
        return {}
    name, kind = options["name"], module.task_loss.kind
    datamodule.setup("validate")
    module.eval()
    with torch.no_grad():
        stacks = [module.stack(batch, module.steps_for("val"))
                  for batch in named_loaders(datamodule.val_dataloader(), "validate")["val"]]
    result = calibrate(name, module.act, stacks, kind, options["max_drop"], options["delta"],
                       options["candidates"])
    module.exit_rule = (Fixed() if result.threshold is None
                        else rule_at(name, module.act, result.threshold, kind))
    chosen = "none certified: every step runs" if result.threshold is None else f"{result.threshold:.4g}"
    print(f"calibrated eval.exit_rule={name}: threshold {chosen} (val drop {result.val_drop:.4f}, "
          f"harm {result.val_harm:.4f}, exit {result.val_avg_exit:.2f}; max_drop {result.max_drop} "
          f"at confidence {1 - result.delta:.2f})")
    return result.metrics()


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="eval")
def _hydra_main(cfg: DictConfig) -> None:
    run_eval(cfg)


def main() -> None:
    sys.argv[1:] = with_checkpoint_choices(sys.argv[1:])  # the user's config dirs too
    one_line_errors(check_group_choices)(sys.argv[1:])
    one_line_errors(check_override_keys)(sys.argv[1:], "eval")
    one_line_errors(check_composes)(sys.argv[1:], "eval")
    one_line_errors(check_output_dir)(sys.argv[1:], "eval")
    with deferred_signals():  # Hydra makes the run dir next: a signal there is recorded in it
        hydra_boundary(_hydra_main)


if __name__ == "__main__":
    main()
