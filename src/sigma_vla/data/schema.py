"""The shard and batch contract shared by prep, the model, training and evaluation (paper 4.1 sample dicts).

Shape legend used across the package (docs/architecture.md, "The batch contract and the shape legend"): B batch,
T horizon, C chunk, Da action dim, Ds state dim, N tokens, D width, K semantic factors, V cameras, S image side,
L text length.

A shard file `shard_00000.safetensors` holds one tensor per key below, stacked over its samples (first dim N).
Strings do not go into safetensors: task strings live in `meta.json["tasks"]` (indexed by task_index) and the
split of a sample is coded by SPLIT_CODES.
"""

from __future__ import annotations

# Keys every shard carries (paper 4.1 names plus bookkeeping), with per-sample shape in the legend above.
SAMPLE_KEYS: dict[str, str] = {
    "vision_inputs": "(V, 3, S, S) uint8, frames at the window start; V = 0 with --state-only",
    "robot_state": "(Ds,) float32, state at the window start",
    "gt_action_vector": "(Da,) float32, the action at the window start",
    "gt_action_chunk": "(C, Da) float32, the first C actions of the window",
    "gt_action_trajectory": "(T, Da) float32, all T actions of the window",
    "avg_action_l2": "() float32, mean L2 norm of the window's actions",
    "max_action_l2": "() float32, max L2 norm of the window's actions",
    "episode_index": "() int64",
    "frame_index": "() int64, frame index of the window start",
    "task_index": "() int64, index into meta.json tasks",
    "split": "() int64, see SPLIT_CODES",
    "pad_steps": "() int64, actions past the episode's end (repeats of its last action); 0 in a full window",
}

# Added by `sigma base-actions` (the frozen base's offline actions, TRAF residual targets, paper 4.2.1).
BASE_ACTION_KEYS: dict[str, str] = {
    "base_action_vector": "(Da,) float32",
    "base_action_chunk": "(C, Da) float32",
    "base_action_trajectory": "(T, Da) float32",
}

SPLIT_CODES: dict[str, int] = {"train": 0, "val": 1, "test": 2, "base": 3}
SPLIT_NAMES: dict[int, str] = {v: k for k, v in SPLIT_CODES.items()}

SHARD_PATTERN = "shard_{:05d}.safetensors"
SHARD_GLOB = "shard_*.safetensors"
META_FILE = "meta.json"
