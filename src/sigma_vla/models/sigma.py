"""SigmaModel: the three workspaces of paper section 3 in the forward order of paper 4.2.

  1. vision pass without tau: V_base, state tokens, vision tokens (the modulated vision block on V_base);
  2. language: [text_tokens; vision_tokens; state_tokens] -> MLLM backbone (LoRA) -> hidden_sequence_base ->
     semantic factors, memory m_t, summaries, intent, tau; tau -> language modulator -> high_level_rep;
  3. vision pass with tau: FiLM(V_base, tau) -> the same block -> tau-modulated vision tokens;
  4. action: baseline branch (tau = 0), telepathy residuals, final actions = baseline + residual, fusion.

Entry point: `forward(batch, prev_memory)` is pure (m_{t-1} = 0 unless given) and holds no episode state, so one
model can serve many robots at once; the episode's memory lives in inference.SigmaPolicy (docs/architecture.md,
"Memory belongs to an episode"). In eval mode path C samples deterministically (the prior mean unless noise is
given). Losses live in sigma_vla.training; the model exposes what they need (every intermediate of the paper in
SigmaOutput, and `trajectory_flow_loss` for path C).

Shape legend (docs/architecture.md): B batch, T horizon, C chunk, Da action dim, N tokens, L text length, N_v vision
tokens, N_s state tokens, D d_model, K semantic factors, Dt tau dim, W action width.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sigma_vla.models.action import ActionWorkspace
from sigma_vla.models.backbone import Backbone, build_backbone
from sigma_vla.models.checkpoint import load_state_checked, read_model_dir, save_model_dir
from sigma_vla.models.config import SigmaConfig
from sigma_vla.models.language import LanguageWorkspace
from sigma_vla.models.layers import masked_mean
from sigma_vla.models.trajectory import TrajectoryCondition
from sigma_vla.models.vision import VisionWorkspace
from sigma_vla.processing.action_triple import ActionTriple

CHECKPOINT_KIND = "sigma-vla/SigmaModel"


@dataclass(kw_only=True)
class SigmaOutput:
    """Everything one forward produces. Final actions are baseline + residual; with telepathy off they equal the
    baseline exactly. All actions are in the model's (normalised) units; TRAF adds the offline base action on top.
    Keyword-only: several fields share a shape and would swap silently by position."""

    action_vector: Tensor  # (B, Da) a_vec^tau
    action_chunk: Tensor  # (B, C, Da)
    action_trajectory: Tensor  # (B, T, Da)
    baseline_vector: Tensor  # (B, Da) tau = 0 branch
    baseline_chunk: Tensor  # (B, C, Da)
    baseline_trajectory: Tensor  # (B, T, Da)
    residual_vector: Tensor  # (B, Da) telepathy residual head g
    residual_chunk: Tensor  # (B, C, Da)
    residual_trajectory: Tensor  # (B, T, Da)
    fused_action: Tensor  # (B, Da) u_t = phi(a_vec, a_chunk, a_traj)
    telepathy_factors: Tensor  # (B, Dt) tau (zeros with telepathy off)
    high_level_rep: Tensor  # (B, N, D)
    hidden_mask: Tensor  # (B, N) bool, valid tokens of hidden/high_level_rep
    action_conditions: Tensor  # (B, Dt) c_act(high_level_rep, tau)
    baseline_conditions: Tensor  # (B, Dt) c_act at tau = 0
    action_query_tokens: Tensor  # (B, Nq, W) q_t of the telepathy branch
    semantic_factors: Tensor  # (B, K, D) Z_sem
    z_pool: Tensor  # (B, D)
    semantic_memory: Tensor  # (B, D) m_t
    prev_memory: Tensor  # (B, D) m_{t-1}
    intent: Tensor  # (B, D) z_intent
    env_context: Tensor  # (B, D) c_env
    behavior_summary: Tensor  # (B, D) c_beh
    text_summary: Tensor  # (B, D) c_text
    text_pool: Tensor  # (B, D) masked mean of the text token embeddings (semantic-text alignment, paper 5.3)
    vision_pool: Tensor  # (B, D) mean of the vision tokens of the pass without tau
    text_vision_pool: Tensor  # (B, D) (text_pool + vision_pool) / 2: the "text+vision" side of L_mi (paper 4.2.2)
    vision_tokens: Tensor  # (B, N_v, D) vision tokens of the pass with tau
    vector_logits: Tensor  # (B, Da, bins) path A action tokens (baseline branch)
    trajectory_condition: TrajectoryCondition | None  # path C conditioning, for trajectory_flow_loss (None: skipped)

    def actions(self) -> ActionTriple:
        """The three final actions a^tau (what TRAF adds to the base's offline actions)."""
        return ActionTriple(self.action_vector, self.action_chunk, self.action_trajectory)

    def detach(self) -> SigmaOutput:
        kw = {f.name: getattr(self, f.name) for f in fields(self)}
        return SigmaOutput(**{k: v.detach() if isinstance(v, Tensor) else v for k, v in kw.items()})


class SigmaModel(nn.Module):
    def __init__(self, config: SigmaConfig | None = None, backbone: Backbone | None = None):
        super().__init__()
        self.config = config = config or SigmaConfig()
        self.backbone = backbone if backbone is not None else build_backbone(config.backbone)
        if self.backbone.hidden_size != config.d_model:
            raise ValueError(f"backbone width {self.backbone.hidden_size} != config d_model {config.d_model}")
        self.vision = VisionWorkspace(config)
        self.language = LanguageWorkspace(config)
        self.action = ActionWorkspace(config)
        if config.language.text_mode == "command_id":
            # Paper 4.2: "encodes the text commands into one-hot encoding and then aligns them to d_model via fixed
            # linear projection". Fixed = a seeded random matrix, saved with the model, never trained.
            g = torch.Generator().manual_seed(0)
            proj = torch.randn(config.language.num_commands, config.d_model, generator=g) / config.d_model**0.5
            self.register_buffer("command_projection", proj)  # (num_commands, D)
        self.telepathy = config.telepathy

    # ---- forward ---------------------------------------------------------------------------------------------------

    def forward(self, batch: dict[str, Any], prev_memory: Tensor | None = None, telepathy: bool | None = None,
                noise: Tensor | None = None, trajectory: bool = True) -> SigmaOutput:
        """batch: observation keys of the batch contract (vision_inputs, robot_state, text_input_ids /
        text_attention_mask or task_index, optional depth / audio); other keys are ignored. prev_memory (B, D) is
        m_{t-1} (zeros when None); telepathy=False forces tau = 0; noise (B, T, Da) for path C (prior mean if None);
        trajectory=False skips path C's sampler (ActionWorkspace.forward) for callers that execute the chunk only."""
        telepathy = self.telepathy if telepathy is None else telepathy
        text, text_mask = self._text_tokens(batch)  # (B, L, D), (B, L)
        v_base, state_tokens = self.vision.encode(batch)  # (B, N_v, D), (B, N_s, D)
        vision0 = self.vision.modulate(v_base, None)  # (B, N_v, D) vision pass without tau
        padded_len = text.shape[1]
        text, text_mask = _trim_padding(text, text_mask)  # (B, L', D), (B, L') with L' <= L
        seq = torch.cat([text, vision0, state_tokens], dim=1)  # (B, N, D)
        mask, regions = _regions(text_mask, vision0.shape[1], state_tokens.shape[1])  # (B, N)
        positions = _positions(text.shape[1], padded_len, seq.shape[1] - text.shape[1], seq.device)  # (N,)
        hidden = self.backbone(seq, mask, positions.expand(seq.shape[0], -1))  # (B, N, D) hidden_sequence_base
        b, d = hidden.shape[0], hidden.shape[-1]
        m_prev = prev_memory if prev_memory is not None else hidden.new_zeros(b, d)  # (B, D)
        sem = self.language(hidden, regions, m_prev)
        tau = sem.telepathy_factors if telepathy else torch.zeros_like(sem.telepathy_factors)  # (B, Dt)
        high = self.language.modulator(hidden, tau)  # (B, N, D) high_level_rep
        vision_tau = self.vision.modulate(v_base, tau)  # (B, N_v, D) vision pass with tau
        act = self.action(hidden, high, mask, state_tokens, vision_tau, tau, noise, trajectory)
        text_pool, vision_pool = masked_mean(text, text_mask), vision0.mean(dim=1)  # (B, D) each
        return SigmaOutput(
            action_vector=act.action_vector, action_chunk=act.action_chunk, action_trajectory=act.action_trajectory,
            baseline_vector=act.baseline_vector, baseline_chunk=act.baseline_chunk,
            baseline_trajectory=act.baseline_trajectory, residual_vector=act.residual_vector,
            residual_chunk=act.residual_chunk, residual_trajectory=act.residual_trajectory,
            fused_action=act.fused_action, telepathy_factors=tau, high_level_rep=high, hidden_mask=mask,
            action_conditions=act.action_conditions, baseline_conditions=act.baseline_conditions,
            action_query_tokens=act.action_query_tokens, semantic_factors=sem.semantic_factors, z_pool=sem.z_pool,
            semantic_memory=sem.semantic_memory, prev_memory=sem.prev_memory, intent=sem.intent,
            env_context=sem.env_context, behavior_summary=sem.behavior_summary, text_summary=sem.text_summary,
            text_pool=text_pool, vision_pool=vision_pool, text_vision_pool=0.5 * (text_pool + vision_pool),
            vision_tokens=vision_tau, vector_logits=act.vector_logits, trajectory_condition=act.trajectory_condition,
        )

    def _text_tokens(self, batch: dict[str, Any]) -> tuple[Tensor, Tensor]:
        """Text tokens from the backbone's own embedding table, or the fixed projection of a one-hot command id."""
        if self.config.language.text_mode == "command_id":
            idx = batch["task_index"].long().view(-1)  # (B,)
            n = self.command_projection.shape[0]
            if idx.numel() and (idx.min() < 0 or idx.max() >= n):
                raise ValueError(f"task_index must be in [0, {n}) for text_mode='command_id', got {idx.tolist()}")
            one_hot = F.one_hot(idx, n).to(self.command_projection.dtype)  # (B, num_commands)
            tokens = (one_hot @ self.command_projection).unsqueeze(1)  # (B, 1, D)
            return tokens, torch.ones(tokens.shape[:2], dtype=torch.bool, device=tokens.device)
        if "text_input_ids" not in batch:
            raise KeyError("batch has no 'text_input_ids': tokenize the task strings with "
                           "sigma_vla.processing.text.TaskTokens (or use text_mode='command_id')")
        ids = batch["text_input_ids"]  # (B, L)
        mask = batch.get("text_attention_mask")
        mask = torch.ones_like(ids, dtype=torch.bool) if mask is None else mask.bool()  # (B, L)
        return self.backbone.embed_text(ids), mask  # (B, L, D), (B, L)

    # ---- what the losses need ------------------------------------------------------------------------------------

    def trajectory_flow_loss(self, out: SigmaOutput, target: Tensor, noise: Tensor | None = None,
                             time: Tensor | None = None) -> Tensor:
        """Per-sample flow-matching loss (B,) of path C's D_traj on target trajectories (B, T, Da), under the
        conditioning of `out` (the baseline branch). The trainer picks the target: the ground truth, or
        ground truth - base action when TRAF trains on residuals."""
        return self.action.trajectory.flow_loss(out.trajectory_condition, target, noise, time)

    def lora_parameters(self) -> list[nn.Parameter]:
        return list(self.backbone.lora_parameters())

    def head_named_parameters(self) -> list[tuple[str, nn.Parameter]]:
        """The Sigma heads (everything outside the backbone): what CHECK A of the evaluation summarises."""
        return [(n, p) for n, p in self.named_parameters() if not n.startswith("backbone.")]

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    # ---- save / load -----------------------------------------------------------------------------------------------

    def save_pretrained(self, directory: str | Path) -> Path:
        """model.safetensors + config.json; the pretrained MiniLM's frozen weights are not written (rebuilt on load)."""
        skip = [f"backbone.{k}" for k in self.backbone.frozen_state_keys()] if self.backbone.reloadable else []
        return save_model_dir(directory, self, self.config.to_dict(), CHECKPOINT_KIND, skip)

    @classmethod
    def from_pretrained(cls, directory: str | Path, backbone: Backbone | None = None) -> SigmaModel:
        config, state, skipped = read_model_dir(directory, CHECKPOINT_KIND)
        model = cls(SigmaConfig.from_dict(config), backbone=backbone)
        load_state_checked(model, state, skipped, directory)
        return model


def _trim_padding(text: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
    """Drop the text columns that are padding in every row (texts are padded to text_max_len, most are shorter):
    every head reads the text through the mask, so this changes no value, only how many tokens the backbone runs."""
    used = mask.any(dim=0).nonzero()  # (L'', 1) columns some row uses
    keep = int(used.max()) + 1 if used.numel() else 1
    return text[:, :keep], mask[:, :keep]


def _positions(n_text: int, padded_len: int, n_rest: int, device: torch.device) -> Tensor:
    """Position ids of [text; vision; state] as if the text were still padded to padded_len, so that trimming
    (`_trim_padding`) leaves a backbone with absolute positions (BERT) exactly where it was."""
    return torch.cat([torch.arange(n_text, device=device),
                      torch.arange(padded_len, padded_len + n_rest, device=device)])  # (N,)


def _regions(text_mask: Tensor, n_vision: int, n_state: int) -> tuple[Tensor, dict[str, Tensor]]:
    """Backbone padding mask over [text; vision; state] (B, N) and one bool mask per region for the summary heads."""
    b, n_text = text_mask.shape
    dev = text_mask.device
    ones = torch.ones(b, n_vision + n_state, dtype=torch.bool, device=dev)
    mask = torch.cat([text_mask.bool(), ones], dim=1)  # (B, N)
    pos = torch.arange(mask.shape[1], device=dev)  # (N,)
    in_text = (pos < n_text).expand(b, -1)  # (B, N)
    in_vision = ((pos >= n_text) & (pos < n_text + n_vision)).expand(b, -1)  # (B, N)
    in_state = (pos >= n_text + n_vision).expand(b, -1)  # (B, N)
    return mask, {"all": mask, "text": mask & in_text, "vision": in_vision, "state": in_state}

