"""`sigma train`'s options are TrainConfig's fields: named alike, checked by TrainConfig, defaulting to the
experiment's value; one `replace` meaning for every config."""

from __future__ import annotations

import dataclasses
import inspect

import pytest

from sigma_vla.cli.train import train, train_overrides
from sigma_vla.errors import SigmaError
from sigma_vla.models.config import SigmaConfig
from sigma_vla.training.config import TrainConfig
from tests.conftest import run_cli

FIELDS = {f.name for f in dataclasses.fields(TrainConfig)}


def test_every_training_option_is_a_train_config_field_left_to_the_experiment():
    source = inspect.getsource(train)
    passed = source[source.index("train_overrides("):].split(")")[0]
    names = [part.split("=")[0].strip() for part in passed.split("(", 1)[1].split(",") if "=" in part]
    assert names and set(names) <= FIELDS
    params = inspect.signature(train).parameters
    for name in names:  # None means "the experiment's value", so the preset shows through
        assert params[name].default.default is None, name


@pytest.mark.parametrize(("options", "flag"), [({"lr": 0.0}, "--lr"), ({"steps": 0}, "--steps"),
                                               ({"mixed_precision": "fp8"}, "--mixed-precision"),
                                               ({"residual_lr_scale": float("nan")}, "--residual-lr-scale")])
def test_a_bad_value_is_refused_by_the_config_naming_the_option(options, flag):
    with pytest.raises(SigmaError) as err:
        train_overrides(**options)
    assert f"field '{flag}'" in err.value.one_line()


def test_options_not_given_are_left_out():
    assert train_overrides(steps=5, lr=None, seed=0) == {"steps": 5, "seed": 0}


def test_replace_means_the_same_for_every_config():
    assert TrainConfig().replace(ramp_fraction=None).ramp_fraction is None  # None is a value, as for SigmaConfig
    assert SigmaConfig.tiny().replace(chunk=4).chunk == 4


def test_extend_steps_without_resume_is_one_line(tmp_path, capsys):
    (tmp_path / "shards").mkdir()
    code, _, err = run_cli(["train", tmp_path / "shards", "--out", tmp_path / "run", "--extend-steps",
                            "--steps", "5", "--config", "tiny"], capsys)
    assert code == 2 and "field '--extend-steps'" in err and "Traceback" not in err


def test_calibrate_writes_the_adapter_and_a_bad_run_is_one_line(tiny_run, tmp_path, capsys):
    import json
    import shutil

    shards, run = tiny_run
    mine = shutil.copytree(run, tmp_path / "run")
    (mine / "adapter.json").unlink(missing_ok=True)
    code, out, err = run_cli(["calibrate", mine, shards], capsys)
    assert code == 0, err
    cfg = json.loads((mine / "adapter.json").read_text())
    assert cfg["tau_max"] > 0 and cfg["ratio_max"] > 0 and "adapter.json" in out
    code, _, err = run_cli(["calibrate", tmp_path / "nothing", shards], capsys)
    assert code == 2 and err.startswith("error: ") and "Traceback" not in err
