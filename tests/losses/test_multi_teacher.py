from __future__ import annotations

import math

import pytest
import torch

from monai_kd.losses import KDLoss, MultiTeacherKDLoss
from monai_kd.networks import ConfidenceWeighting, TeacherWeighting


def test_one_uniform_teacher_is_hinton_kd():
    s, t = torch.randn(6, 3), torch.randn(6, 3)
    assert MultiTeacherKDLoss(temperature=3.0)(s, [t]).item() == pytest.approx(KDLoss(3.0)(s, t).item(), rel=1e-6)


def test_uniform_fusion_of_two_teachers_hand_computed():
    # tau = 1: teacher A says (1, 0), teacher B says (0.5, 0.5) -> fused (0.75, 0.25); student uniform
    big = 50.0
    a = torch.tensor([[big, -big]])
    b = torch.zeros(1, 2)
    s = torch.zeros(1, 2)
    expected = 0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5)
    loss = MultiTeacherKDLoss(temperature=1.0)
    assert loss(s, [a, b]).item() == pytest.approx(expected, rel=1e-5)
    assert torch.allclose(loss.last_weights, torch.tensor([[0.5, 0.5]]))


def test_weights_come_from_the_weighting_module():
    class FirstOnly(TeacherWeighting):
        def forward(self, teacher_logits, labels=None, features=None, student_logits=None):
            w = torch.zeros(teacher_logits.shape[1], teacher_logits.shape[0])
            w[:, 0] = 1.0
            return w

    s, a, b = torch.randn(4, 3), torch.randn(4, 3), torch.randn(4, 3)
    value = MultiTeacherKDLoss(temperature=2.0, weighting=FirstOnly())(s, [a, b])
    assert value.item() == pytest.approx(KDLoss(2.0)(s, a).item(), rel=1e-5)


def test_confidence_weighting_plugs_in_with_labels_and_dense_outputs():
    s = torch.randn(2, 3, 4, 4)
    teachers = [torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4)]
    loss = MultiTeacherKDLoss(weighting=ConfidenceWeighting())
    value = loss(s, teachers, labels=torch.randint(0, 3, (2, 1, 4, 4)))
    assert value.ndim == 0 and value.item() > 0
    assert torch.allclose(loss.last_weights.sum(dim=1), torch.ones(2))


def test_no_teacher_is_an_error():
    with pytest.raises(ValueError, match="at least one teacher"):
        MultiTeacherKDLoss()(torch.randn(2, 2), [])
