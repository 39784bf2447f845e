"""`sigma record`: scripted-expert SO-101 pick-and-place demonstrations -> LeRobot v3.0 (docs/architecture.md,
"The embedded simulator").

Episode attempt i uses seed `episode_seed(seed, i)`; from it alone come the zone and the instruction (our
RNG), the block position (the env's RNG) and the goal inside the zone (SO101Sim), so an episode is
reproducible from its recorded `sigma/seed`, and the output is identical for any number of workers
(results are gathered in attempt order). Only successful episodes are kept; the rest are counted as
discarded.

Paired twins (`--paired`, the demo): every zone attempt is recorded twice, once as drawn and once as the base's
demonstration (the generic instruction, the default goal) with the block where the zone episode had it. The
scripted expert's approach, grasp and lift do not depend on the goal, so the two episodes are identical, frame for
frame, until the carry (measured: the first 31-34 of 43-50 steps). The twin therefore copies that shared prefix
from the zone episode and only its carry is simulated, from a snapshot of the simulator taken before the expert's
first action that reads the goal (`run_pair`; identical, array for array, to a twin re-simulated from reset:
tests/sim/test_record.py). The base learns from the twins and Sigma from the zone episodes: what Sigma must add is
then only what the words change (docs/closed_loop.md, "Paired twins"). A pair is kept only when both episodes
succeed; twins share the zone episode's `sigma/seed`.

Instructions are drawn from all templates of the zone, held-out ones included: every episode carries
`sigma/held_out`, and the training split must exclude held-out episodes while evaluation uses them
(docs/architecture.md, "Honest evaluation").
"""

from __future__ import annotations

import copy
import multiprocessing as mp
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa

from sigma_vla.data.lerobot_writer import (
    CODECS,
    DatasetSpec,
    EpisodeRecord,
    LeRobotV30Writer,
    check_output_dir,
)
from sigma_vla.errors import SigmaError, check_worker, start_worker
from sigma_vla.sim.instructions import ZONE_NAMES, Instruction, generic_instruction, sample_instruction
from sigma_vla.sim.so101 import (
    ACTION_NAMES,
    FPS,
    MAX_STEPS,
    ROBOT_TYPE,
    STATE_NAMES,
    Observation,
    SimSnapshot,
    SO101Sim,
    reset_goal_xy,
)

CAMERA_KEY = "observation.images.front"
SEED_STRIDE = 100_003  # a prime: seeds of different --seed runs do not collide for < 100003 episodes
EXTRA_COLUMNS: tuple[tuple[str, pa.DataType], ...] = (
    ("sigma/zone", pa.string()),
    ("sigma/template_id", pa.string()),
    ("sigma/instruction_kind", pa.string()),
    ("sigma/held_out", pa.bool_()),
    ("sigma/seed", pa.int64()),
    ("sigma/goal_pos", pa.list_(pa.float32(), 3)),
)


@dataclass(frozen=True)
class RecordConfig:
    episodes: int = 20
    image_size: int = 128
    seed: int = 0
    codec: str = "av1"
    workers: int = 1
    max_steps: int = MAX_STEPS
    # The first generic_episodes attempts are the base's demonstrations: the generic instruction and the default goal
    # (sim/instructions.py DEFAULT_GOAL); `sigma prep --base-task` puts them in the base split.
    generic_episodes: int = 0
    # DART-style noise injection: the simulator executes the expert's action plus Gaussian noise on dx, dy, dz of
    # std action_noise x the action's largest position component, while the recorded label is the clean action. The
    # noise fades as the expert converges (its phases need 4 mm precision), and the data then shows how the expert
    # corrects a drift, which a cloned policy needs in closed loop (docs/closed_loop.md). 0 = off.
    action_noise: float = 0.0
    paired: bool = False  # each zone attempt also records its generic twin (module docstring)

    def __post_init__(self) -> None:
        checks = {
            "episodes": (self.episodes >= 1, "must be >= 1"),
            "image_size": (self.image_size >= 16 and self.image_size % 2 == 0, "must be even and >= 16"),
            "seed": (self.seed >= 0, "must be >= 0"),
            "codec": (self.codec in CODECS, f"must be one of {', '.join(CODECS)}"),
            "workers": (self.workers >= 1, "must be >= 1"),
            "max_steps": (1 <= self.max_steps <= MAX_STEPS, f"must be in 1..{MAX_STEPS}"),
            "generic_episodes": (0 <= self.generic_episodes <= self.episodes, "must be in 0..episodes"),
            "action_noise": (0 <= self.action_noise <= 2, "must be in [0, 2]"),
        }
        for name, (ok, why) in checks.items():
            if not ok:
                raise SigmaError(f"{name}={getattr(self, name)!r} {why}", field=name)


@dataclass
class EpisodeResult:
    """One attempt. Arrays are empty for failed attempts (they are discarded, no need to ship frames)."""

    attempt: int
    seed: int
    success: bool
    steps: int
    instruction: Instruction
    goal_pos: np.ndarray  # (3,)
    block_xy: np.ndarray  # (2,) where the block started
    state: np.ndarray  # (T, Ds) float32, STATE_NAMES
    action: np.ndarray  # (T, 4) float32
    frames: np.ndarray  # (T, S, S, 3) uint8


@dataclass(frozen=True)
class RecordSummary:
    kept: int
    discarded: int
    frames: int
    seconds: float
    path: Path
    discarded_seeds: tuple[int, ...]


def episode_seed(base_seed: int, attempt: int) -> int:
    """The seed of attempt `attempt` of a `--seed base_seed` run."""
    return base_seed * SEED_STRIDE + attempt


def plan_instruction(seed: int, generic: bool = False) -> Instruction:
    """Zone (uniform over the six) and instruction (uniform over the zone's templates) of an episode seed; a generic
    episode has the generic instruction and the default goal."""
    if generic:
        return generic_instruction()
    rng = np.random.default_rng(seed)
    zone = ZONE_NAMES[int(rng.integers(len(ZONE_NAMES)))]
    return sample_instruction(rng, zone, allow_held_out=True)


@dataclass(frozen=True)
class _Branch:
    """Where a twin leaves its zone episode: before the expert's first action that reads the goal."""

    step: int  # that action's index
    snapshot: SimSnapshot
    noise: np.random.Generator  # the noise stream, before that step's draw


@dataclass
class _Trace:
    """An episode's (observation, action) pairs as they are recorded."""

    states: list[np.ndarray] = field(default_factory=list)
    actions: list[np.ndarray] = field(default_factory=list)
    frames: list[np.ndarray] = field(default_factory=list)
    branch: _Branch | None = None

    def prefix(self, n: int) -> _Trace:
        return _Trace(self.states[:n], self.actions[:n], self.frames[:n])


def _drive(sim: SO101Sim, obs: Observation, trace: _Trace, max_steps: int, action_noise: float,
           noise: np.random.Generator, twin_goal: np.ndarray | None = None) -> bool:
    """Run the expert from `obs`, appending to `trace`, until the episode ends or the trace holds max_steps steps
    (it may already hold a twin's prefix); return success. With twin_goal, also set trace.branch, unless a step
    before it would have ended the episode had the goal been twin_goal (the env's success test reads the goal)."""
    watch, snap = twin_goal is not None, None
    while len(trace.actions) < max_steps:
        if watch:
            snap = sim.snapshot(reuse=snap)  # before the expert's action: `act` advances its phase
        action = sim.expert_action()
        if watch and sim.expert_read_goal:  # this action is the zone's: the twin's would aim at its own goal
            trace.branch = _Branch(len(trace.actions), snap, copy.deepcopy(noise))
            watch = False
        trace.states.append(obs.state)
        trace.frames.append(obs.image)
        trace.actions.append(action)
        result = sim.step(perturb(action, action_noise, noise))
        obs = result.obs
        if watch and sim.would_succeed(twin_goal):  # the twin would have ended here: no branch, it re-simulates
            watch = False
        if result.terminated or result.truncated:
            return result.success
    return False


def _result(sim: SO101Sim, attempt: int, seed: int, instruction: Instruction, start_xy: np.ndarray,
            success: bool, trace: _Trace) -> EpisodeResult:
    """A finished episode; a failed one ships no arrays."""
    steps = len(trace.actions)
    if not success:
        s = sim.image_size
        return EpisodeResult(attempt, seed, False, steps, instruction, sim.goal_pos, start_xy,
                             np.zeros((0, len(STATE_NAMES)), np.float32), np.zeros((0, 4), np.float32),
                             np.zeros((0, s, s, 3), np.uint8))
    return EpisodeResult(attempt, seed, True, steps, instruction, sim.goal_pos, start_xy,
                         np.stack(trace.states).astype(np.float32), np.stack(trace.actions).astype(np.float32),
                         np.stack(trace.frames))


def run_episode(sim: SO101Sim, base_seed: int, attempt: int, max_steps: int = MAX_STEPS,
                generic: bool = False, action_noise: float = 0.0,
                block_xy: np.ndarray | None = None) -> EpisodeResult:
    """Run the scripted expert for one attempt; record (observation, action) pairs until the episode ends.
    block_xy: start the block there (a twin) instead of where the seed puts it."""
    seed = episode_seed(base_seed, attempt)
    instruction = plan_instruction(seed, generic)
    obs = sim.reset(seed=seed, zone=instruction.zone, block_xy=block_xy)
    start_xy = sim.block_pos[:2].copy()
    trace = _Trace()
    success = _drive(sim, obs, trace, max_steps, action_noise, _noise_stream(seed))
    return _result(sim, attempt, seed, instruction, start_xy, success, trace)


def run_pair(sim: SO101Sim, base_seed: int, attempt: int, max_steps: int = MAX_STEPS,
             action_noise: float = 0.0) -> list[EpisodeResult]:
    """A zone episode and its generic twin, identical to `run_episode(..., generic=True, block_xy=zone.block_xy)`:
    the twin copies the zone episode's steps before its branch and simulates only the rest, from the branch's
    snapshot with the twin's goal (what reset would draw for it). Action noise needs nothing more: both episodes
    draw one vector per step from the same stream (`_noise_stream`), so their prefixes saw the same draws, and the
    stream is copied at the branch. Without a branch (the zone episode ended first) the twin is run from reset."""
    seed = episode_seed(base_seed, attempt)
    instruction, twin_instruction = plan_instruction(seed), plan_instruction(seed, generic=True)
    twin_goal = reset_goal_xy(seed, twin_instruction.zone)
    obs = sim.reset(seed=seed, zone=instruction.zone)
    start_xy = sim.block_pos[:2].copy()
    trace = _Trace()
    success = _drive(sim, obs, trace, max_steps, action_noise, _noise_stream(seed), twin_goal)
    zone = _result(sim, attempt, seed, instruction, start_xy, success, trace)
    branch = trace.branch
    if branch is None:
        return [zone, run_episode(sim, base_seed, attempt, max_steps, True, action_noise, block_xy=start_xy)]
    obs = sim.restore(branch.snapshot, goal_xy=twin_goal)
    twin = trace.prefix(branch.step)
    success = _drive(sim, obs, twin, max_steps, action_noise, branch.noise)
    return [zone, _result(sim, attempt, seed, twin_instruction, start_xy, success, twin)]


def _noise_stream(seed: int) -> np.random.Generator:
    """The action-noise RNG of an episode seed, apart from the block and goal streams."""
    return np.random.default_rng([seed, 2])


def perturb(action: np.ndarray, scale: float, rng: np.random.Generator) -> np.ndarray:
    """The executed action: dx, dy, dz plus noise of std scale x max |dx, dy, dz| (RecordConfig.action_noise)."""
    if scale == 0:
        return action
    out = action.copy()
    out[:3] += (scale * np.abs(action[:3]).max() * rng.standard_normal(3)).astype(np.float32)
    return out


# ---- workers ----------------------------------------------------------------------------------------------
_WORKER_SIM: SO101Sim | None = None


def _init_worker(image_size: int, max_steps: int) -> None:
    """Each worker process owns one simulator (and one GL context) for its lifetime (errors.start_worker turns a
    failure here into the pool's one-line error)."""
    global _WORKER_SIM
    _WORKER_SIM = SO101Sim(image_size=image_size, max_steps=max_steps)


def _worker_attempt(args: tuple[int, int, int, bool, float, bool]) -> list[EpisodeResult]:
    check_worker()
    assert _WORKER_SIM is not None
    return run_attempt(_WORKER_SIM, *args)


def run_attempt(sim: SO101Sim, base_seed: int, attempt: int, max_steps: int, generic: bool, action_noise: float,
                paired: bool) -> list[EpisodeResult]:
    """One attempt: its episode, then its generic twin when paired (and the attempt is not already generic)."""
    if paired and not generic:
        return run_pair(sim, base_seed, attempt, max_steps, action_noise)
    return [run_episode(sim, base_seed, attempt, max_steps, generic, action_noise)]


def iter_attempts(config: RecordConfig) -> Iterator[list[EpisodeResult]]:
    """Every attempt's episodes (one, or a zone episode and its twin), in attempt order, computed in-process
    (workers=1) or by a spawn pool."""
    jobs = [(config.seed, i, config.max_steps, i < config.generic_episodes, config.action_noise, config.paired)
            for i in range(config.episodes)]
    if config.workers == 1:
        with SO101Sim(image_size=config.image_size, max_steps=config.max_steps) as sim:
            for job in jobs:
                yield run_attempt(sim, *job)
        return
    ctx = mp.get_context("spawn")  # fork would share one GL context and MuJoCo state between processes
    with ctx.Pool(min(config.workers, config.episodes), initializer=start_worker,
                  initargs=(_init_worker, config.image_size, config.max_steps)) as pool:
        yield from pool.imap(_worker_attempt, jobs, chunksize=1)


def to_record(result: EpisodeResult) -> EpisodeRecord:
    """A kept episode in the writer's terms: the task string is the instruction; sidecar columns for eval."""
    ins = result.instruction
    return EpisodeRecord(
        state=result.state, action=result.action, frames={CAMERA_KEY: result.frames}, task=ins.text,
        extra={"sigma/zone": ins.zone, "sigma/template_id": ins.template_id,
               "sigma/instruction_kind": ins.kind, "sigma/held_out": ins.held_out, "sigma/seed": result.seed,
               "sigma/goal_pos": [float(v) for v in result.goal_pos]})


def dataset_spec(config: RecordConfig) -> DatasetSpec:
    return DatasetSpec(fps=FPS, robot_type=ROBOT_TYPE, state_names=STATE_NAMES, action_names=ACTION_NAMES,
                       camera_keys=(CAMERA_KEY,), image_size=(config.image_size, config.image_size),
                       codec=config.codec, extra_columns=EXTRA_COLUMNS)


def record_dataset(config: RecordConfig, out: Path, progress: bool = True) -> RecordSummary:
    """Record `config.episodes` attempts into a new LeRobot v3.0 dataset at `out` (atomically)."""
    from sigma_vla.progress import Progress

    out = Path(out)
    check_output_dir(out)  # fail before minutes of simulation, and again before the final rename
    start = time.perf_counter()
    kept, discarded, frames = 0, [], 0
    with LeRobotV30Writer(out, dataset_spec(config)) as writer:
        bar = Progress(iter_attempts(config), total=config.episodes, desc="record", unit="attempt",
                       enabled=progress)
        for results in bar:
            if all(r.success for r in results):  # a pair is kept whole or not at all
                for result in results:
                    writer.add_episode(to_record(result))
                    kept += 1
                    frames += result.steps
            else:
                discarded.extend(r.seed for r in results)
            bar.set_postfix(kept=kept, discarded=len(discarded))
        bar.close()
        if kept == 0:
            raise SigmaError(f"all {config.episodes} episodes failed; nothing to write", file=out)
        writer.finish()
    return RecordSummary(kept, len(discarded), frames, time.perf_counter() - start, out, tuple(discarded))
