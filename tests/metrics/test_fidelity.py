from __future__ import annotations

import pytest
import torch

from monai_kd.metrics.fidelity import FidelityMetric, fidelity


def _mask_logits(mask: torch.Tensor) -> torch.Tensor:
    fg = mask.float() * 4.0 - 2.0
    return torch.stack([-fg, fg], dim=1)


def test_classification_fidelity_is_top1_agreement():
    student = torch.tensor([[2.0, 1.0, 0.0], [0.0, 1.0, 0.5], [0.1, 0.0, 3.0], [1.0, 0.0, 0.0]])
    teacher = torch.tensor([[9.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
    assert fidelity(student, teacher).item() == pytest.approx(0.5)  # argmax 0,1,2,0 vs 0,2,2,1
    assert fidelity(student, teacher, reduction="none").tolist() == [1.0, 0.0, 1.0, 0.0]
    assert fidelity(teacher, teacher).item() == 1.0


def test_segmentation_fidelity_is_dice_of_argmax_masks():
    a = torch.zeros(1, 6, 6, dtype=torch.bool)
    b = torch.zeros(1, 6, 6, dtype=torch.bool)
    a[0, :2, :3] = True  # 6 pixels
    b[0, :2, 1:5] = True  # 8 pixels, 4 shared
    empty = torch.zeros_like(a)
    s = _mask_logits(torch.cat([a, empty, a]))
    t = _mask_logits(torch.cat([b, empty, empty]))
    # Dice 2*4/(6+8); two empty masks agree; a mask against an empty one gives 0
    assert fidelity(s, t, reduction="none").tolist() == pytest.approx([8 / 14, 1.0, 0.0])
    assert fidelity(s, t).item() == pytest.approx((8 / 14 + 1.0) / 3)
    assert fidelity(s, s).item() == 1.0


def test_cumulative_metric_accepts_batches_and_decollated_items():
    student = torch.tensor([[2.0, 1.0], [0.0, 1.0], [1.0, 0.0]])
    teacher = torch.tensor([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0]])
    metric = FidelityMetric(get_not_nans=True)
    metric(y_pred=student, y=teacher)
    metric(y_pred=list(student), y=list(teacher))
    value, count = metric.aggregate()
    assert value.item() == pytest.approx(2 / 3) and count.item() == 6


def test_errors():
    with pytest.raises(ValueError, match="differ in shape"):
        fidelity(torch.zeros(2, 3), torch.zeros(2, 2))
    with pytest.raises(ValueError, match="task"):
        fidelity(torch.zeros(2, 3), torch.zeros(2, 3), task="detection")
    with pytest.raises(ValueError, match="task"):
        FidelityMetric(task="regression")
