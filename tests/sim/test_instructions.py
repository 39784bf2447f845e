"""Zones and instruction templates (docs/architecture.md, "Language that matters")."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from sigma_vla.errors import SigmaError
from sigma_vla.sim.instructions import (
    GENERIC_INSTRUCTION,
    KINDS,
    TEMPLATES,
    ZONE_NAMES,
    ZONES,
    instruction_from_template,
    sample_goal_xy,
    sample_instruction,
    templates_for,
    zone_of,
)

SUCCESS_RADIUS = 0.03  # lerobot_env_so101 PLACE_SUCCESS_DISTANCE


def test_six_zones_inside_the_measured_reachable_area():
    assert len(ZONES) == 6
    assert {(z.depth, z.side) for z in ZONES.values()} == set(
        itertools.product(("near", "far"), ("left", "centre", "right")))
    for z in ZONES.values():
        assert 0.13 <= z.x_range[0] < z.x_range[1] <= 0.31
        assert -0.16 <= z.y_range[0] < z.y_range[1] <= 0.16


def test_zones_are_farther_apart_than_the_success_radius():
    for a, b in itertools.combinations(ZONES.values(), 2):
        gap_x = max(a.x_range[0] - b.x_range[1], b.x_range[0] - a.x_range[1], 0.0)
        gap_y = max(a.y_range[0] - b.y_range[1], b.y_range[0] - a.y_range[1], 0.0)
        assert np.hypot(gap_x, gap_y) > SUCCESS_RADIUS, (a.name, b.name)


def test_left_is_the_robots_left():
    assert ZONES["near_left"].centre[1] > 0 > ZONES["near_right"].centre[1]
    assert ZONES["far_centre"].centre[0] > ZONES["near_centre"].centre[0]


def test_goal_samples_stay_in_their_zone():
    rng = np.random.default_rng(0)
    for name in ZONE_NAMES:
        for _ in range(50):
            xy = sample_goal_xy(rng, name)
            assert ZONES[name].contains(xy) and zone_of(xy) == name


def test_every_zone_has_both_kinds_and_a_held_out_subset():
    for name in ZONE_NAMES:
        for kind in KINDS:
            ts = templates_for(name, kind)
            held = [t for t in ts if t.held_out]
            assert len(ts) >= 4 and 1 <= len(held) <= len(ts) // 3, (name, kind)
            assert len(templates_for(name, kind, allow_held_out=False)) == len(ts) - len(held)


def test_template_ids_and_texts_are_unique_and_stable():
    ids = [t.template_id for t in TEMPLATES]
    assert len(set(ids)) == len(ids)
    assert len({t.text for t in TEMPLATES}) == len(TEMPLATES)
    assert all(t.template_id.startswith(f"{t.zone}/{t.kind}/") for t in TEMPLATES)
    assert instruction_from_template("near_left/implicit/0").text == "the bin is on your left, close to you"
    # held-out patterns are the same for every zone, so no held-out phrasing is seen in training
    held_patterns = {t.template_id.split("/", 1)[1] for t in TEMPLATES if t.held_out}
    assert held_patterns == {"explicit/3", "explicit/7", "implicit/3", "implicit/7"}


def test_sample_instruction_is_pure_and_respects_held_out():
    a = [sample_instruction(np.random.default_rng(7), "far_right") for _ in range(3)]
    assert a[0] == a[1] == a[2] and a[0].zone == "far_right"
    rng = np.random.default_rng(1)
    draws = [sample_instruction(rng, "near_centre", allow_held_out=False) for _ in range(200)]
    assert not any(d.held_out for d in draws) and {d.kind for d in draws} == set(KINDS)
    draws = [sample_instruction(rng, "near_centre", allow_held_out=True) for _ in range(200)]
    assert any(d.held_out for d in draws)


def test_generic_instruction_names_no_zone():
    words = set(GENERIC_INSTRUCTION.split())
    assert not words & {"near", "far", "left", "right", "centre", "middle", "close"}


def test_unknown_zone_is_a_sigma_error():
    with pytest.raises(SigmaError, match="unknown zone"):
        sample_instruction(np.random.default_rng(0), "upstairs")


def test_user_instructions_are_bounded_and_visible(tmp_path):
    """Accepted nonsense before: a 1 MB instruction (serve caps at 2000 characters), one of zero-width characters
    only, a raw 0xFF byte from the command line, /dev/zero or a deeply nested line as --instructions."""
    import pytest

    from sigma_vla.errors import SigmaError
    from sigma_vla.sim.instructions import read_instructions, user_instruction

    for text, phrase in (("x" * 2001, "more than 2000"), ("\u200b\u200b\u2060", "no visible characters"),
                         ("far left \udcff", "not valid UTF-8")):
        with pytest.raises(SigmaError, match=phrase):
            user_instruction(text, "far_left")
    assert user_instruction("  put it far left ", "far_left").text == "put it far left"
    with pytest.raises(SigmaError, match="not a regular file"):
        read_instructions("/dev/zero")
    nested = tmp_path / "nested.jsonl"
    nested.write_text("[" * 100_000 + "\n")
    with pytest.raises(SigmaError, match="nested.jsonl:1"):
        read_instructions(nested)
