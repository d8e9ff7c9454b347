from __future__ import annotations

import math

import pytest
import torch

from monai_kd.losses.fixmatch import FixMatchLoss

# pseudo-label probabilities: rows 0 and 2 are confident (>= 0.95), rows 1 and 3 are not
PROBS = torch.tensor([[0.97, 0.03], [0.5, 0.5], [0.02, 0.98], [0.9, 0.1]])
# student on the strong view: row 0 gives p(0) = 0.75, row 2 gives p(1) = 0.5
STRONG = torch.tensor([[math.log(3.0), 0.0], [4.0, -4.0], [0.0, 0.0], [-4.0, 4.0]])
EXPECTED = (-math.log(0.75) + math.log(2.0)) / 4  # masked rows count as 0 in the batch mean


def test_low_confidence_pseudo_labels_are_masked_hand_computed():
    loss = FixMatchLoss(threshold=0.95, target_is_probs=True)
    assert loss(STRONG, PROBS).item() == pytest.approx(EXPECTED, rel=1e-6)
    assert loss.last_mask_rate == pytest.approx(0.5)


def test_logit_targets_and_per_call_override_give_the_same_value():
    logits = PROBS.log()  # softmax(log p) = p
    assert FixMatchLoss()(STRONG, logits).item() == pytest.approx(EXPECTED, rel=1e-5)
    assert FixMatchLoss()(STRONG, PROBS, target_is_probs=True).item() == pytest.approx(EXPECTED, rel=1e-6)


def test_masked_rows_get_no_gradient_and_target_is_detached():
    strong = STRONG.clone().requires_grad_(True)
    target = PROBS.clone().requires_grad_(True)
    per_instance = FixMatchLoss(target_is_probs=True, reduction="none")(strong, target)
    assert torch.allclose(per_instance, torch.tensor([-math.log(0.75), 0.0, math.log(2.0), 0.0]))
    per_instance.sum().backward()
    assert strong.grad[[1, 3]].abs().sum() == 0 and strong.grad[[0, 2]].abs().sum() > 0
    assert target.grad is None


def test_dense_outputs_are_masked_per_pixel():
    # one instance, 2 classes, 2x2 pixels: pixels 0 and 3 confident (label 0 and 1), pixels 1 and 2 not
    p0 = torch.tensor([[0.99, 0.6], [0.5, 0.01]])
    probs = torch.stack([p0, 1 - p0]).unsqueeze(0)  # (1, 2, 2, 2)
    strong = torch.zeros(1, 2, 2, 2)  # uniform student: CE = log 2 per pixel
    loss = FixMatchLoss(target_is_probs=True)
    assert loss(strong, probs).item() == pytest.approx(2 * math.log(2.0) / 4, rel=1e-6)
    assert loss.last_mask_rate == pytest.approx(0.5)
    assert FixMatchLoss(threshold=0.5, target_is_probs=True)(strong, probs).item() == pytest.approx(math.log(2.0))


def test_bad_arguments():
    with pytest.raises(ValueError, match="threshold"):
        FixMatchLoss(threshold=1.5)
    with pytest.raises(ValueError, match="shape"):
        FixMatchLoss()(torch.zeros(2, 3), torch.zeros(2, 2))
