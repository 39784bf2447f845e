"""Small pieces of the trainer: state (de)serialisation without pickle, batch plans, configs, transforms, the
registry and the LR schedule."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch

from sigma_vla.errors import SigmaError
from sigma_vla.models.config import ConfigError
from sigma_vla.training.batches import BatchPlan
from sigma_vla.training.checkpoint import flatten_state, load_state, rng_state, save_state, set_rng_state
from sigma_vla.training.config import TrafConfig, TrainConfig
from sigma_vla.training.optim import lr_factor
from sigma_vla.training.registry import EXPERIMENTS, get_experiment, model_config_for


def test_optimizer_state_round_trip_without_pickle(tmp_path):
    p = torch.nn.Parameter(torch.randn(3, 2))
    opt = torch.optim.AdamW([p], lr=0.1, betas=(0.8, 0.9))
    p.grad = torch.ones(3, 2)
    opt.step()
    save_state(opt.state_dict(), tmp_path, "optimizer")
    assert json.loads((tmp_path / "optimizer.json").read_text())  # plain JSON
    back = load_state(tmp_path, "optimizer")
    assert back["param_groups"][0]["betas"] == (0.8, 0.9) and 0 in back["state"]
    assert torch.equal(back["state"][0]["exp_avg"], opt.state_dict()["state"][0]["exp_avg"])
    opt2 = torch.optim.AdamW([torch.nn.Parameter(p.detach().clone())], lr=0.1)
    opt2.load_state_dict(back)


def test_rng_state_round_trip(tmp_path):
    save_state(rng_state(), tmp_path, "rng")
    expected = (torch.rand(2), random.random(), np.random.rand())
    set_rng_state(load_state(tmp_path, "rng"))
    assert torch.equal(torch.rand(2), expected[0]) and random.random() == expected[1]
    assert np.random.rand() == expected[2]


def test_flatten_rejects_unknown_objects():
    with pytest.raises(TypeError, match="without pickle"):
        flatten_state({"x": object()})


def test_batch_plan_ranks_disjoint_and_pure():
    plans = [BatchPlan(10, 3, world_size=2, rank=r, seed=5) for r in range(2)]
    first = [set(p.indices(0).tolist()) for p in plans]
    assert not first[0] & first[1]
    assert torch.equal(plans[0].indices(7), BatchPlan(10, 3, 2, 0, 5).indices(7))  # pure function of j
    seen = torch.cat([plans[r].indices(j) for j in range(5) for r in range(2)])[:10]  # one epoch = a permutation
    assert sorted(seen.tolist()) == list(range(10))
    assert len(BatchPlan(2, 5).indices(0)) == 5  # smaller than a batch: wraps into the next epoch


def test_train_config_json_round_trip_and_validation():
    cfg = get_experiment("demo").train
    assert TrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    with pytest.raises(ConfigError, match="batch_size must be >= 1, got 0") as err:
        cfg.replace(batch_size=0)
    assert err.value.field == "batch_size"
    with pytest.raises(ConfigError, match="'fp8'"):
        cfg.replace(mixed_precision="fp8")
    with pytest.raises(ConfigError, match="unknown key") as err:  # the generic config reader, nested keys too
        TrainConfig.from_dict({**cfg.to_dict(), "traf": {**cfg.to_dict()["traf"], "gamma": 1.0}})
    assert err.value.field == "traf"
    assert cfg.replace(ramp_fraction=None).ramp_fraction is None  # None is a value
    assert TrainConfig(steps=130).curriculum().ramp_steps == 82  # Table 1's ramp
    with pytest.raises(ConfigError, match="residual_floor must be > 0") as err:
        TrafConfig(residual_floor=0.0)
    assert err.value.field == "traf.residual_floor"


def test_lr_schedule_warmup_then_cosine():
    cfg = TrainConfig(steps=110, warmup_steps=10, min_lr_ratio=0.1)
    assert lr_factor(0, cfg) == pytest.approx(0.1) and lr_factor(9, cfg) == pytest.approx(1.0)
    assert lr_factor(10, cfg) == pytest.approx(1.0) and lr_factor(60, cfg) == pytest.approx(0.55)
    assert lr_factor(110, cfg) == pytest.approx(0.1)


def _meta():
    return {"params": {"horizon": 6, "chunk": 3, "image_size": 32}, "cameras": ["a"], "state_dim": 2,
            "action_dim": 1, "tasks": ["go left"],
            "normalization": {"robot_state": {"mean": [1.0, 2.0], "std": [2.0, 4.0]},
                              "action": {"mean": [10.0], "std": [5.0]}}}


def test_model_config_takes_data_dims_from_meta():
    cfg = model_config_for(_meta(), get_experiment("tiny").model_preset_config())
    assert (cfg.state_dim, cfg.action_dim, cfg.horizon, cfg.chunk) == (2, 1, 6, 3)
    assert (cfg.vision.num_cameras, cfg.vision.image_size) == (1, 32)
    bad = {**_meta(), "params": {"horizon": 6, "chunk": 3, "image_size": 30}}
    with pytest.raises(SigmaError, match="patch size"):
        model_config_for(bad, get_experiment("tiny").model_preset_config())
    with pytest.raises(SigmaError, match="unknown experiment"):
        get_experiment("nope")
    assert set(EXPERIMENTS) == {"tiny", "demo", "pi05"}


def test_the_residual_head_learns_at_its_own_rate_through_the_schedule():
    from sigma_vla.models import SigmaConfig, SigmaModel
    from sigma_vla.training.optim import build_optimizer, build_scheduler
    from sigma_vla.training.tasks import SigmaTask

    cfg = TrainConfig(steps=10, lr=1e-3, residual_lr_scale=4.0, warmup_steps=2)
    groups = SigmaTask(SigmaModel(SigmaConfig.tiny()), cfg, transform=None).param_groups("lora")
    assert {n.split(".")[1] for n, _ in groups["residual"]} == {"residual_head", "tau_high"}
    assert not any("residual_head" in n or "tau_high" in n for n, _ in groups["heads"])
    opt = build_optimizer(groups, cfg)
    sched = build_scheduler(opt, cfg)
    for _ in range(5):
        opt.step()
        sched.step()
        lr = {g["name"]: g["lr"] for g in opt.param_groups}
        assert lr["residual"] == pytest.approx(4 * lr["heads"]) and lr["heads"] == pytest.approx(lr["lora"])
    with pytest.raises(ConfigError, match="residual_lr_scale"):
        TrainConfig(residual_lr_scale=0.0)
