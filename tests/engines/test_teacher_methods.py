"""The MMKD bundle's method registry: what ``method`` switches, and the per-teacher weight-averaging handlers."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from monai_kd.engines.teacher_methods import (
    TEACHER_METHODS,
    method_feature_weighting,
    method_step,
    method_weighting,
    uses_feature_branch,
    uses_quiz,
    weighting_signal,
)
from monai_kd.handlers import WeightAveraging
from monai_kd.handlers import stage_handlers
from monai_kd.networks import MetaWeightNetwork

FEATURES = dict(num_teachers=2, num_classes=3, teacher_layers=["a", "b"], teacher_channels=[4, 5], student_layer="s",
                student_channels=6)


def test_only_mmkd_runs_the_bilevel_step_on_the_quiz_and_learns_from_the_kd_signal():
    assert sorted(TEACHER_METHODS) == ["camkd", "gate", "mmkd", "uniform"]
    step = object()
    assert [uses_quiz(m) for m in ("uniform", "camkd", "gate", "mmkd")] == [False, False, False, True]
    assert [method_step(m, step) for m in ("uniform", "gate", "mmkd")] == [None, None, step]
    assert weighting_signal("mmkd") == "kd" and weighting_signal("gate") == "label"
    assert uses_feature_branch("mmkd", True) and not uses_feature_branch("mmkd", False)
    assert not uses_feature_branch("camkd", True)  # the feature branch needs meta-learned weights


def test_weighting_is_picked_by_name_and_unknown_names_are_refused():
    weightings = {"uniform": nn.Identity(), "mmkd": nn.Linear(1, 1)}
    assert method_weighting("mmkd", weightings) is weightings["mmkd"]
    with pytest.raises(ValueError, match=r"method must be one of \['camkd', 'gate', 'mmkd', 'uniform'\], got 'mkd'"):
        method_weighting("mkd", weightings)
    with pytest.raises(ValueError, match="no weighting for method 'gate'"):
        method_weighting("gate", weightings)


def test_feature_weighting_is_built_only_for_the_feature_branch():
    torch.manual_seed(0)
    state = torch.random.get_rng_state()
    assert method_feature_weighting("uniform", True, **FEATURES) is None
    assert method_feature_weighting("mmkd", False, **FEATURES) is None
    assert torch.equal(torch.random.get_rng_state(), state)  # not built: no random numbers drawn
    net = method_feature_weighting("mmkd", True, hidden=8, **FEATURES)
    assert isinstance(net, MetaWeightNetwork) and net.num_teachers == 2 and net.use_features


def test_each_model_of_a_dict_is_averaged_on_its_own_before_validation():
    torch.manual_seed(0)
    nets = nn.ModuleDict({"a": nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2)), "b": nn.Linear(2, 3)})
    avg = nn.ModuleDict({"a": nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2)), "b": nn.Linear(2, 3)})
    opt = torch.optim.SGD(nets.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.StepLR(opt, 1)
    handlers = stage_handlers("teachers", nets, avg, sched, validator=None, ckpt_dir="/tmp", ckpt_name="t.pt",
                             bn_max_batches=3)
    averaging = [h for h in handlers if isinstance(h, WeightAveraging)]
    assert handlers[:2] == averaging and [h.network for h in averaging] == [nets["a"], nets["b"]]
    assert [h.averaged for h in averaging] == [avg["a"], avg["b"]] and averaging[0].bn_max_batches == 3
    names = [type(h).__name__ for h in handlers[2:]]
    assert names == ["LrScheduleHandler", "ValidationHandler", "StatsHandler", "ProgressBar", "CheckpointSaver"]
    assert handlers[-1]._final_filename == "t.pt"
    single = stage_handlers("student", nets["b"], avg["b"], sched, validator=None, ckpt_dir="/tmp")
    assert single[0].network is nets["b"] and len(single) == 6 and single[-1]._final_filename == "student.pt"
