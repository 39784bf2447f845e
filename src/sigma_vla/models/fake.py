"""`make_fake_batch`: a valid random batch of the batch contract, for tests and benchmarks (openpi's fake_obs).

Keys: every schema.SAMPLE_KEYS entry batched (vision_inputs (B, V, 3, S, S) uint8, robot_state (B, Ds) float32,
gt_action_vector (B, Da), gt_action_chunk (B, C, Da), gt_action_trajectory (B, T, Da), avg/max_action_l2 (B,),
episode_index, frame_index, task_index, split (B,) int64), text_input_ids / text_attention_mask (B, L) int64, depth
(B, V, 1, S, S) float32 and audio (B, mels, frames) float32 when the config uses them, and schema.BASE_ACTION_KEYS
when with_base_actions.
"""

from __future__ import annotations

import torch
from torch import Tensor

from sigma_vla.data.schema import BASE_ACTION_KEYS, SAMPLE_KEYS
from sigma_vla.models.config import SigmaConfig
from sigma_vla.processing.action_triple import ActionTriple, BASE_ACTION, GT_ACTION


def make_fake_batch(config: SigmaConfig, batch_size: int, seed: int = 0, with_base_actions: bool = False,
                    device: str | torch.device = "cpu") -> dict[str, Tensor]:
    g = torch.Generator().manual_seed(seed)
    b, vc = batch_size, config.vision
    s, t, c, da = vc.image_size, config.horizon, config.chunk, config.action_dim

    def randn(*shape: int) -> Tensor:
        return torch.randn(*shape, generator=g)

    traj = randn(b, t, da)  # (B, T, Da)
    norms = traj.norm(dim=-1)  # (B, T)
    batch: dict[str, Tensor] = {
        "vision_inputs": torch.randint(0, 256, (b, vc.num_cameras, 3, s, s), generator=g, dtype=torch.uint8),
        "robot_state": randn(b, config.state_dim),
        **ActionTriple.from_chunk(traj, c).map(torch.clone).as_dict(GT_ACTION),  # (B, Da), (B, C, Da), (B, T, Da)
        "avg_action_l2": norms.mean(dim=1),
        "max_action_l2": norms.amax(dim=1),
        "episode_index": torch.arange(b, dtype=torch.long),
        "frame_index": torch.zeros(b, dtype=torch.long),
        "task_index": torch.randint(0, config.language.num_commands, (b,), generator=g),
        "split": torch.zeros(b, dtype=torch.long),
        "pad_steps": torch.zeros(b, dtype=torch.long),
    }
    assert set(batch) == set(SAMPLE_KEYS), "make_fake_batch is out of date with data/schema.py"
    batch.update(_fake_text(config, b, g))
    if vc.use_depth:
        batch["depth"] = torch.rand(b, vc.num_cameras, 1, s, s, generator=g)
    if vc.use_audio:
        batch["audio"] = randn(b, vc.audio_mels, vc.audio_frames)
    if with_base_actions:
        base = traj + 0.3 * randn(b, t, da)  # a base that is close to, not equal to, the ground truth
        batch.update(ActionTriple.from_chunk(base, c).map(torch.clone).as_dict(BASE_ACTION))
        assert set(BASE_ACTION_KEYS) <= set(batch)
    return {k: v.to(device) for k, v in batch.items()}


def _fake_text(config: SigmaConfig, b: int, g: torch.Generator) -> dict[str, Tensor]:
    """[CLS] w1 .. wn [SEP] [PAD]..., n random, ids from the ordinary WordPiece range (1000 .. vocab)."""
    l_max = config.language.text_max_len
    ids = torch.zeros(b, l_max, dtype=torch.long)
    lengths = torch.randint(max(1, l_max // 2), l_max - 1, (b,), generator=g) if l_max > 2 else torch.zeros(b)
    vocab = config.backbone.vocab_size
    low = min(1000, vocab - 1)
    for i, n in enumerate(lengths.tolist()):
        n = int(n)
        ids[i, 0] = 101 if vocab > 102 else 1
        ids[i, 1:n + 1] = torch.randint(low, vocab, (n,), generator=g)
        ids[i, n + 1] = 102 if vocab > 102 else 1
    return {"text_input_ids": ids, "text_attention_mask": (ids != 0).long()}
