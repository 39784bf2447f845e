"""The control group for a LeRobot base: the policy fine-tuned through our trainer with its own training loss
(docs/architecture.md, "Honest evaluation": same train split, same loop, same step budget as Sigma).

`LeRobotFinetuneTask.loss` is LeRobot's `policy.forward(batch) -> (loss, info)` on the batch its own preprocessor
builds from our shard batch (bases/finetune.py), as LeRobot's `lerobot-train` calls it. What trains is
what the policy itself leaves trainable (pi0.5's train_expert_only, ...), with TrainConfig's one learning rate.
Checkpoints hold the policy as a LeRobot checkpoint (save_pretrained + processors, safetensors and JSON) beside the
trainer's optimizer, scheduler and RNG state; the final RUN/model is such a checkpoint, recorded in RUN/policy.json
(runs/spec.py, `lerobot_model_record`), so eval and rollout load it back as a base.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from sigma_vla.bases.finetune import load_weights, save_checkpoint, training_batch
from sigma_vla.bases.lerobot import LeRobotPolicyBase
from sigma_vla.runs.spec import update_model_record
from sigma_vla.training.config import TrainConfig
from sigma_vla.training.distributed import process_state
from sigma_vla.training.trainer import TrainResult, train


class LeRobotFinetuneTask:
    """A LeRobot policy (held by a LeRobotPolicyBase, which knows its cameras, tasks and processors) under its own
    loss. The train log's loss and L_act are that loss; the policy's info scalars (ACT's l1_loss, kld_loss) go to
    TensorBoard."""

    def __init__(self, base: LeRobotPolicyBase, config: TrainConfig):
        self.base, self.cfg = base, config
        self.model = base.policy.train()  # dropout and ACT's VAE encoder are on in training mode only

    def param_groups(self, trainable: str) -> dict[str, list[tuple[str, nn.Parameter]]]:
        """Every floating-point weight the policy leaves trainable (`trainable` is Sigma's setting, not ours)."""
        return {"policy": [(n, p) for n, p in self.model.named_parameters() if p.requires_grad
                           and p.is_floating_point()]}

    def loss(self, model: nn.Module, batch: dict[str, Tensor], step: int) -> tuple[Tensor, dict[str, Tensor]]:
        loss, info = model(self.base.preprocess(training_batch(self.base, batch)))  # policy.forward
        d = loss.detach()
        extra = {k: torch.tensor(float(v)) for k, v in (info or {}).items()
                 if isinstance(v, (int, float)) or (isinstance(v, Tensor) and v.numel() == 1)}
        return loss, {**extra, "loss": d, "L_act": d}

    def save_model(self, model: nn.Module, directory: Path) -> None:
        save_checkpoint(model, self.base.preprocess, self.base.postprocess, directory)

    def load_model(self, model: nn.Module, directory: Path) -> None:
        load_weights(model, directory)

    def state_dict(self) -> dict[str, Tensor]:
        """No state beyond the policy and optimizer (the trainer checkpoints those)."""
        return {}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        pass


def fit_lerobot(base: LeRobotPolicyBase, config: TrainConfig, train_ds: Any, val_ds: Any, out: Path,
                **train_options: Any) -> TrainResult:
    """Fine-tune through the trainer; once the run is complete, RUN/policy.json gets RUN/model's fingerprint."""
    result = train(LeRobotFinetuneTask(base, config), train_ds, val_ds, config, out, **train_options)
    if process_state().is_main_process and (Path(out) / "model").is_dir():
        update_model_record(Path(out))
    return result
