"""Teacher and student features reach the teacher weighting; feature terms weighted per teacher and instance."""

from __future__ import annotations

import pytest
import torch

from monai_kd.losses import DistillationLoss, FeatureKDLoss, MultiTeacherKDLoss
from monai_kd.networks.teacher_weighting import TeacherWeighting


class _Fixed(TeacherWeighting):
    """Returns the given (B, K) weights and records what it was called with."""

    uses_features = True

    def __init__(self, weights: torch.Tensor) -> None:
        super().__init__()
        self.weights = weights
        self.calls: list[dict] = []

    def forward(self, teacher_logits, labels=None, features=None, student_logits=None, student_features=None):
        self.calls.append({"features": features, "student_features": student_features})
        return self.weights


def _features():
    s = {"s": torch.tensor([[[[1.0]]], [[[2.0]]]])}  # (B=2, C=1, 1, 1)
    t = [{"t0": torch.tensor([[[[0.0]]], [[[0.0]]]])}, {"t1": torch.tensor([[[[3.0]]], [[[3.0]]]])}]
    return s, t


def test_features_reach_the_kd_weighting():
    weighting = _Fixed(torch.full((2, 2), 0.5))
    loss = DistillationLoss(kd_loss=MultiTeacherKDLoss(weighting=weighting, weighting_signal="kd"))
    s, t = _features()
    loss(torch.zeros(2, 3), torch.tensor([0, 1]), [torch.zeros(2, 3), torch.ones(2, 3)], s, t)
    assert weighting.calls[0]["features"] is t and weighting.calls[0]["student_features"] is s


def test_feature_terms_weighted_per_teacher_and_instance():
    """Hand case: per-instance MSE of term 0 is (1, 4), of term 1 is (4, 1); weights pick term 0 for row 0 and
    term 1 for row 1 -> mean(1, 1) = 1; the unweighted sum would be mean(1,4) + mean(4,1) = 5."""
    terms = [FeatureKDLoss("s", "t0", teacher_index=0, reduction="none"), FeatureKDLoss("s", "t1", teacher_index=1, reduction="none")]
    weighting = _Fixed(torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
    s, t = _features()
    teachers = [torch.zeros(2, 3), torch.zeros(2, 3)]
    weighted = DistillationLoss(feature_losses=terms, feature_weighting=weighting)
    assert float(weighted(torch.zeros(2, 3), None, teachers, s, t)) == pytest.approx(1.0)
    assert torch.equal(weighted.last_feature_weights, weighting.weights)
    assert weighted.teacher_layers_per_teacher(2) == [["t0"], ["t1"]] and weighted.student_layers == ["s"]
    plain = DistillationLoss(feature_losses=terms)
    assert float(plain(torch.zeros(2, 3), None, teachers, s, t)) == pytest.approx(5.0)
    mean_terms = [FeatureKDLoss("s", "t0", teacher_index=0), FeatureKDLoss("s", "t1", teacher_index=1)]
    with pytest.raises(ValueError, match="reduction='none'"):
        DistillationLoss(feature_losses=mean_terms, feature_weighting=weighting)(torch.zeros(2, 3), None, teachers, s, t)
    with pytest.raises(ValueError, match="needs feature_losses"):
        DistillationLoss(task_loss=torch.nn.CrossEntropyLoss(), feature_weighting=weighting)
