"""The one module that touches the third-party `lerobot_env_so101` package (alpha; docs/architecture.md, "The
embedded simulator").

Everything else in sigma_vla (recording, closed-loop rollouts) talks to `SO101Sim`, so a change in the package
is absorbed here. What we rely on, read from lerobot_env_so101 0.4.0:

- `gym.make(ENV_ID, image_obs=True, random_block_position=True, action_scale=0.025, render_spec=...)`; the
  observation is {"agent_pos": (14,) float32, "pixels": {"front": (H, W, 3) uint8}}, to which we append the
  jaw's measured opening and velocity (STATE_NAMES); actions
  [dx, dy, dz, grasp] (deltas in [-1, 1] x action_scale metres, grasp absolute: 0 closed, 1 open); 10 Hz;
  300-step time limit.
- The goal is drawn in `SO101PickPlaceGymEnv.reset` (uniform on x 0.15..0.30, y -0.10..0.10, at least 0.08 m
  from the block) and stored in the private `_goal_pos` (the public `goal_pos` property has no setter). We
  override it after reset with a goal from a named zone (sigma_vla.sim.instructions) and, when the package's
  block would sit within 0.08 m of that goal, move the block elsewhere in the package's block distribution.
  The goal is never rendered, so the image does not change.
- `info["succeed"]`: carried, within 0.03 m of the goal, jaw open, block at rest. `terminated` on success or
  when the block leaves x 0.08..0.40, |y| < 0.20.
- Snapshots (`SO101Sim.snapshot`, a paired twin's shared prefix: sim/record.py): what persists between steps is
  the MjData (copied whole: after `mj_step` the sensors and poses read by the observation and the expert are the
  last substep's start, which `mj_setState` + `mj_forward` would not give), the env's `_target_ee_pos`,
  `_last_action_was_zero`, `_z_init`, `_was_carried`, `_goal_pos`, TimeLimit's `_elapsed_steps` and the expert
  (`_phase`, `_steps_in_phase`, `_table_z`); `ik_control` keeps none, `np_random` is read only by reset. The
  expert first reads the goal in the `act` that enters TRAVERSE; `_is_success` reads it after every step.
- Rendering is lazy (first reset); shadows off and no multisampling take it from ~300 to ~90 ms a frame, and
  drawing the arm's meshes at 2 mm resolution (400k triangles -> 24k) to ~30 ms (`simplify_render_meshes`).
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass
from importlib.util import find_spec
from typing import Any, NamedTuple

import numpy as np

from sigma_vla.errors import SigmaError, first_line
from sigma_vla.sim.instructions import goal_region, sample_goal_xy

# mujoco picks its GL backend when first imported (lazily, in _import_package): headless EGL by default.
os.environ.setdefault("MUJOCO_GL", "egl")

ENV_ID = "lerobot_env_so101/SO101PickPlace-v0"
ACTION_SCALE = 0.025  # metres per unit action; the scripted expert is calibrated for it
MAX_STEPS = 300  # the package's registered episode limit
FPS = 10  # control_dt 0.1 s
MIN_GOAL_DISTANCE = 0.08  # pick_place_env._MIN_GOAL_DISTANCE: a closer goal overlaps the block at reset
BLOCK_BOUNDS = np.array([[0.15, -0.10], [0.30, 0.10]])  # pick_place_env._SAMPLING_BOUNDS (block and goal)
ROBOT_TYPE = "so101_sim"

_JOINTS = ("shoulder_pan", "shoulder_lift", "elbow_flex", "wrist_flex", "wrist_roll")
# agent_pos layout (SO101GymEnv.get_robot_state): 5 joint angles, 5 joint velocities, commanded gripper in
# [-1 closed, 1 open], gripper-site xyz in world metres. We append the jaw's joint as the package gives the arm's:
# gripper.pos, its measured opening (0 closed .. 1 open), and gripper.vel (rad/s), as a real SO-101 reports its
# gripper joint. Without them the steps the expert waits for its jaw look all alike, and a learned base lifted
# before the jaw held the block (docs/closed_loop.md, "The jaw in the state").
STATE_NAMES: tuple[str, ...] = (*(f"{j}.pos" for j in _JOINTS), *(f"{j}.vel" for j in _JOINTS),
                                "gripper.cmd", "ee.x", "ee.y", "ee.z", "gripper.pos", "gripper.vel")
ACTION_NAMES: tuple[str, ...] = ("dx", "dy", "dz", "grasp")
CAMERA = "front"
# Where the expert aims its grasp, relative to the block centre (metres, world y). Measured with the package's
# controller (docs/closed_loop.md): aiming off the centre along y by d, the block is still lifted for d in about
# [-22, +1] mm, and along x for at least +-20 mm. The package aims at the centre, the edge of that window, so a
# learned imitation that errs by 2 mm one way drops the block; aiming at the window's middle gives it +-1 cm.
GRASP_AIM_OFFSET = np.array([0.0, -0.010, 0.0])
_APPROACH_PHASES = ("HOVER", "DESCEND", "CLOSE")
# The package's expert holds still for a fixed 10 steps after its close command (CLOSE) and 8 after its open
# command (OPEN), though the jaw stops moving after 4: the steps after that look alike to a policy, which then
# guessed when to lift and lifted too soon. Ours ends the wait once the jaw is still, which a policy can see in
# gripper.vel (docs/closed_loop.md, "The jaw in the state").
_JAW_WAIT_PHASES = ("CLOSE", "OPEN")
JAW_STILL = 0.05  # rad/s of the gripper joint: still (it moves at about 5 rad/s while closing or opening)
# The expert's phases that never read the goal: HOVER and DESCEND aim at the block, CLOSE waits, LIFT rises above
# the grasp point (pick_place.phase_target), and phases only advance, so an `act` that ends in one of them has read
# no goal. A twin shares the zone episode's steps up to the first `act` that ends elsewhere (sim/record.py).
_GOAL_FREE_PHASES = ("HOVER", "DESCEND", "CLOSE", "LIFT")
# Env attributes a step reads and changes (module docstring); a snapshot copies them.
_STEP_FIELDS = ("_target_ee_pos", "_last_action_was_zero", "_z_init", "_was_carried", "_goal_pos")
_PACKAGE_CHANGED = "lerobot_env_so101 changed: {} (tested with 0.4.0)"

SIM_PACKAGES = ("mujoco", "gymnasium", "lerobot_env_so101")  # the `sim` extra of pyproject.toml
_SIM_MISSING = ("the simulator is not installed ({} missing): pip install 'sigma-vla[sim]' "
                "(from a clone: pip install -e '.[sim]')")
_EGL_HINT = ("install EGL (Debian: apt-get install libegl1 libegl-mesa0; Mesa's llvmpipe needs no GPU), "
             "or use OSMesa: apt-get install libosmesa6 and set MUJOCO_GL=osmesa")


@dataclass(frozen=True)
class Observation:
    """What a policy sees: the robot state and the front camera frame."""

    state: np.ndarray  # (16,) float32, STATE_NAMES
    image: np.ndarray  # (S, S, 3) uint8


@dataclass(frozen=True)
class BlockReading:
    """What the rollout metrics need after a step (read from the simulator, never shown to the policy)."""

    pos: np.ndarray  # (3,) block centre, world metres
    rise: float  # metres above where the block rested at reset
    speed: float  # m/s, linear
    grasp_distance: float  # metres from the point between the jaws to the block centre
    jaw_opening: float  # 0 closed .. 1 open, read from the joint (the command leads it by a step)


@dataclass(frozen=True)
class SimSnapshot:
    """An episode in progress (SO101Sim.snapshot): restoring it makes the next steps and observations identical."""

    data: Any  # mujoco.MjData, a whole copy
    fields: dict[str, Any]  # _STEP_FIELDS
    elapsed_steps: int  # the TimeLimit wrapper's
    expert: Any  # PickPlaceController, a deep copy
    steps: int  # SO101Sim.steps


class StepResult(NamedTuple):
    obs: Observation
    success: bool  # info["succeed"]
    terminated: bool  # success, or the block left the table area
    truncated: bool  # the MAX_STEPS time limit


def require_simulator() -> None:
    """Fail in one line when the `sim` extra is missing, before a command writes anything or starts a worker (the
    packages are only looked up here; importing mujoco picks a GL backend, which the workers do themselves)."""
    missing = [name for name in SIM_PACKAGES if find_spec(name) is None]
    if missing:
        raise SigmaError(_SIM_MISSING.format(", ".join(missing)))


def _import_package() -> tuple[Any, Any, Any]:
    """gymnasium, GymRenderingSpec and PickPlaceController; a SigmaError says how to fix a failed import."""
    try:
        import gymnasium as gym
        import lerobot_env_so101  # noqa: F401  (registers ENV_ID)
        from lerobot_env_so101 import GymRenderingSpec
        from lerobot_env_so101.scripted import PickPlaceController
    except ModuleNotFoundError as err:
        if err.name and err.name.split(".")[0] in SIM_PACKAGES:
            raise SigmaError(_SIM_MISSING.format(err.name)) from None
        raise SigmaError(f"MuJoCo rendering backend {os.environ.get('MUJOCO_GL')!r} failed to load "
                         f"({first_line(err, with_type=True)}): {_EGL_HINT}") from None
    except (ImportError, OSError, AttributeError, RuntimeError) as err:
        raise SigmaError(f"MuJoCo rendering backend {os.environ.get('MUJOCO_GL')!r} failed to load "
                         f"({first_line(err, with_type=True)}): {_EGL_HINT}") from None
    return gym, GymRenderingSpec, PickPlaceController


RENDER_MESH_CELL = 0.002  # m: one vertex per 2 mm cell; a 96 px frame sees about 4 mm per pixel


def speed_up_rendering(model: Any) -> None:
    """No shadows, no multisampling and coarser meshes: ~30 ms a step instead of ~300 on llvmpipe."""
    model.light_castshadow[:] = 0
    model.vis.quality.offsamples = 0
    simplify_render_meshes(model, RENDER_MESH_CELL)


def simplify_render_meshes(model: Any, cell: float) -> None:
    """Draw every mesh with fewer triangles, by vertex clustering: each face is re-pointed at one existing vertex
    per `cell`-sized grid cell and faces that collapse are dropped (the SO-101's STL meshes hold 400k triangles
    for a 96 px frame; software GL spends most of a step on them). Only the face list changes, and the renderer
    reads it when its context is created: vertices, collision hulls and inertia stay as compiled, so physics is
    untouched (tests/sim/test_so101.py checks both the trajectory and the frames). Call before the first render."""
    for i in range(model.nmesh):
        v0, nv = model.mesh_vertadr[i], model.mesh_vertnum[i]
        f0, nf = model.mesh_faceadr[i], model.mesh_facenum[i]
        cells = np.floor(model.mesh_vert[v0:v0 + nv] / cell).astype(np.int64)  # (nv, 3)
        _, first, group = np.unique(cells, axis=0, return_index=True, return_inverse=True)
        faces = first[group.ravel()][model.mesh_face[f0:f0 + nf]]  # (nf, 3) local vertex ids, clustered
        keep = (faces[:, 0] != faces[:, 1]) & (faces[:, 1] != faces[:, 2]) & (faces[:, 0] != faces[:, 2])
        k = int(keep.sum())
        model.mesh_face[f0:f0 + k] = faces[keep]
        model.mesh_facenormal[f0:f0 + k] = model.mesh_facenormal[f0:f0 + nf][keep]
        if model.mesh_facetexcoord.size:
            model.mesh_facetexcoord[f0:f0 + k] = model.mesh_facetexcoord[f0:f0 + nf][keep]
        model.mesh_facenum[i] = k


def probe_render(env: Any) -> None:
    """Render one frame now, so a missing GL library fails here with a fix instead of deep inside reset."""
    try:
        env.render()
    except Exception as err:  # noqa: BLE001  (EGL/OSMesa failures surface as many exception types)
        raise SigmaError(f"MuJoCo could not render offscreen with MUJOCO_GL={os.environ.get('MUJOCO_GL')!r} "
                         f"({first_line(err, with_type=True)}): {_EGL_HINT}") from None


def goal_stream(seed: int) -> np.random.Generator:
    """The RNG `reset(seed)` draws the goal (then a displaced block) from, apart from the env's block RNG."""
    return np.random.default_rng([int(seed), 1])


def reset_goal_xy(seed: int, zone: str) -> np.ndarray:
    """The goal `reset(seed=seed, zone=zone)` draws when given no goal_xy (its stream's first draw), known without a
    reset: a paired twin's (sim/record.py)."""
    return sample_goal_xy(goal_stream(seed), zone)


def find_time_limit(env: Any) -> Any:
    """The gymnasium TimeLimit wrapper in env's chain; its elapsed-step counter persists between steps."""
    while env is not None and not hasattr(env, "_elapsed_steps"):
        env = getattr(env, "env", None)
    if env is not None:
        return env
    raise SigmaError(_PACKAGE_CHANGED.format("the env has no TimeLimit wrapper ('_elapsed_steps')"))


def resample_block_xy(rng: np.random.Generator, goal_xy: np.ndarray, max_tries: int = 1000) -> np.ndarray:
    """A block position from the package's block distribution at least MIN_GOAL_DISTANCE from the goal."""
    for _ in range(max_tries):
        xy = rng.uniform(BLOCK_BOUNDS[0], BLOCK_BOUNDS[1])
        if np.linalg.norm(xy - goal_xy[:2]) >= MIN_GOAL_DISTANCE:
            return xy
    raise SigmaError(f"no block position at least {MIN_GOAL_DISTANCE} m from goal {goal_xy.tolist()}",
                     field="goal_xy")


class SO101Sim:
    """SO-101 pick-and-place in MuJoCo with zone goals and the scripted expert (one env per process).

    Deterministic: `reset(seed, zone)` fixes the block (the env's RNG), the goal (our RNG derived from the
    same seed) and the expert's state, so the same seed gives the same episode in any process.
    """

    def __init__(self, image_size: int = 128, seed: int = 0, max_steps: int = MAX_STEPS):
        if image_size < 16 or image_size % 2:
            raise SigmaError(f"image size must be an even number >= 16, got {image_size}", field="image_size")
        gym, rendering_spec, controller_cls = _import_package()
        self.image_size = image_size
        self.max_steps = max_steps
        self._rng = np.random.default_rng(seed)
        self._env = gym.make(ENV_ID, image_obs=True, random_block_position=True, action_scale=ACTION_SCALE,
                             render_spec=rendering_spec(height=image_size, width=image_size),
                             max_episode_steps=max_steps, disable_env_checker=True)
        self._u = self._env.unwrapped
        self._expert = controller_cls(action_scale=ACTION_SCALE)
        self._steps = 0
        try:
            self._check_package()
            self._time_limit = find_time_limit(self._env)
            speed_up_rendering(self._u.model)
            probe_render(self._u)
        except SigmaError:
            self.close()
            raise

    def _check_package(self) -> None:
        """Fail now, naming it, when the package lacks a private field we rely on (module docstring). `_z_init` is
        set by the env's reset, so snapshot() checks it."""
        for attr in ("_goal_pos", "_block_z", "_block_dof_adr", "_gripper_qpos_adr", "_is_success",
                     "_compute_observation", *(f for f in _STEP_FIELDS if f != "_z_init")):
            if not hasattr(self._u, attr):
                raise SigmaError(_PACKAGE_CHANGED.format(f"env has no {attr!r}"))
        if not hasattr(self._expert, "_steps_in_phase"):
            raise SigmaError(_PACKAGE_CHANGED.format("the scripted expert has no '_steps_in_phase'"))
        phases = getattr(type(getattr(self._expert, "phase", None)), "__members__", {})
        for name in (n for n in (*_GOAL_FREE_PHASES, "TRAVERSE", *_JAW_WAIT_PHASES) if n not in phases):
            raise SigmaError(_PACKAGE_CHANGED.format(f"the scripted expert has no phase {name!r}"))

    # ---- episode ------------------------------------------------------------------------------------------
    def reset(self, seed: int | None = None, zone: str | None = None,
              goal_xy: np.ndarray | None = None, block_xy: np.ndarray | None = None) -> Observation:
        """Start an episode. The goal comes from `goal_xy`, else uniformly from `zone`, else the package's own
        distribution. With a seed the episode is a pure function of (seed, zone, goal_xy, block_xy).
        block_xy puts the block there, however near the goal (a paired twin of another episode: sim/record.py)."""
        if seed is not None:
            self._rng = goal_stream(seed)  # its first draw is reset_goal_xy(seed, zone)
        raw, _ = self._env.reset(seed=None if seed is None else int(seed))
        if zone is not None or goal_xy is not None:
            goal = np.asarray(goal_xy if goal_xy is not None else sample_goal_xy(self._rng, zone), np.float64)
            if zone is not None and goal_xy is not None and not goal_region(zone).contains(goal):
                raise SigmaError(f"goal {goal.tolist()} is outside zone {zone!r}", field="goal_xy")
            raw = self._set_goal(goal[:2], raw, block_xy is None)
        if block_xy is not None:
            raw = self._place_block(np.asarray(block_xy, np.float64)[:2])
        self._expert.reset()
        self._steps = 0
        return self._observation(raw)

    def step(self, action: np.ndarray) -> StepResult:
        """Apply [dx, dy, dz, grasp]; the action is clipped to the action space first."""
        a = np.clip(np.asarray(action, dtype=np.float32).reshape(4), self._env.action_space.low,
                    self._env.action_space.high)
        raw, _, terminated, truncated, info = self._env.step(a)
        self._steps += 1
        return StepResult(self._observation(raw), bool(info.get("succeed", False)), bool(terminated),
                          bool(truncated))

    def expert_action(self) -> np.ndarray:
        """The scripted expert's next action (4,) float32; it keeps phase state, so call it once per step.
        While approaching, the expert aims at the block centre plus GRASP_AIM_OFFSET; once it holds the block it
        steers the true centre to the goal. It waits for its jaw until the jaw is still (_JAW_WAIT_PHASES)."""
        expert = self._expert
        # From the wait's second step on (by then the jaw has started to move), a still jaw ends the wait.
        waiting = expert.phase.name in _JAW_WAIT_PHASES and expert._steps_in_phase >= 2
        if waiting and abs(self._jaw_velocity()) < JAW_STILL:
            expert._steps_in_phase = 1 << 30  # past any hold: this act moves on to the next phase
        aim = self.block_pos
        if expert.phase.name in _APPROACH_PHASES:
            aim = aim + GRASP_AIM_OFFSET
        return expert.act(self._u.ik_point_pos, aim, self.goal_pos)

    @property
    def expert_read_goal(self) -> bool:
        """Whether the expert's last action depended on the goal: its `act` ended past LIFT (_GOAL_FREE_PHASES)."""
        return self._expert.phase.name not in _GOAL_FREE_PHASES

    def would_succeed(self, goal_xy: np.ndarray) -> bool:
        """The env's success test on the current state were the goal at goal_xy instead (it reads the goal)."""
        u, goal = self._u, self._u._goal_pos
        u._goal_pos = self._goal_array(goal_xy)
        try:
            return bool(u._is_success())
        finally:
            u._goal_pos = goal

    def _goal_array(self, goal_xy: np.ndarray) -> np.ndarray:
        """The env's `_goal_pos` for a goal (x, y): on the table, at the resting block centre's height."""
        return np.array([goal_xy[0], goal_xy[1], self._u._block_z], dtype=np.float64)

    def _set_goal(self, goal_xy: np.ndarray, raw: dict, keep_away: bool = True) -> dict:
        if keep_away and np.linalg.norm(self.block_pos[:2] - goal_xy) < MIN_GOAL_DISTANCE:
            raw = self._place_block(resample_block_xy(self._rng, goal_xy))
        self._u._goal_pos = self._goal_array(goal_xy)
        return raw

    def _place_block(self, xy: np.ndarray) -> dict:
        """Move the resting block to (x, y) and re-render."""
        import mujoco

        u = self._u
        u.data.jnt("block").qpos[:3] = (*xy, u._block_z)
        mujoco.mj_forward(u.model, u.data)
        return u._compute_observation()

    # ---- snapshots ----------------------------------------------------------------------------------------
    def snapshot(self, reuse: SimSnapshot | None = None) -> SimSnapshot:
        """The episode as it stands, before the next expert action. reuse: an older snapshot whose MjData to
        overwrite (it becomes invalid), which spares allocating MjData's 14 MB arena (~1.3 ms) per snapshot."""
        import mujoco

        u = self._u
        for name in (f for f in _STEP_FIELDS if not hasattr(u, f)):  # _z_init: the env's reset sets it
            raise SigmaError(_PACKAGE_CHANGED.format(f"env has no {name!r}") + " or no episode was reset")
        data = reuse.data if reuse is not None else mujoco.MjData(u.model)
        mujoco.mj_copyData(data, u.model, u.data)
        return SimSnapshot(data, copy.deepcopy({f: getattr(u, f) for f in _STEP_FIELDS}),
                           int(self._time_limit._elapsed_steps), copy.deepcopy(self._expert), self._steps)

    def restore(self, snap: SimSnapshot, goal_xy: np.ndarray | None = None) -> Observation:
        """Return to a snapshot (it stays valid); goal_xy: continue towards another goal (never rendered). The
        observation is re-rendered from the restored state, identical to the one seen when it was taken."""
        import mujoco

        u = self._u
        mujoco.mj_copyData(u.data, u.model, snap.data)  # in place: the env and its renderer hold u.data
        for name, value in copy.deepcopy(snap.fields).items():
            setattr(u, name, value)
        self._time_limit._elapsed_steps = snap.elapsed_steps
        self._expert = copy.deepcopy(snap.expert)
        self._steps = snap.steps
        if goal_xy is not None:
            u._goal_pos = self._goal_array(np.asarray(goal_xy, np.float64))
        return self._observation(u._compute_observation())

    def _observation(self, raw: dict) -> Observation:
        jaw = np.array([self._jaw_opening(), self._jaw_velocity()], np.float32)
        state = np.concatenate([np.asarray(raw["agent_pos"], dtype=np.float32), jaw])
        return Observation(state,
                           np.asarray(raw["pixels"][CAMERA], dtype=np.uint8).copy())

    # ---- state the rollout code needs ---------------------------------------------------------------------
    @property
    def goal_pos(self) -> np.ndarray:
        """(3,) world metres where the block centre should rest."""
        return np.asarray(self._u.goal_pos, dtype=np.float64).copy()

    @property
    def block_pos(self) -> np.ndarray:
        """(3,) world metres, the block centre."""
        return np.asarray(self._u.data.sensor("block_pos").data, dtype=np.float64).copy()

    @property
    def grasp_pos(self) -> np.ndarray:
        """(3,) world metres, the point the position action moves (between the jaws)."""
        return np.asarray(self._u.ik_point_pos, dtype=np.float64).copy()

    def block_reading(self) -> BlockReading:
        """The block and jaw as the env's own success test reads them (pick_place_env._is_success)."""
        u, pos = self._u, self.block_pos
        adr = u._block_dof_adr
        return BlockReading(pos, float(pos[2] - u._z_init), float(np.linalg.norm(u.data.qvel[adr:adr + 3])),
                            float(np.linalg.norm(self.grasp_pos - pos)), self._jaw_opening())

    def _jaw_velocity(self) -> float:
        """rad/s of the gripper joint (negative while closing)."""
        u = self._u
        return float(u.data.qvel[u.model.jnt_dofadr[u.model.joint("gripper").id]])

    def _jaw_opening(self) -> float:
        """0 closed .. 1 open, read from the gripper joint (the command leads it by a step)."""
        from lerobot_env_so101.gripper import ctrl_to_normalized

        u = self._u
        return float(ctrl_to_normalized(u.data.qpos[u._gripper_qpos_adr], u.model.actuator("gripper").ctrlrange))

    @property
    def steps(self) -> int:
        return self._steps

    def distance_to_goal(self) -> float:
        """Block-to-goal distance in the table plane (the success test uses 0.03 m)."""
        return float(np.linalg.norm(self.block_pos[:2] - self.goal_pos[:2]))

    # ---- lifetime -----------------------------------------------------------------------------------------
    def close(self) -> None:
        """Free the GL context now; left to interpreter exit, EGL teardown prints spurious errors."""
        env = getattr(self, "_env", None)
        if env is not None:
            env.close()
            self._env = None

    def __enter__(self) -> SO101Sim:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
