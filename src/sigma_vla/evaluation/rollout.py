"""Closed-loop rollouts in the SO-101 simulator (DESIGN 3): the question offline replay cannot answer.

Each episode: a seed the recorder never used, a goal zone, and an instruction from a *held-out* template (never
trained on) by default. The policy sees only the camera frame, the robot state and the instruction (the goal is
invisible), acts through its action queue, and we record success, final block-to-goal distance and length.
Deterministic per seed: the same seed gives the same zone, instruction, block position and actions.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from sigma_vla.sim.instructions import ZONE_NAMES, Instruction, templates_for

ROLLOUT_SEED_OFFSET = 7_000_003  # far from the recorder's seeds (seed * 100003 + i for small seeds)


@dataclass
class EpisodeResult:
    seed: int
    zone: str
    instruction: str
    template_id: str
    kind: str
    held_out: bool
    success: bool
    final_distance: float  # metres, block to goal in the table plane
    length: int
    tau_norms: list[float] = field(default_factory=list)  # one per re-plan
    adapter_scales: list[float] = field(default_factory=list)


def rollout_plan(seed: int, i: int, templates: str = "held-out") -> tuple[int, str, Instruction]:
    """(simulator seed, zone, instruction) of rollout episode i: a pure function of (seed, i)."""
    sim_seed = ROLLOUT_SEED_OFFSET + seed * 1009 + i
    rng = np.random.default_rng(sim_seed)
    zone = ZONE_NAMES[int(rng.integers(len(ZONE_NAMES)))]
    pool = [t for t in templates_for(zone, allow_held_out=True)
            if templates == "all" or t.held_out == (templates == "held-out")]
    t = pool[int(rng.integers(len(pool)))]
    return sim_seed, zone, Instruction(t.text, t.zone, t.template_id, t.kind, t.held_out)


def run_episode(sim, policy, sim_seed: int, zone: str, instruction: Instruction, max_steps: int,
                frames: list | None = None) -> EpisodeResult:
    """One closed-loop episode; appends camera frames to `frames` when given (for the animation)."""
    obs = sim.reset(seed=sim_seed, zone=zone)
    policy.reset()
    result = EpisodeResult(sim_seed, zone, instruction.text, instruction.template_id, instruction.kind,
                           instruction.held_out, False, 0.0, 0)
    for _ in range(max_steps):
        if frames is not None:
            frames.append(obs.image)
        replanning = not policy.queue
        action = policy.select_action({"observation.state": obs.state, "observation.images.front": obs.image},
                                      instruction.text)
        if replanning and policy.last_plan is not None:
            result.tau_norms.append(policy.last_plan.tau_norm)
            result.adapter_scales.append(policy.last_plan.adapter_scale)
        step = sim.step(action)
        obs, result.length = step.obs, result.length + 1
        if step.success:
            result.success = True
        if step.terminated or step.truncated:
            break
    result.final_distance = sim.distance_to_goal()
    return result


def summarize(results: list[EpisodeResult]) -> dict:
    n = len(results)
    if not n:
        return {"episodes": 0}
    succ = np.array([r.success for r in results], dtype=float)
    # Wilson 95% interval: honest for small n (a 10-episode success rate is very uncertain)
    z, p = 1.96, succ.mean()
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return {
        "episodes": n,
        "success_rate": float(p),
        "success_ci95": [float(max(0.0, centre - half)), float(min(1.0, centre + half))],
        "mean_final_distance_m": float(np.mean([r.final_distance for r in results])),
        "mean_length": float(np.mean([r.length for r in results])),
    }


def save_animation(frames: list[np.ndarray], path: Path, fps: int = 10) -> Path:
    """An animated GIF (embeds in the HTML report as is); written atomically."""
    from PIL import Image

    images = [Image.fromarray(f) for f in frames[::2]]  # every other frame keeps the file small
    tmp = path.with_name(path.name + ".tmp")
    images[0].save(tmp, format="GIF", save_all=True, append_images=images[1:], duration=int(2000 / fps), loop=0)
    tmp.replace(path)
    return path


def run_rollouts(policy, episodes: int, seed: int, image_size: int, out: Path, templates: str = "held-out",
                 max_steps: int = 300, animations: int = 2, progress: bool = True) -> dict:
    """Run `episodes` closed-loop episodes; write rollouts.json and a few GIFs into out; return the summary."""
    import json

    from tqdm import tqdm

    from sigma_vla.sim.so101 import SO101Sim

    out.mkdir(parents=True, exist_ok=True)
    results = []
    with SO101Sim(image_size=image_size) as sim:
        for i in tqdm(range(episodes), desc="rollout", unit="ep", disable=not progress):
            sim_seed, zone, ins = rollout_plan(seed, i, templates)
            frames: list | None = [] if i < animations else None
            results.append(run_episode(sim, policy, sim_seed, zone, ins, max_steps, frames))
            if frames:
                save_animation(frames, out / f"episode_{i:03d}.gif")
    summary = {**summarize(results), "templates": templates, "seed": seed,
               "episodes_detail": [asdict(r) for r in results]}
    tmp = out / "rollouts.json.tmp"
    tmp.write_text(json.dumps(summary, indent=1))
    tmp.replace(out / "rollouts.json")
    return summary
