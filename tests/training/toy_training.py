"""A toy task for the training loop's machinery (checkpoints, resume, non-finite steps), independent of the model."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from sigma_vla.training.batches import TensorDictDataset


class ToyNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.frozen = nn.Linear(4, 8)
        self.head = nn.Linear(8, 2)
        self.drop = nn.Dropout(0.2)  # consumes RNG, so resume must restore it

    def forward(self, x):
        return self.head(self.drop(torch.relu(self.frozen(x))))


class ToyTask:
    """poison_steps: steps whose loss is NaN, on the first attempt only, or on every attempt with persistent=True."""

    def __init__(self, poison_steps: set[int] | None = None, persistent: bool = False):
        torch.manual_seed(0)
        self.model = ToyNet()
        self.poison_steps = set(poison_steps or ())
        self.persistent = persistent
        self.poisoned: set[int] = set()

    def param_groups(self, trainable: str):
        for p in self.model.frozen.parameters():
            p.requires_grad_(trainable == "full")
        groups = {"heads": list(self.model.head.named_parameters())}
        if trainable == "full":
            groups["backbone"] = list(self.model.frozen.named_parameters())
        return groups

    def loss(self, model, batch, step):
        pred = model(batch["x"])
        loss = ((pred - batch["y"]) ** 2).mean()
        if step in self.poison_steps and model.training and (self.persistent or step not in self.poisoned):
            loss = loss * float("nan")
            self.poisoned.add(step)
        return loss, {"loss": loss.detach(), "L_act": loss.detach()}

    def save_model(self, model, directory: Path):
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(directory / "model.safetensors"))

    def load_model(self, model, directory: Path):
        model.load_state_dict(load_file(str(directory / "model.safetensors")))

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


def toy_data(n: int = 64, seed: int = 1) -> TensorDictDataset:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, generator=g)
    return TensorDictDataset({"x": x, "y": torch.stack([x.sum(1), x[:, 0] - x[:, 1]], 1)})


