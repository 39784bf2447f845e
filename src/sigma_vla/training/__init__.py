"""Training (paper 4.2): TRAF and TSAC losses, the alignment curriculum, and an Accelerate trainer with LoRA,
gradient accumulation, mixed precision, data parallelism, atomic checkpoints and exact resume.

Public API:
- losses: ActionTriple, per_sample_mse, hard_set, traf_loss, l_time, info_nce, l_sem, l_intent, l_tau, tau_rms
- curriculum: CurriculumConfig, LinearRamp, curriculum_weights
- config: TrainConfig, TrafConfig, TsacConfig; registry: EXPERIMENTS, get_experiment, model_config_for
- run: train_sigma (`sigma train`), finetune_base (`sigma train --finetune-base`, the control group)
- trainer: train, TrainResult, NonFiniteLossError; tasks: SigmaTask, BaseFinetuneTask
- logs: TABLE1_COLUMNS (the loss plot of `sigma plot-losses` is evaluation.loss_plot)

Normalisation and the batch transform live in sigma_vla.processing.transforms, the action triple and the per-sample MSE
in sigma_vla.processing.action_triple: inference and evaluation share them without importing training
(docs/architecture.md, Layers).
"""

from sigma_vla.training.config import TrafConfig, TrainConfig, TsacConfig
from sigma_vla.training.curriculum import CurriculumConfig, LinearRamp, curriculum_weights
from sigma_vla.training.logs import TABLE1_COLUMNS
from sigma_vla.training.losses import (
    ActionTriple,
    hard_set,
    info_nce,
    l_intent,
    l_sem,
    l_tau,
    l_time,
    per_sample_mse,
    tau_rms,
    traf_loss,
)
from sigma_vla.training.registry import EXPERIMENTS, get_experiment, model_config_for
from sigma_vla.training.run import finetune_base, train_sigma
from sigma_vla.training.tasks import BaseFinetuneTask, SigmaTask
from sigma_vla.training.trainer import NonFiniteLossError, TrainResult, train

__all__ = [
    "EXPERIMENTS", "TABLE1_COLUMNS", "ActionTriple", "BaseFinetuneTask", "CurriculumConfig",
    "LinearRamp", "NonFiniteLossError", "SigmaTask", "TrafConfig", "TrainConfig", "TrainResult",
    "TsacConfig", "curriculum_weights", "finetune_base", "get_experiment", "hard_set", "info_nce", "l_intent",
    "l_sem", "l_tau", "l_time", "model_config_for", "per_sample_mse", "tau_rms", "train",
    "traf_loss", "train_sigma",
]
