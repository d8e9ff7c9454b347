from __future__ import annotations

import pytest
import torch
from monai.bundle import ConfigParser

from monai_kd.losses.multi_teacher import MultiTeacherKDLoss
from monai_kd.networks.learned_gate import LearnedGateWeighting
from monai_kd.networks.teacher_weighting import TeacherWeighting


def _check_simplex(w: torch.Tensor, b: int, k: int) -> None:
    assert w.shape == (b, k)
    assert (w >= 0).all()
    assert torch.allclose(w.sum(dim=1), torch.ones(b))


@pytest.mark.parametrize("use_student", [False, True])
def test_weights_are_a_distribution_per_instance(use_student):
    torch.manual_seed(0)
    gate = LearnedGateWeighting(num_teachers=3, num_classes=4, hidden=8, use_student=use_student)
    assert isinstance(gate, TeacherWeighting)
    w = gate(torch.randn(3, 5, 4) * 5, labels=torch.tensor([0, 1, -1, 2, 3]), student_logits=torch.randn(5, 4))
    _check_simplex(w, 5, 3)


@pytest.mark.parametrize("spatial", [(6, 6), (4, 4, 4)])
def test_dense_outputs_are_pooled_to_one_weight_per_instance(spatial):
    gate = LearnedGateWeighting(num_teachers=2, num_classes=3, hidden=8, use_student=True)
    w = gate(torch.randn(2, 4, 3, *spatial), student_logits=torch.randn(4, 3, *spatial))
    _check_simplex(w, 4, 2)


def test_gradients_reach_the_gate_but_not_the_teachers():
    torch.manual_seed(0)
    gate = LearnedGateWeighting(num_teachers=2, num_classes=3, hidden=8, use_student=True)
    loss = MultiTeacherKDLoss(temperature=2.0, weighting=gate)
    teachers = [torch.randn(4, 3, requires_grad=True) for _ in range(2)]
    student = torch.randn(4, 3, requires_grad=True)
    loss(student, teachers).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in gate.parameters())
    assert student.grad is not None and all(t.grad is None for t in teachers)
    assert set(map(id, gate.parameters())) <= set(map(id, loss.parameters()))  # trained via loss.parameters()


def test_bad_shapes_and_missing_student_are_rejected():
    gate = LearnedGateWeighting(num_teachers=2, num_classes=3, use_student=True)
    with pytest.raises(ValueError, match="2 teachers x 3 classes"):
        gate(torch.randn(3, 4, 3))
    with pytest.raises(ValueError, match="student_logits"):
        gate(torch.randn(2, 4, 3))


def test_constructible_from_bundle_config():
    config = {
        "gate": {
            "_target_": "monai_kd.networks.learned_gate.LearnedGateWeighting",
            "num_teachers": 2,
            "num_classes": 2,
        },
        "kd": {"_target_": "monai_kd.losses.multi_teacher.MultiTeacherKDLoss", "weighting": "@gate"},
    }
    parser = ConfigParser(config)
    assert isinstance(parser.get_parsed_content("kd").weighting, LearnedGateWeighting)
