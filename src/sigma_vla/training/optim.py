"""Optimizer, LR schedule and the optimizer-group report (paper 4.2: only LoRA and the telepathy heads train).

The schedule is a LambdaLR of the optimizer step (linear warm-up, then cosine to min_lr_ratio or constant), stepped
by the loop once per applied update. We do not hand the scheduler to Accelerate: its wrapper steps a scheduler
num_processes times per update, which would tie the schedule to the world size.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from sigma_vla.training.config import TrainConfig


def lr_factor(step: int, config: TrainConfig) -> float:
    """Multiplier of config.lr at optimizer step `step` (0-based)."""
    if config.warmup_steps and step < config.warmup_steps:
        return (step + 1) / config.warmup_steps
    if config.lr_schedule == "constant":
        return 1.0
    span = max(config.planned_steps - config.warmup_steps, 1)  # an extended run keeps its planned cosine
    progress = min(max(step - config.warmup_steps, 0) / span, 1.0)
    return config.min_lr_ratio + (1.0 - config.min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def build_optimizer(groups: dict[str, list[tuple[str, nn.Parameter]]], config: TrainConfig) -> torch.optim.AdamW:
    """AdamW with one parameter group per named group (e.g. "lora", "heads"); empty groups are left out. The
    "residual" group runs at lr x config.residual_lr_scale (the scheduler scales every group alike).

    foreach=False keeps the per-parameter update order fixed, so resumed and straight runs agree bit for bit."""
    param_groups = [{"params": [p for _, p in named], "name": name,
                     "lr": config.lr * (config.residual_lr_scale if name == "residual" else 1.0)}
                    for name, named in groups.items() if named]
    if not param_groups:
        raise ValueError("nothing to train: every parameter group is empty")
    return torch.optim.AdamW(param_groups, lr=config.lr, weight_decay=config.weight_decay, foreach=False)


def build_scheduler(optimizer: torch.optim.Optimizer, config: TrainConfig) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, config))


def param_report(model: nn.Module, groups: dict[str, list[tuple[str, nn.Parameter]]]) -> dict[str, Any]:
    """How many parameters train, per optimizer group, against the model total: "text" is the whole record
    (RUN/param_report.json), "summary" the part printed at start (the totals and any warning)."""
    total = sum(p.numel() for p in model.parameters())
    per_group = {name: {"tensors": len(named), "params": sum(p.numel() for _, p in named)}
                 for name, named in groups.items()}
    trainable = sum(g["params"] for g in per_group.values())
    grad_on = sum(p.numel() for p in model.parameters() if p.requires_grad)
    groups_text = [f"optimizer groups: {name} {g['params']:,} params in {g['tensors']} tensors"
                   for name, g in per_group.items()]
    summary = [f"trainable {trainable:,} of {total:,} parameters ({100.0 * trainable / max(total, 1):.2f}%); "
               f"frozen {total - trainable:,}"]
    if grad_on != trainable:
        summary.append(f"warning: {grad_on:,} parameters have requires_grad but only {trainable:,} are optimized")
    return {"groups": per_group, "trainable": trainable, "total": total, "text": "\n".join(groups_text + summary),
            "summary": "\n".join(summary)}
