"""Refuse a run whose unrolled steps cannot fit in memory, before it allocates them.

Memory of the default regime (``training=unroll``) grows with the step budget: every step with a
gradient keeps its activations for the backward pass, and every step keeps its outputs for the
strategy's loss and the metrics. ``task.T_max=100000`` would otherwise allocate for minutes and end
in an out-of-memory traceback. The cost of one step is measured, not guessed: two samples through
one and two steps, counting what autograd saves (the weights aside) and what the unroll returns.
"""

from __future__ import annotations

import os

import torch
from omegaconf import DictConfig, OmegaConf
from torch import Tensor

from rds_act.data.base import first_rows, named_loaders
from rds_act.errors import ConfigError

GIB = 2**30


def step_bytes(module: torch.nn.Module, batch: dict[str, Tensor]) -> tuple[float, float]:
    """(bytes autograd keeps, bytes of outputs) per sample per step, from ``batch`` (a few samples)
    unrolled one and two steps in training mode."""
    params = {p.data_ptr() for p in module.parameters()}

    def measure(steps: int) -> tuple[int, int]:
        saved = [0]

        def pack(t: Tensor) -> Tensor:
            if t.data_ptr() not in params:
                saved[0] += t.numel() * t.element_size()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            stack = module.stack(batch, steps)
        u = stack.unrolled
        outputs = sum(t.numel() * t.element_size() for t in (u.preds, u.halt_logits, u.summaries,
                                                            stack.losses, stack.correct))
        return saved[0], outputs

    was_training = module.training
    module.train()
    try:
        (s1, o1), (s2, o2) = measure(1), measure(2)
    finally:
        module.train(was_training)
    n = next(iter(v for v in batch.values() if torch.is_tensor(v))).shape[0]
    return max(s2 - s1, 0) / n, max(o2 - o1, 0) / n


def memory_limit(cfg: DictConfig) -> tuple[float, str]:
    """Bytes of the memory the run's tensors live in, and its name."""
    accelerator = str(OmegaConf.select(cfg, "trainer.accelerator", default="cpu"))
    if accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available()):
        if torch.cuda.is_available():
            return float(torch.cuda.get_device_properties(0).total_memory), "GPU memory"
    return float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")), "memory"


def check_memory(module: torch.nn.Module, datamodule: object, cfg: DictConfig,
                 training: bool = True) -> None:
    """One line, before anything trains, when one training batch (``training``) or one
    evaluation batch of unrolled steps needs more than the machine's memory. Only the unrolled
    regime is checked: under ``training=deep_supervision`` an optimizer step holds one
    supervision step whatever ``N_sup`` is; a datamodule of a user's own that yields no dict
    batches is not probed."""
    if type(module).__name__ != "ACTLitModule":
        return
    try:  # two validation samples; fit and test set the datamodule up the same way
        datamodule.setup("fit")
        probe = first_rows(named_loaders(datamodule.val_dataloader(), "validate")["val"])
    except Exception:  # noqa: BLE001 - a datamodule of a user's own: its own setup will say
        return
    if probe is None:
        return
    with torch.random.fork_rng(devices=[]):  # dropout in the probe must not move the run's stream
        grad_per, out_per = step_bytes(module, probe)
    steps, ood_steps = int(module.model.T_max), int(module.ood_T_max)
    grad_steps = getattr(module.model, "grad_steps", None)
    with_grad = steps if grad_steps is None else min(steps, int(grad_steps))
    batch = int(OmegaConf.select(cfg, "task.datamodule.batch_size", default=1))
    eval_batch = int(OmegaConf.select(cfg, "task.datamodule.eval_batch_size", default=1))
    train_need = batch * (with_grad * grad_per + steps * out_per) if training else 0.0
    eval_need = eval_batch * max(steps, ood_steps) * out_per
    limit, where = memory_limit(cfg)
    if max(train_need, eval_need) <= limit:
        return
    if train_need >= eval_need:
        raise ConfigError(
            f"task.T_max={steps} x task.datamodule.batch_size={batch} needs ~{train_need / GIB:.0f} "
            f"GiB for one training step ({(grad_per + out_per) / 2**20:.2f} MiB per sample per "
            f"step) and this machine has {limit / GIB:.0f} GiB of {where}; allowed: fewer steps "
            "(task.T_max; model.grad_steps keeps gradients in the last few only), a smaller "
            "task.datamodule.batch_size, or model.activation_checkpointing=true")
    raise ConfigError(
        f"task.ood_T_max={ood_steps} x task.datamodule.eval_batch_size={eval_batch} needs "
        f"~{eval_need / GIB:.0f} GiB to evaluate one batch and this machine has {limit / GIB:.0f} "
        f"GiB of {where}; allowed: fewer steps or a smaller task.datamodule.eval_batch_size")
