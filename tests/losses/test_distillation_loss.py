from __future__ import annotations

import pytest
import torch

from monai_kd.losses import DistillationLoss, FeatureKDLoss, KDLoss, MultiTeacherKDLoss


def test_weighted_sum_of_terms():
    s, t, y = torch.randn(4, 3), torch.randn(4, 3), torch.randint(0, 3, (4,))
    fs, ft = torch.randn(4, 2, 3, 3), torch.randn(4, 2, 3, 3)
    loss = DistillationLoss(
        task_loss=torch.nn.CrossEntropyLoss(),
        kd_loss=MultiTeacherKDLoss(temperature=2.0),
        feature_losses=[FeatureKDLoss("s1", "t1", student_channels=2, teacher_channels=2)],
        task_weight=0.3,
        kd_weight=0.7,
        feature_weight=2.0,
    )
    value = loss(s, y, [t], {"s1": fs}, [{"t1": ft}])
    ce = torch.nn.functional.cross_entropy(s, y)
    kd = KDLoss(2.0)(s, t)
    mse = (fs - ft).pow(2).mean()
    assert value.item() == pytest.approx((0.3 * ce + 0.7 * kd + 2.0 * mse).item(), rel=1e-5)
    assert set(loss.last_terms) == {"task", "kd", "feature"}
    assert loss.last_terms["kd"] == pytest.approx(kd.item(), rel=1e-5)
    assert loss.student_layers == ["s1"] and loss.teacher_layers == ["t1"]


def test_zero_weight_switches_a_term_off():
    s, y = torch.randn(4, 3), torch.randint(0, 3, (4,))
    loss = DistillationLoss(task_loss=torch.nn.CrossEntropyLoss(), kd_loss=MultiTeacherKDLoss(), kd_weight=0.0)
    assert loss(s, y).item() == pytest.approx(torch.nn.functional.cross_entropy(s, y).item(), rel=1e-6)
    assert "kd" not in loss.last_terms


def test_missing_pieces_are_named():
    with pytest.raises(ValueError, match="at least one"):
        DistillationLoss()
    with pytest.raises(ValueError, match="no teacher outputs"):
        DistillationLoss(kd_loss=MultiTeacherKDLoss())(torch.randn(2, 2), None)
    loss = DistillationLoss(feature_losses=[FeatureKDLoss("layer9", "layer3", student_channels=2, teacher_channels=2)])
    with pytest.raises(KeyError, match="layer9"):
        loss(torch.randn(2, 2), None, [torch.randn(2, 2)], {"layer1": torch.randn(2, 2, 2, 2)}, [{}])
