"""``rds-act-train``: compose a config with Hydra, fit with Lightning, write metrics.json."""

from __future__ import annotations

import os
import sys

import hydra
import lightning as L
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from rds_act.build import build_module, build_trainer
from rds_act.checkpoint import check_fits, init_weights, load_checkpoint
from rds_act.cli import (
    CONF_DIR,
    TRAINED_GROUPS,
    check_composes,
    check_group_choices,
    check_output_dir,
    check_override_keys,
    check_plugins,
    checkpoint_arg,
    hydra_boundary,
    is_multirun,
    one_line_errors,
    user_search_path,
)
from rds_act.errors import ConfigError, disk_full, disk_full_line
from rds_act.eval import calibrate_exit, calibration_options
from rds_act.interrupt import deferred_signals, signals_interrupt
from rds_act.memory import check_memory
from rds_act.results import collect_metrics, save_results, write_metrics
from rds_act.resume import RESUME_FROM, check_resume, keep_earlier_attempt, resolve_last
from rds_act.sweep import check_sweep_jobs, run_job, run_sweep
from rds_act.validate import validate_config


@one_line_errors
def train(cfg: DictConfig) -> dict[str, float]:
    """Fit, then test on the best checkpoint; returns the flat metric dict written to disk.

    A run that does not complete still leaves a record: metrics.json with ``status`` interrupted
    (SIGTERM / Ctrl-C: exit 143 / 130; ``last.ckpt`` from the last full epoch resumes it) or
    failed (a non-finite loss: exit 2), never a success.
    """
    validate_config(cfg)  # before anything reads a value (the seed first)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    choices = HydraConfig.get().runtime.choices
    out_dir = HydraConfig.get().runtime.output_dir
    module = trainer = init_samples = None
    phase = ["while setting up"]

    def record(status: str, reason: str) -> None:
        if trainer is None:  # stopped before the trainer existed: rank 0 (DDP) writes
            if os.environ.get("LOCAL_RANK", "0") == "0":
                write_metrics({}, out_dir, status=status, reason=reason)
            return
        if not trainer.is_global_zero:
            return
        partial = collect_metrics(trainer, ("val", "ood", "curriculum"))
        write_metrics({**partial, "train/samples": float(module.samples_seen)}, out_dir,
                      status=status, reason=reason)

    def where() -> str:
        if phase[0] == "fit":
            return f"at epoch {trainer.current_epoch}"
        if phase[0] == "while setting up":
            return f"{phase[0]} (nothing trained yet: run the command again)"
        return f"{phase[0]} (resume with its last.ckpt to test again)"

    try:  # the whole run, set-up and results included, leaves a record when it is stopped
        with signals_interrupt(lambda name: record("interrupted", f"{name} {where()}")) as stopped:
            module, datamodule = build_module(cfg, choices={g: choices.get(g) for g in TRAINED_GROUPS},
                                              searchpath=user_search_path(), validated=True)
            if cfg.get("ckpt_path"):
                check_fits(module, cfg.ckpt_path)  # one line for a missing, corrupt or foreign file
            elif cfg.get("init_from"):  # a resume restores its own weights, warm-started or not
                init_samples = init_weights(module, str(cfg.init_from))
            calibration = calibration_options(module, cfg)  # checked now, used after fitting
            if calibration is not None and not cfg.get("test"):
                raise ConfigError(f"eval.calibrate.max_drop={calibration['max_drop']} with test=false: "
                                  "the calibrated exit is for the test after fitting; drop one of them")
            stopped.trainer = trainer = build_trainer(cfg)
            phase[0] = "fit"
            check_memory(module, datamodule, cfg)  # sets the data up: a signal there is recorded
            trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
            stopped.check()
            phase[0] = "in the test pass"
            metrics = collect_metrics(trainer, ("val", "ood", "curriculum"))
            metrics["train/samples"] = float(module.samples_seen)
            if init_samples is not None:
                metrics["init/samples"] = float(init_samples)
            if cfg.get("test"):
                best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
                if best:  # its saved weights, as rds-act-eval reads them: under callbacks=ema the
                    # average (Lightning's EMA callback, given ckpt_path after fit, restores the raw ones)
                    module.load_state_dict(load_checkpoint(best)["state_dict"])
                if calibration is not None:  # on the weights the test reads
                    phase[0] = "while calibrating the exit"
                    metrics.update(calibrate_exit(module, datamodule, cfg))
                    phase[0] = "in the test pass"
                print(f"testing {best or 'the final weights'} on the test and ood splits", flush=True)
                trainer.test(module, datamodule=datamodule, verbose=False)
                metrics.update(collect_metrics(trainer, ("test", "ood")))
            stopped.check()
            phase[0] = "while writing results"
            save_results(metrics, module.predictions, out_dir)
    except FloatingPointError as exc:
        record("failed", str(exc))
        raise
    except Exception as exc:
        full = disk_full(exc)
        if full is None:
            raise
        try:  # the record is small: it may still fit where a checkpoint did not
            record("failed", f"{disk_full_line(full, out_dir)} ({where()})")
        except OSError:
            pass  # then no record at all: never the earlier attempt's (moved aside at resume)
        raise
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
    return run_job(lambda: objective(train(cfg), cfg))


def check_init_from(argv: list[str]) -> None:
    """``init_from=`` names a checkpoint rds-act-train wrote: checked before Hydra makes a run dir
    (its fit to the config is checked once the model is built)."""
    given = checkpoint_arg(argv, "init_from",
                           "a path to a checkpoint, or null (start from a fresh init)")
    if given is None or is_multirun(argv):
        return
    load_checkpoint(given, "init_from")
    resumed = checkpoint_arg(argv, "ckpt_path", RESUME_FROM)
    if resumed is not None:
        began = load_checkpoint(resumed)["rds_act_config"].get("init_from")
        if began != given:
            raise ConfigError(f"init_from={given} with ckpt_path={resumed}: a resume "
                              f"continues that run, which started from init_from={began}; drop "
                              "init_from to resume it, or drop ckpt_path to start a new run")

def main() -> None:
    one_line_errors(check_group_choices)(sys.argv[1:])
    one_line_errors(check_override_keys)(sys.argv[1:], "train")
    one_line_errors(check_plugins)(sys.argv[1:])
    one_line_errors(check_composes)(sys.argv[1:], "train")
    one_line_errors(check_output_dir)(sys.argv[1:], "train")
    sys.argv[1:] = one_line_errors(resolve_last)(sys.argv[1:])
    one_line_errors(check_resume)(sys.argv[1:])
    one_line_errors(check_init_from)(sys.argv[1:])
    keep_earlier_attempt(sys.argv[1:])
    if not is_multirun(sys.argv[1:]):
        with deferred_signals():  # Hydra makes the run dir next: a signal there is recorded in it
            hydra_boundary(_hydra_main)
        return
    jobs = one_line_errors(check_sweep_jobs)(sys.argv[1:], "train", validate_config)
    run_sweep(_hydra_main, expected=len(jobs) if jobs is not None else None)


if __name__ == "__main__":
    main()
