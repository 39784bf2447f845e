"""What the trainer trains: Sigma with TRAF + TSAC (paper 4.2), or the base policy (the fine-tuned control group).

SigmaTask.loss (paper 4.2.1, 4.2.2):
    L_total(t) = L_act_total + w_sem(t) L_sem + w_int(t) L_intent + w_tau(t) L_tau,
    L_act_total = TRAF over the final actions (a_base + output when the shards carry base actions) + flow_weight *
    path C's flow-matching loss (the DiT's generative objective; SigmaModel.trajectory_flow_loss).

Semantic memory in training (our choice; the paper's L_time(z_pool, m_prev) needs an m_prev): windows arrive
shuffled, so each process keeps, per episode, the detached m_t of that episode's latest window it trained on and
feeds it as m_{t-1} next time the episode comes up. The memory gate then learns on non-zero memories, as in a
rollout, and L_time compares z_pool with the episode's memory; an episode's first window has no memory and leaves
L_time (losses.l_time). Validation uses no memory (pure forward). The bank is checkpointed per rank.

Shape legend (docs/architecture.md): B batch, T horizon, C chunk, Da action dim, D width, Dt tau dim.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

from sigma_vla.bases.policy import TINY_BASE_KIND
from sigma_vla.models.checkpoint import load_state_checked, read_model_dir
from sigma_vla.models.sigma import CHECKPOINT_KIND
from sigma_vla.processing.action_triple import ActionTriple, BASE_ACTION, GT_ACTION, has_actions
from sigma_vla.processing.transforms import BatchTransform
from sigma_vla.training import losses
from sigma_vla.training.config import TrainConfig
from sigma_vla.training.curriculum import curriculum_weights

RESIDUAL_PREFIXES = ("action.residual_head.", "action.tau_high.")  # g and tau_high (models/action.py)


class ModelFiles:
    """Model files of a task (a model directory of models/checkpoint.py), shared by both tasks: `kind` names the
    model class a directory must hold."""

    kind: str

    def save_model(self, model: nn.Module, directory: Path) -> None:
        model.save_pretrained(directory)

    def load_model(self, model: nn.Module, directory: Path) -> None:
        _, state, skipped = read_model_dir(directory, self.kind)
        load_state_checked(model, state, skipped, directory)


class SigmaTask(ModelFiles):
    """LoRA + telepathy heads of a SigmaModel under TRAF and TSAC."""

    kind = CHECKPOINT_KIND

    def __init__(self, model: nn.Module, config: TrainConfig, transform: BatchTransform):
        self.model, self.cfg, self.transform = model, config, transform
        self.memory: dict[int, Tensor] = {}  # episode_index -> (D,) detached m_t

    def param_groups(self, trainable: str) -> dict[str, list[tuple[str, nn.Parameter]]]:
        """"lora" (backbone adapters), "residual" (the telepathy residual head: TrainConfig.residual_lr_scale) and
        "heads" (everything else outside the backbone); "full" adds the backbone. Also sets requires_grad, so
        nothing outside the groups gets a gradient."""
        named = dict(self.model.named_parameters())
        lora = {id(p) for p in self.model.lora_parameters()}
        groups: dict[str, list] = {"lora": [], "residual": [], "heads": [], "backbone": []}
        for name, p in named.items():
            if id(p) in lora:
                groups["lora"].append((name, p))
            elif name.startswith(RESIDUAL_PREFIXES):
                groups["residual"].append((name, p))
            elif not name.startswith("backbone."):
                groups["heads"].append((name, p))
            elif trainable == "full" and p.is_floating_point():
                groups["backbone"].append((name, p))
        chosen = {id(p) for g in groups.values() for _, p in g}
        for p in named.values():
            p.requires_grad_(id(p) in chosen)
        return {k: v for k, v in groups.items() if v}

    def loss(self, model: nn.Module, batch: dict[str, Tensor], step: int) -> tuple[Tensor, dict[str, Tensor]]:
        b = self.transform(batch, step if model.training else None)
        training = model.training
        prev = self._recall(b["episode_index"], b["robot_state"]) if training and self._use_memory() else None
        out = model(b, prev_memory=prev)
        output, target = out.actions(), ActionTriple.from_batch(b, GT_ACTION)
        base = ActionTriple.from_batch(b, BASE_ACTION) if has_actions(b, BASE_ACTION) else None
        traf = self.cfg.traf
        l_act_total, m = losses.traf_loss(output, target, base, traf.alphas, traf.rho, traf.lambda_hard,
                                          residual_floor=traf.residual_floor)
        flow = self._flow_loss(model, out, target, base)
        l_act_total = l_act_total + traf.flow_weight * flow
        ts = self.cfg.tsac
        l_sem, sem_parts = losses.l_sem(out.z_pool, out.prev_memory, out.text_vision_pool, ts.beta_mi, ts.temperature)
        l_int = losses.l_intent(out.intent, out.semantic_memory)
        l_tau, tau_parts = losses.l_tau(out.telepathy_factors, out.action_conditions, ts.tau_0, ts.lambda_collapse,
                                        ts.eta_var)
        w = curriculum_weights(self.cfg.curriculum(), step)
        total = l_act_total + w["w_sem"] * l_sem + w["w_int"] * l_int + w["w_tau"] * l_tau
        if training and self._use_memory():
            self._remember(b["episode_index"], out.semantic_memory)
        metrics = {"loss": total.detach(), "L_act": m["L_act"], "L_act_hard": m["L_act_hard"],
                   "L_act_total": l_act_total.detach(), "L_flow": flow.detach(), "L_sem": l_sem.detach(),
                   "L_int": l_int.detach(), "L_tau": l_tau.detach(), "hard_ratio": m["hard_ratio"],
                   "tau_rms": tau_parts["tau_rms"], **sem_parts,
                   **{k: m[k] for k in ("mse_vector", "mse_chunk", "mse_trajectory")},
                   **{k: torch.tensor(v) for k, v in w.items()}}
        return total, metrics

    def _flow_loss(self, model: nn.Module, out, target: ActionTriple, base: ActionTriple | None) -> Tensor:
        """Path C's flow matching on the trajectory the baseline branch should produce: gt (- base with TRAF)."""
        if self.cfg.traf.flow_weight == 0:
            return out.action_trajectory.new_zeros(())
        goal = target.trajectory - (base.trajectory if base is not None else 0.0)  # (B, T, Da)
        inner = model.module if hasattr(model, "module") else model  # DDP wraps; the method lives on the module
        return inner.trajectory_flow_loss(out, goal.to(out.action_trajectory.dtype)).float().mean()

    # ---- per-episode semantic memory -------------------------------------------------------------------------------
    def _use_memory(self) -> bool:
        return self.cfg.tsac.memory == "episode"

    def _recall(self, episodes: Tensor, like: Tensor) -> Tensor | None:
        if not self.memory:
            return None
        d = next(iter(self.memory.values())).shape[-1]
        rows = [self.memory.get(int(e), torch.zeros(d)) for e in episodes.tolist()]
        return torch.stack(rows).to(like.device)  # (B, D)

    def _remember(self, episodes: Tensor, m_t: Tensor) -> None:
        for e, m in zip(episodes.tolist(), m_t.detach().float().cpu()):
            self.memory[int(e)] = m.clone()

    def state_dict(self) -> dict[str, Tensor]:
        if not self.memory:
            return {}
        keys = sorted(self.memory)
        return {"memory_episodes": torch.tensor(keys, dtype=torch.int64),
                "memory": torch.stack([self.memory[k] for k in keys])}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        self.memory = {int(e): m.clone() for e, m in zip(state.get("memory_episodes", []), state.get("memory", []))}


class BaseFinetuneTask(ModelFiles):
    """The control group: the base policy fine-tuned on Sigma's train split with the same loop and budget.

    Loss: MSE of its (B, T, Da) chunk against the normalised ground-truth trajectory (TinyBasePolicy's objective);
    the log also reports the vector (step 0) and chunk (first C steps) MSEs, comparable with Sigma's columns."""

    kind = TINY_BASE_KIND

    def __init__(self, model: nn.Module, config: TrainConfig, transform: BatchTransform, chunk: int):
        self.model, self.cfg, self.transform, self.chunk = model, config, transform, chunk

    def param_groups(self, trainable: str) -> dict[str, list[tuple[str, nn.Parameter]]]:
        """Every floating-point weight except the frozen MiniLM text table (the base is small: full fine-tuning)."""
        params = []
        for name, p in self.model.named_parameters():
            keep = p.is_floating_point() and name != "text_table.weight"
            p.requires_grad_(keep)
            if keep:
                params.append((name, p))
        return {"base": params}

    def loss(self, model: nn.Module, batch: dict[str, Tensor], step: int) -> tuple[Tensor, dict[str, Tensor]]:
        b = self.transform(batch, step if model.training else None)
        pred = model(b).float()  # (B, T, Da)
        gt = ActionTriple.from_batch(b, GT_ACTION).trajectory.float()  # (B, T, Da)
        mse_traj = losses.per_sample_mse(pred, gt).mean()
        mse_vec = losses.per_sample_mse(pred[:, 0], gt[:, 0]).mean()
        mse_chunk = losses.per_sample_mse(pred[:, : self.chunk], gt[:, : self.chunk]).mean()
        d = mse_traj.detach()
        return mse_traj, {"loss": d, "L_act": d, "mse_vector": mse_vec.detach(), "mse_chunk": mse_chunk.detach(),
                          "mse_trajectory": d}

    def state_dict(self) -> dict[str, Tensor]:
        """No state beyond the model and optimizer (the trainer checkpoints those)."""
        return {}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        pass
