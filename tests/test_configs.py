"""Every config group option composes; bad names and values fail in one line."""

from __future__ import annotations

import subprocess
import sys

import hydra
import pytest

from rds_act.build import build_module
from rds_act.cli import check_group_choices, group_options
from rds_act.errors import ConfigError


@pytest.mark.parametrize(
    "group", ["task", "model", "act", "optimizer", "trainer", "logger", "callbacks", "experiment"]
)
def test_every_option_composes(compose_cfg, group):
    options = group_options(group)
    assert options, f"conf/{group} has no options"
    for option in options:
        cfg = compose_cfg(f"{group}={option}")
        assert cfg.task.name in ("rpc", "sparse_transform")
        hydra.utils.instantiate(cfg.act)


@pytest.mark.parametrize("task", ["rpc", "sparse_transform"])
@pytest.mark.parametrize("act", ["fixed", "plsd"])
def test_module_builds_for_task_and_act(compose_cfg, task, act):
    module, datamodule = build_module(compose_cfg(f"task={task}", f"act={act}"))
    assert module.model.T_max == 8 and module.ood_T_max == 12
    assert type(datamodule).name == task


def test_unknown_group_option_names_value_and_choices():
    with pytest.raises(ConfigError, match=r"unknown act 'nope'; allowed: .*plsd"):
        check_group_choices(["act=plsd,nope"])
    check_group_choices(["act=fixed,plsd", "task=rpc", "trainer.max_epochs=1"])


@pytest.mark.parametrize(
    "override, message",
    [
        ("model.T_max=0", "model.T_max=0 must be >= 1"),
        ("task.datamodule.n_train=0", "n_train=0 must be a positive integer"),
        ("task.datamodule.batch_size=-4", "batch_size=-4 must be a positive integer"),
        ("task.ood_T_max=4", "task.ood_T_max=4 must be >= T_max=8"),
        ("act.threshold=1.5", r"act.threshold=1.5 is out of range; allowed: \[0.0, 1.0\]"),
    ],
)
def test_bad_values_raise_config_error(compose_cfg, override, message):
    with pytest.raises(Exception) as info:
        build_module(compose_cfg(override))
    err = info.value
    while not isinstance(err, ConfigError) and err is not None:
        err = err.__cause__
    assert err is not None and pytest.importorskip("re").search(message, str(err))


def test_cli_bad_input_is_one_line_and_nonzero(tmp_path):
    for args in (["act=nope"], ["task=nope"], ["model.T_max=0"]):
        proc = subprocess.run(
            [sys.executable, "-m", "rds_act.train", *args, "logger=none", "callbacks=none"],
            capture_output=True, text=True, cwd=tmp_path, timeout=120,
        )
        assert proc.returncode == 2, proc.stderr
        errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and args[0].split("=")[1] in errors[0], proc.stderr


def test_eval_exit_picks_the_rule_and_rejects_unknown(compose_cfg):
    from rds_act.act import OracleExit

    module, _ = build_module(compose_cfg("eval.exit=oracle", "ckpt_path=x", config="eval"))
    assert isinstance(module.exit_rule, OracleExit)
    module, _ = build_module(compose_cfg("ckpt_path=x", config="eval"))
    assert module.exit_rule is module.strategy
    with pytest.raises(Exception, match="eval.exit='nope' is unknown; allowed: halt_head"):
        build_module(compose_cfg("eval.exit=nope", "ckpt_path=x", config="eval"))
    with pytest.raises(Exception, match="eval.exit=entropy needs a predicted class distribution"):
        build_module(compose_cfg("task=sparse_transform", "eval.exit=entropy", "ckpt_path=x",
                                 config="eval"))
