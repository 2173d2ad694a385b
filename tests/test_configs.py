"""Every config group option composes; bad names and values fail in one line."""

from __future__ import annotations

import re

import hydra
import pytest
from helpers import run_cli, run_entry

from rds_act.build import build_module
from rds_act.cli import CONF_DIR, CONFIG_GROUPS, check_group_choices, group_options
from rds_act.errors import ConfigError


@pytest.mark.parametrize("group", CONFIG_GROUPS)
def test_every_option_composes(compose_cfg, group):
    options = group_options(group)
    assert options, f"conf/{group} has no options"
    for option in options:
        cfg = compose_cfg(f"{group}={option}")
        assert cfg.task.name in group_options("task")  # each task is named after its file
        hydra.utils.instantiate(cfg.act)
        hydra.utils.instantiate(cfg.model)


def fake_gpus(monkeypatch, n: int) -> None:
    """Make torch and Lightning see ``n`` CUDA GPUs (nothing runs on them)."""
    import torch
    from lightning.pytorch.accelerators import CUDAAccelerator

    monkeypatch.setattr(torch.cuda, "device_count", lambda: n)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: n > 0)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    monkeypatch.setattr(CUDAAccelerator, "is_available", staticmethod(lambda: n > 0))
    monkeypatch.setattr("lightning.fabric.accelerators.cuda.num_cuda_devices", lambda: n)


@pytest.mark.parametrize("option", group_options("trainer"))
def test_every_trainer_option_builds_its_trainer(compose_cfg, monkeypatch, option):
    """Each trainer option gives the accelerator, devices and strategy it says (a GPU faked for
    trainer=gpu, two CPU processes for ddp); on a machine without one, gpu is one error."""
    from rds_act.build import build_trainer
    from rds_act.validate import validate_config

    fake_gpus(monkeypatch, 1 if option == "gpu" else 0)
    cfg = compose_cfg(f"trainer={option}", "logger=none")
    validate_config(cfg)
    trainer = build_trainer(cfg)
    want = {"cpu": ("CPUAccelerator", 1, "SingleDeviceStrategy"),
            "default": ("CPUAccelerator", 1, "SingleDeviceStrategy"),
            "gpu": ("CUDAAccelerator", 1, "SingleDeviceStrategy"),
            "ddp": ("CPUAccelerator", 2, "DDPStrategy")}[option]
    got = (type(trainer.accelerator).__name__, trainer.num_devices, type(trainer.strategy).__name__)
    assert got == want
    if option == "gpu":
        fake_gpus(monkeypatch, 0)
        with pytest.raises(ConfigError, match="trainer.accelerator='gpu' but this machine has no CUDA GPU"):
            validate_config(cfg)
        fake_gpus(monkeypatch, 1)
        with pytest.raises(ConfigError, match=r"trainer.devices=4 is not allowed; allowed: 1..1"):
            validate_config(compose_cfg("trainer=gpu", "trainer.devices=4", "logger=none"))


@pytest.mark.parametrize("option", group_options("logger"))
def test_every_logger_option_builds_its_loggers(compose_cfg, monkeypatch, option):
    """Each logger option gives its loggers, writing under the run dir (wandb offline); a logger
    whose package is missing is one error naming the extra."""
    import importlib.util

    from rds_act.build import build_trainer
    from rds_act.validate import validate_config

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    cfg = compose_cfg(f"logger={option}", "trainer=cpu")
    validate_config(cfg)
    names = sorted(type(lg).__name__ for lg in build_trainer(cfg).loggers)
    want = {"none": [], "csv": ["HistoryCSVLogger"], "wandb": ["WandbLogger"],
            "tensorboard": ["TensorBoardLogger"],
            "many": ["HistoryCSVLogger", "TensorBoardLogger", "WandbLogger"]}[option]
    assert names == want
    for logger in build_trainer(cfg).loggers:
        if type(logger).__name__ == "HistoryCSVLogger":  # the resolved config as hyper-parameters
            assert logger.experiment.hparams["task"]["name"] == "rpc_small"
        if type(logger).__name__ == "WandbLogger":  # filed by overrides and choices, offline
            init = logger._wandb_init
            assert init["name"] == f"logger={option},trainer=cpu" and init["group"] is None
            assert {"task=rpc_small", "act=plsd", "optimizer=adamw"} <= set(init["tags"])
            assert init["mode"] == "offline"
    if "tensorboard" in cfg.logger:
        real = importlib.util.find_spec
        monkeypatch.setattr(importlib.util, "find_spec",
                            lambda name, *a: None if name == "tensorboard" else real(name, *a))
        with pytest.raises(ConfigError, match=r"logger=tensorboard needs .*rds-act\[tensorboard\]"):
            validate_config(cfg)


@pytest.mark.parametrize(
    "task, steps", [("rpc", (8, 12)), ("rpc_small", (4, 5)), ("sparse_transform", (8, 12)),
                    ("parity", (8, 12))]
)
@pytest.mark.parametrize("act", ["fixed", "plsd"])
def test_module_builds_for_task_and_act(compose_cfg, task, steps, act):
    module, datamodule = build_module(compose_cfg(f"task={task}", f"act={act}"))
    assert (module.model.T_max, module.ood_T_max) == steps
    assert type(datamodule).name == task.split("_small")[0]


def test_unknown_group_option_names_value_and_choices():
    with pytest.raises(ConfigError, match=r"act='nope' is unknown; allowed: .*plsd"):
        check_group_choices(["act=plsd,nope"])
    check_group_choices(["act=fixed,plsd", "task=rpc", "trainer.max_epochs=1"])


@pytest.mark.parametrize(
    "override, message",
    [
        ("model.T_max=0", "model.T_max=0 is not allowed; allowed: an integer >= 1"),
        ("task.datamodule.n_train=0", "n_train=0 must be a positive integer"),
        ("task.datamodule.batch_size=-4", "batch_size=-4 must be a positive integer"),
        ("task.ood_T_max=3", r"task.ood_T_max=3 is below model.T_max=4 .*raise task.ood_T_max"),
        ("act.threshold=1.5", r"act.threshold=1.5 is not allowed; allowed: a number in \[0, 1\]"),
        ("act.tolerance=-0.5", r"act.tolerance=-0.5 is not allowed; allowed: a number >= 0"),
        ("act.halt_target=soon", r"act.halt_target='soon' is unknown; allowed: loss, loss_right, correct"),
        ("act.unsolved=first", r"act.unsolved='first' is unknown; allowed: argmin, last"),
        ("model.halt_grad=2", r"model.halt_grad=2 is not allowed; allowed: a number in \[0, 1\]"),
        ("model.halt_hidden=-1", r"model.halt_hidden=-1 must be >= 0"),
        ("model.block_layers=0", r"model.block_layers=0 .*allowed: an integer >= 1"),
        ("task.datamodule.curriculum.metric=best", r"curriculum.metric='best' is unknown"),
        ("task.datamodule.curriculum.start=0", r"curriculum.start=0 must be a positive integer"),
        ("task.datamodule.curriculum.mix=-0.1", r"curriculum.mix=-0.1 must be a number in \[0, 1\)"),
    ],
)
def test_bad_values_raise_config_error(compose_cfg, override, message):
    with pytest.raises(Exception) as info:
        build_module(compose_cfg(override))
    err = info.value
    while not isinstance(err, ConfigError) and err is not None:
        err = err.__cause__
    assert err is not None and re.search(message, str(err))


def test_cli_bad_input_is_one_line_and_nonzero(tmp_path, capsys):
    for args in (["act=nope"], ["task=nope"], ["model.T_max=0"], ["training=nope"],
                 ["model.n_latent=0", "model=trm"], ["model.mixer=conv", "model=trm"]):
        code, _, err = run_entry("rds_act.train", [*args, "logger=none", "callbacks=none"], capsys,
                                 tmp_path)
        assert code == 2, err
        errors = [line for line in err.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and args[0].split("=")[1] in errors[0], err


def test_eval_exit_picks_the_rule_and_rejects_unknown(compose_cfg):
    from rds_act.act import OracleExit

    module, _ = build_module(compose_cfg("eval.exit_rule=oracle", "ckpt_path=x", config="eval"))
    assert isinstance(module.exit_rule, OracleExit)
    module, _ = build_module(compose_cfg("ckpt_path=x", config="eval"))
    assert module.exit_rule is module.act
    with pytest.raises(Exception, match="eval.exit_rule='nope' is unknown; allowed: halt_head"):
        build_module(compose_cfg("eval.exit_rule=nope", "ckpt_path=x", config="eval"))
    with pytest.raises(Exception, match="eval.exit_rule=entropy needs a predicted class distribution"):
        build_module(compose_cfg("task=sparse_transform", "eval.exit_rule=entropy", "ckpt_path=x",
                                 config="eval"))


def lr_trace(schedule, **kwargs):
    """The learning rate of each of 100 steps under ``schedule`` (base rate 1), and the optimizer."""
    import torch

    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    sched = schedule(opt, total_steps=100, **kwargs)
    lrs = []
    for _ in range(100):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return lrs, opt


def test_warmup_cosine_schedule_shape():
    import torch

    from rds_act.optim import warmup_cosine

    lrs, opt = lr_trace(warmup_cosine, warmup_frac=0.1, min_lr_ratio=0.1)
    assert lrs[0] < 0.2 and max(lrs) == pytest.approx(1.0, abs=1e-6)
    assert lrs.index(max(lrs)) == 10  # peak right after the warm-up
    assert lrs[-1] == pytest.approx(0.1, abs=0.01)
    assert all(a >= b for a, b in zip(lrs[10:-1], lrs[11:], strict=True))
    with pytest.raises(ConfigError, match="scheduler.warmup_frac=2"):
        warmup_cosine(opt, total_steps=10, warmup_frac=2)
    two = torch.optim.SGD([{"params": [torch.zeros(1, requires_grad=True)], "lr": 0.02},
                           {"params": [torch.zeros(1, requires_grad=True)], "lr": 0.001}], lr=1.0)
    sched = warmup_cosine(two, total_steps=100, warmup_frac=0.1, min_lr_ratio=0.1)
    for _ in range(99):
        two.step()
        sched.step()
    assert [g["lr"] for g in two.param_groups] == pytest.approx([0.002, 0.0001], rel=0.01)  # each its own


def test_warmup_cosine_holds_the_peak_for_hold_frac_then_decays_over_the_rest():
    from rds_act.optim import warmup_cosine

    lrs, opt = lr_trace(warmup_cosine, warmup_frac=0.1, hold_frac=0.3, min_lr_ratio=0.0)
    assert all(lr == pytest.approx(1.0) for lr in lrs[10:40])  # warm-up 10 steps, then 30 held
    assert lrs[40] == pytest.approx(1.0) and lrs[41] < 1.0  # the cosine starts after the hold
    assert lrs[70] == pytest.approx(0.5, abs=0.01)  # its midpoint: half of the 60 steps left
    assert all(a > b for a, b in zip(lrs[40:-1], lrs[41:], strict=True)) and lrs[-1] < 0.01
    no_hold, _ = lr_trace(warmup_cosine, warmup_frac=0.1, min_lr_ratio=0.0)
    assert no_hold[40] < 0.9  # without it the same step is well into the decay
    with pytest.raises(ConfigError, match="scheduler.warmup_frac=0.5 \\+ scheduler.hold_frac=0.5"):
        warmup_cosine(opt, total_steps=10, warmup_frac=0.5, hold_frac=0.5)


def test_warmup_stable_decay_holds_the_rate_then_anneals():
    from rds_act.optim import warmup_stable_decay

    lrs, opt = lr_trace(warmup_stable_decay, warmup_frac=0.1, decay_frac=0.2)
    assert lrs[0] < 0.2 and all(lr == pytest.approx(1.0) for lr in lrs[10:80])
    assert all(a > b for a, b in zip(lrs[80:-1], lrs[81:], strict=True)) and lrs[-1] < 0.1
    with pytest.raises(ConfigError, match="scheduler.warmup_frac=0.5 \\+ scheduler.decay_frac=0.6"):
        warmup_stable_decay(opt, total_steps=10, warmup_frac=0.5, decay_frac=0.6)


def test_a_rejected_config_leaves_no_run_dir(tmp_path, capsys):
    """Bad input costs one line and exit 2, and leaves no half-made run dir behind."""
    code, _, err = run_entry("rds_act.train", ["model.T_max=0", "logger=none"], capsys, tmp_path)
    assert code == 2
    assert [ln for ln in err.splitlines() if ln.startswith("error:")] == [
        "error: model.T_max=0 is not allowed; allowed: an integer >= 1"]
    assert not list(tmp_path.glob("outputs/train/runs/*"))


@pytest.mark.parametrize("override, message", [
    ("optimizer.lr=-1", "optimizer.lr=-1 is not allowed; allowed: a number > 0"),
    ("optimizer.lr=abc", "optimizer.lr='abc' is not allowed; allowed: a number > 0"),
    ("optimizer.weight_decay=-0.1", "optimizer.weight_decay=-0.1 is not allowed"),
    ("optimizer.betas=[0.9,1.5]", r"optimizer.betas=\[0.9, 1.5\] is not allowed; allowed: two numbers"),
    ("seed=abc", "seed='abc' is not allowed; allowed: an integer >= 0"),
    ("trainer.max_epochs=abc", "trainer.max_epochs='abc' is not allowed"),
    ("trainer.precision=fp8", "trainer.precision='fp8' is not allowed; allowed: 64-true"),
    ("model.d_model=abc", "model.d_model='abc' is not allowed; allowed: an integer >= 1"),
    ("model.n_heads=0", "model.n_heads=0 is not allowed"),
    ("model.n_heads=3", "model.d_model=64 is not a multiple of model.n_heads=3"),
    ("model.dropout=1.0", r"model.dropout=1.0 is not allowed; allowed: a number in \[0, 1\)"),
    ("model.mlp_ratio=0", "model.mlp_ratio=0 is not allowed; allowed: a number > 0"),
    ("model=dyntrm_moe model.top_k=abc", "model.top_k='abc' is not allowed; allowed: an integer >= 1"),
    ("model=dyntrm_moe model.top_k=5", "model.top_k=5 must be <= model.num_experts=4"),
    ("model=dyntrm_moe model.balance_weight=-1", "model.balance_weight=-1 is not allowed"),
    ("callbacks=ema callbacks.ema.decay=1.5", "callbacks.ema.decay=1.5 is not allowed"),
    ("optimizer=ars2_neo optimizer.rho=-1", "optimizer.rho=-1 is not allowed"),
    ("optimizer=nope", "optimizer='nope' is unknown; allowed: adamw, ars2_neo, muon"),
    ("seed=-1", "seed=-1 is not allowed; allowed: an integer >= 0"),
    ("act=fixed act.deep_supervision=maybe", "act.deep_supervision='maybe' is not allowed"),
    ("model.halt_confidence=7", "model.halt_confidence=7 is not allowed; allowed: true or false"),
    ("trainer.check_val_every_n_epoch=0", "trainer.check_val_every_n_epoch=0 is not allowed"),
    ("act=qlearning act.explore_prob=abc", "act.explore_prob='abc' is not allowed; allowed: a number in"),
    ("scheduler=warmup_stable_decay scheduler.decay_frac=abc", "scheduler.decay_frac='abc' is not allowed"),
    ("task.halt_grad=half", r"task.halt_grad='half' is not allowed; allowed: a number in \[0, 1\]"),
    ("test=maybe", "test='maybe' is not allowed; allowed: true or false"),
    ("task.T_max=four", "task.T_max='four' is not allowed; allowed: an integer >= 1"),
    ("logger=csv +logger.csv.flush_logs_every_n_steps=often",
     "logger.csv.flush_logs_every_n_steps='often' is not allowed; allowed: an integer"),
    ("task=maze task.datamodule.augment=maybe", "task.datamodule.augment='maybe' is not allowed; "
                                                "allowed: true or false"),
])
def test_typed_values_are_validated_before_anything_is_built(compose_cfg, override, message):
    from rds_act.cli import check_group_choices

    overrides = override.split()
    with pytest.raises(Exception) as caught:
        check_group_choices(overrides)
        build_module(compose_cfg(*overrides))
    err = caught.value  # a ConfigError, or one raised while Hydra instantiates (its cause)
    while err is not None and not isinstance(err, ConfigError):
        err = err.__cause__ or err.__context__
    assert err is not None and re.search(message, str(err)), caught.value


@pytest.mark.parametrize("override, message", [
    ("seed=abc", "seed='abc' is not allowed; allowed: an integer >= 0"),
    ("model.step_signal=maybe", "model.step_signal='maybe' is not allowed; allowed: true or false"),
    ("scheduler=warmup_cosine scheduler.warmup_frac=2", "scheduler.warmup_frac=2 is not allowed"),
    ("scheduler=warmup_cosine scheduler.hold_frac=-1",
     r"scheduler.hold_frac=-1 is not allowed; allowed: a number in \[0, 1\]"),
    ("+model.foo=1", "model.foo is not a setting of rds_act.models.dyntrm.DynTRM; allowed: .*step_signal"),
    # Lightning's own keys, typed by its own signatures (they used to run, or end in a traceback)
    ("trainer.deterministic=maybe", "trainer.deterministic='maybe' is not allowed; allowed: true or "
                                    "false or 'warn' or null"),
    ("+trainer.max_steps=abc", "trainer.max_steps='abc' is not allowed; allowed: an integer"),
    ("callbacks.progress_bar.refresh_rate=abc",
     "callbacks.progress_bar.refresh_rate='abc' is not allowed; allowed: an integer"),
    ("+callbacks.model_checkpoint.every=1", "callbacks.model_checkpoint.every is not a setting of "
                                            "lightning.pytorch.callbacks.model_checkpoint.ModelCheckpoint"),
    # measured before anything is allocated: a training step of 10^5 steps, an evaluation batch of 10^7
    ("task.T_max=100000 task.ood_T_max=100000",
     r"task.T_max=100000 x task.datamodule.batch_size=128 needs ~\d+ GiB for one training step .* "
     r"this machine has \d+ GiB of memory; allowed: fewer steps"),
    ("task.ood_T_max=10000000", r"task.ood_T_max=10000000 x task.datamodule.eval_batch_size=\d+ needs "
                                r"~\d+ GiB to evaluate one batch"),
])
def test_typed_values_through_the_entry_point_are_one_line(tmp_path, capsys, override, message):
    """Through rds-act-train's entry code: one error line (exit 2) naming key, value and what is
    allowed, before the seed is set or any output is written; no run dir is left."""
    code, _, err = run_entry("rds_act.train", [*override.split(), "logger=none",
                                               f"hydra.run.dir={tmp_path}/run"], capsys, tmp_path)
    errors = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert code == 2 and len(errors) == 1 and re.search(message, errors[0]), err[-1500:]
    assert "Traceback" not in err and not (tmp_path / "run").exists()


@pytest.mark.parametrize("args, message", [
    (["task.T_max=100000", "task.ood_T_max=100000"],
     r"^error: task.T_max=100000 x task.datamodule.batch_size=128 needs ~\d+ GiB for one training step"),
    (["init_from="], r"^error: init_from='' is empty; allowed: a path to a checkpoint, or null"),
    (["ckpt_path="], r"^error: ckpt_path='' is empty; allowed: a path to a checkpoint, last, or null"),
    (["scheduler=warmup_cosine", "scheduler.warmup_frac=0.5", "scheduler.hold_frac=0.5"],
     r"^error: scheduler.warmup_frac=0.5 \+ scheduler.hold_frac=0.5 must be < 1"),
])
def test_a_refused_size_or_empty_checkpoint_from_the_shell_is_one_line(tmp_path, args, message):
    """A run too large for memory and an empty checkpoint argument, through a real interpreter:
    one line, exit 2, no run dir (they used to allocate until killed / train from scratch)."""
    proc = run_cli("rds_act.train", [*args, "logger=none", f"hydra.run.dir={tmp_path}/run"], tmp_path)
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert proc.returncode == 2 and len(errors) == 1 and re.search(message, errors[0]), proc.stderr[-1500:]
    assert "Traceback" not in proc.stderr and not (tmp_path / "run").exists()


def test_a_typed_value_from_the_shell_is_one_line(tmp_path):
    """The same through a real interpreter, as a shell meets it."""
    proc = run_cli("rds_act.train", ["model.step_signal=maybe", "logger=none",
                                     f"hydra.run.dir={tmp_path}/run"], tmp_path)
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert proc.returncode == 2 and errors == [
        "error: model.step_signal='maybe' is not allowed; allowed: true or false"], proc.stderr[-1500:]
    assert "Traceback" not in proc.stderr and not (tmp_path / "run").exists()


@pytest.mark.parametrize("config, override, message", [
    ("train", "task=sparse_transform", "task.datamodule.frac=1.5 is not allowed"),
    ("eval", "ckpt_path=x", "eval.threshold='abc' is not allowed; allowed: a number or null"),
])
def test_task_and_eval_values_are_validated(compose_cfg, config, override, message):
    extra = "task.datamodule.frac=1.5" if config == "train" else "eval.threshold=abc"
    with pytest.raises(ConfigError, match=message):
        build_module(compose_cfg(override, extra, config=config))


def test_a_misspelt_top_level_key_fails_in_one_line():
    from rds_act.cli import check_override_keys

    with pytest.raises(ConfigError, match=r"modle.d_model=.*'modle' is not a config key"):
        check_override_keys(["modle.d_model=64"], "train")
    check_override_keys(["model.d_model=64", "+extra=1", "hydra.run.dir=x", "-m", "seed=1"], "train")
    check_override_keys(["eval.exit_rule=entropy", "ckpt_path=x"], "eval")


@pytest.mark.parametrize("command, override, message", [
    ("train", "model.nope=3", r"error: Could not override 'model.nope'.*use \+model.nope=3"),
    ("train", "model.d_model=[64", "error: .*no viable alternative at input"),
    ("eval", "model.nope=3", r"error: Could not override 'model.nope'"),
    ("report", "nope=3", r"error: Could not override 'nope'"),
])
def test_hydra_override_errors_are_one_line(tmp_path, capsys, command, override, message):
    """What Hydra itself rejects (a key the config does not have, an override it cannot parse)
    comes out as one error line and exit 2, before any run dir exists, from every entry point."""
    extra = ["ckpt_path=run/checkpoints/last.ckpt"] if command == "eval" else []
    code, _, err = run_entry(f"rds_act.{command}", [*extra, override], capsys, tmp_path)
    assert code == 2
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and re.match(message, lines[0]), err
    assert not (tmp_path / "outputs").exists()


def test_a_hydra_override_error_from_the_shell_is_one_line(tmp_path):
    proc = run_cli("rds_act.train", ["model.nope=3"], tmp_path)
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert re.match(r"error: Could not override 'model.nope'.*use \+model.nope=3", lines[0])
    assert not (tmp_path / "outputs").exists()


def test_an_output_dir_that_cannot_be_created_is_one_line(tmp_path, monkeypatch):
    from rds_act import cli

    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    with pytest.raises(ConfigError, match=r"run.dir='.*a_file/run' cannot be created: .* not a directory"):
        cli.check_output_dir([f"hydra.run.dir={blocker / 'run'}"], "train")
    cli.check_output_dir([f"hydra.run.dir={tmp_path / 'new' / 'run'}"], "train")  # creatable
    monkeypatch.setattr(cli.os, "access", lambda path, mode: False)  # a read-only disk
    with pytest.raises(ConfigError, match=r"hydra.sweep.dir='.*' cannot be created: .* is not writable"):
        cli.check_output_dir(["-m", f"hydra.sweep.dir={tmp_path / 'sweep'}"], "train")


@pytest.mark.parametrize("name", sorted(p.stem for p in (CONF_DIR / "experiment").glob("*.yaml")))
def test_every_named_experiment_composes_and_builds(compose_cfg, name):
    """``experiment=<name>`` is one command in the README: each must compose, pass validation
    and build its model and datamodule (a key renamed elsewhere would break it silently)."""
    cfg = compose_cfg(f"experiment={name}", "logger=none")
    module, datamodule = build_module(cfg)
    assert module.model.T_max == cfg.task.T_max
    assert cfg.task.name.startswith(datamodule.name)  # rpc_small is the rpc generator
