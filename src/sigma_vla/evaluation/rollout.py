"""Closed-loop rollouts in the SO-101 simulator: the question offline replay cannot answer (docs/closed_loop.md).

Each episode: a seed the recorder never used, a goal zone, and an instruction from a *held-out* template (never
trained on) by default, or the user's own words. The policy sees only the camera frame, the robot state and the
instruction (the goal is invisible), acts through its action queue, and we record what explains a failure:

- grasped: the block rose more than 1 cm off the table with the jaws around it (within 3 cm of the grasp point);
- lifted: it rose more than 3 cm (the env's own "carried" test);
- placed: after a lift, the first moment it rests on the table again (< 5 mm up, < 1 cm/s) with the jaw open;
- placed in zone: at that moment its centre lies inside the instructed zone's rectangle (sim/instructions.py);
- success: the simulator's own criterion (carried, within 3 cm of the hidden goal, jaw open, at rest);
- final distance (block to goal in the table plane) and steps.

An episode ends on success, when the block leaves the table, at the step limit, or PLACE_SETTLE_STEPS after the
first placement (the decision where to put the block has been made; waiting longer only costs time).
Deterministic per seed, and identical for any number of worker processes: every episode runs with one torch
thread (the same float reductions in the main process and in a worker).
"""

from __future__ import annotations

import json
import multiprocessing as mp
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from sigma_vla_client.ensemble import DEFAULT_K

from sigma_vla.errors import check_worker, start_worker
from sigma_vla.sim.instructions import ZONE_NAMES, Instruction, get_zone, templates_for

ROLLOUT_SEED_OFFSET = 7_000_003  # far from the recorder's seeds (seed * 100003 + i for small seeds)
GRASP_RISE, LIFT_RISE, REST_RISE = 0.01, 0.03, 0.005  # metres above the block's resting height
GRASP_REACH = 0.03  # metres: block centre to grasp point while grasped
REST_SPEED, JAW_OPEN = 0.01, 0.5  # the env's own place test (pick_place_env._PLACE_MAX_BLOCK_SPEED, _OPEN_FRACTION)
PLACE_SETTLE_STEPS = 2
# The rollouts' default PolicyConfig.temporal_ensemble: ACT's k = 0.01, the client's TemporalEnsemble default too,
# so a robot runs what was measured (why: sigma_vla_client/ensemble.py; docs/closed_loop.md, "Temporal ensembling").
TEMPORAL_ENSEMBLE = DEFAULT_K
RATES = ("grasped", "lifted", "placed", "placed_in_zone", "success")


@dataclass(frozen=True)
class EpisodeSpec:
    """What episode i of a rollout is: simulator seed, goal zone and instruction (a pure function of the plan)."""

    index: int
    sim_seed: int
    zone: str
    instruction: Instruction


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
    grasped: bool = False
    lifted: bool = False
    placed: bool = False
    placed_in_zone: bool = False
    place_xy: list[float] | None = None  # where the block was first put down, world metres
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


def plan_episodes(episodes: int, seed: int, templates: str = "held-out",
                  instructions: list[Instruction] | None = None) -> list[EpisodeSpec]:
    """The rollout's episodes: from the template set, or cycling through the user's instructions (same seeds)."""
    specs = []
    for i in range(episodes):
        sim_seed, zone, ins = rollout_plan(seed, i, templates)
        if instructions:
            ins = instructions[i % len(instructions)]
            zone = ins.zone
        specs.append(EpisodeSpec(i, sim_seed, zone, ins))
    return specs


class PlacementTracker:
    """Follows the block step by step and decides grasped / lifted / placed (the module docstring's rules)."""

    def __init__(self, zone: str):
        self.zone = get_zone(zone)
        self.grasped = self.lifted = self.placed = self.in_zone = False
        self.place_xy: list[float] | None = None
        self.steps_since_placed = 0

    def update(self, r) -> None:
        """r: a sim.so101.BlockReading after a step."""
        if self.placed:
            self.steps_since_placed += 1
            return
        held = r.grasp_distance < GRASP_REACH
        self.grasped |= r.rise > GRASP_RISE and held
        self.lifted |= r.rise > LIFT_RISE
        if self.lifted and r.rise < REST_RISE and r.speed < REST_SPEED and r.jaw_opening > JAW_OPEN:
            self.placed, self.place_xy = True, [float(r.pos[0]), float(r.pos[1])]
            self.in_zone = self.zone.contains(r.pos[:2])

    @property
    def settled(self) -> bool:
        return self.placed and self.steps_since_placed >= PLACE_SETTLE_STEPS


def run_episode(sim, policy, sim_seed: int, zone: str, instruction: Instruction, max_steps: int,
                frames: list | None = None) -> EpisodeResult:
    """One closed-loop episode; appends camera frames to `frames` when given (for the animation)."""
    obs = sim.reset(seed=sim_seed, zone=zone)
    policy.reset()
    track = PlacementTracker(zone)
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
        track.update(sim.block_reading())
        result.success |= step.success
        if step.terminated or step.truncated or track.settled:
            break
    result.final_distance = sim.distance_to_goal()
    result.grasped, result.lifted, result.placed = track.grasped, track.lifted, track.placed
    result.placed_in_zone, result.place_xy = track.in_zone, track.place_xy
    return result


# ---- summaries ------------------------------------------------------------------------------------------------
def wilson_interval(k: int, n: int, z: float = 1.96) -> list[float]:
    """95% Wilson score interval of k successes in n: honest for small n and for rates near 0 or 1."""
    if n == 0:
        return [0.0, 1.0]
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return [float(max(0.0, centre - half)), float(min(1.0, centre + half))]


def summarize(results: list[EpisodeResult]) -> dict:
    """Every rate with its Wilson interval, mean final distance and length."""
    n = len(results)
    if not n:
        return {"episodes": 0}
    out: dict[str, Any] = {"episodes": n}
    for name in RATES:
        k = sum(bool(getattr(r, name)) for r in results)
        out[f"{name}_rate"] = k / n
        out[f"{name}_ci95"] = wilson_interval(k, n)
    out["mean_final_distance_m"] = float(np.mean([r.final_distance for r in results]))
    out["mean_length"] = float(np.mean([r.length for r in results]))
    return out


def summarize_by(results: list[EpisodeResult]) -> dict[str, dict[str, dict]]:
    """The summary split by instruction kind, by seen / held-out template and by zone."""
    keys = {"kind": lambda r: r.kind, "templates": lambda r: "held-out" if r.held_out else "seen",
            "zone": lambda r: r.zone}
    split: dict[str, dict[str, dict]] = {}
    for name, key in keys.items():
        groups: dict[str, list[EpisodeResult]] = {}
        for r in results:
            groups.setdefault(key(r), []).append(r)
        split[name] = {g: summarize(rs) for g, rs in sorted(groups.items())}
    return split


def save_animation(frames: list[np.ndarray], path: Path, fps: int = 10) -> Path:
    """An animated GIF (embeds in the HTML report as is); written atomically."""
    from PIL import Image

    from sigma_vla.outdir import atomic_write

    images = [Image.fromarray(f) for f in frames[::2]]  # every other frame keeps the file small
    atomic_write(path, lambda tmp: images[0].save(tmp, format="GIF", save_all=True, append_images=images[1:],
                                                  duration=int(2000 / fps), loop=0))
    return path


# ---- running many episodes ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RolloutJob:
    """Everything a worker needs to rebuild the policy and simulator (plain values: it crosses processes)."""

    source: str  # run or base directory (inference.policy.load_policy)
    mode: str
    n_action_steps: int
    image_size: int
    max_steps: int
    temporal_ensemble: float = TEMPORAL_ENSEMBLE  # PolicyConfig.temporal_ensemble (0: off)


_WORKER: dict[str, Any] = {}


def _start(job: RolloutJob) -> None:
    import torch

    from sigma_vla.inference.policy import load_policy
    from sigma_vla.sim.so101 import SO101Sim

    torch.set_num_threads(1)
    policy = load_policy(job.source, job.mode, job.n_action_steps)
    policy.config = replace(policy.config, temporal_ensemble=job.temporal_ensemble)
    _WORKER.update(job=job, policy=policy, sim=SO101Sim(image_size=job.image_size))


def _episode(args: tuple[EpisodeSpec, bool]) -> tuple[EpisodeResult, list[np.ndarray] | None]:
    check_worker()
    spec, keep_frames = args
    job = _WORKER["job"]
    frames: list | None = [] if keep_frames else None
    res = run_episode(_WORKER["sim"], _WORKER["policy"], spec.sim_seed, spec.zone, spec.instruction, job.max_steps,
                      frames)
    return res, frames


def _stop() -> None:
    sim = _WORKER.pop("sim", None)
    if sim is not None:
        sim.close()
    _WORKER.clear()


def iter_episodes(job: RolloutJob, specs: list[EpisodeSpec], animations: int, workers: int):
    """(result, frames or None) per episode, in plan order, in this process (workers=1) or a spawn pool."""
    args = [(s, s.index < animations) for s in specs]
    if min(workers, len(specs)) <= 1:
        import torch

        threads = torch.get_num_threads()
        _start(job)
        try:
            yield from map(_episode, args)
        finally:
            _stop()
            torch.set_num_threads(threads)
        return
    ctx = mp.get_context("spawn")  # one GL context and MuJoCo state per process
    with ctx.Pool(min(workers, len(specs)), initializer=start_worker, initargs=(_start, job)) as pool:
        yield from pool.imap(_episode, args, chunksize=1)


def run_rollouts(job: RolloutJob, specs: list[EpisodeSpec], out: Path, animations: int = 2, workers: int = 1,
                 progress: bool = True, label: str = "rollout") -> dict:
    """Run the planned episodes; write rollouts.json and a few GIFs into out; return the summary. `out` follows the
    one output rule (sigma_vla.outdir): new, or ours from an earlier rollout; anything else is refused and kept."""
    from sigma_vla.outdir import atomic_write_text, claim_dir, release_dir
    from sigma_vla.progress import Progress

    created = claim_dir(out, "rollout")
    results = []
    bar = Progress(iter_episodes(job, specs, animations, workers), total=len(specs), desc=label, unit="ep",
                   enabled=progress)
    try:
        for res, frames in bar:
            if frames:
                save_animation(frames, out / f"episode_{len(results):03d}.gif")
            results.append(res)
            bar.set_postfix(lifted=sum(r.lifted for r in results), in_zone=sum(r.placed_in_zone for r in results))
    except BaseException:
        if not results:  # nothing was written: leave no directory behind (a later episode's failure keeps GIFs)
            release_dir(out, created)
        raise
    summary = {**summarize(results), "by": summarize_by(results), "policy": job.mode, "source": job.source,
               "n_action_steps": job.n_action_steps, "temporal_ensemble": job.temporal_ensemble, "max_steps": job.max_steps, "image_size": job.image_size,
               "episodes_detail": [asdict(r) for r in results]}
    atomic_write_text(out / "rollouts.json", json.dumps(summary, indent=1))
    return summary


def format_summary(label: str, s: dict) -> str:
    """One line per policy: every rate with its interval, then distance and length."""
    parts = [f"{name.replace('_', ' ')} {s[f'{name}_rate']:.0%} [{s[f'{name}_ci95'][0]:.0%}-"
             f"{s[f'{name}_ci95'][1]:.0%}]" for name in RATES]
    return (f"{label:16s} " + ", ".join(parts) + f"; final distance {100 * s['mean_final_distance_m']:.1f} cm, "
            f"{s['mean_length']:.0f} steps ({s['episodes']} episodes)")
