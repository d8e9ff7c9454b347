from __future__ import annotations

import math

import pytest
import torch

from monai_kd.losses import KDLoss, MutualLearningLoss


def test_identical_logits_give_zero():
    z = torch.randn(5, 3)
    assert KDLoss(temperature=4.0)(z, z.clone()).item() == pytest.approx(0.0, abs=1e-6)


def test_known_kl_on_tiny_case():
    # student logits 0,0 -> p_s = (0.5, 0.5); teacher logits log(3), 0 -> p_t = (0.75, 0.25) at tau = 1
    s = torch.zeros(1, 2)
    t = torch.tensor([[math.log(3.0), 0.0]])
    expected = 0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5)
    assert KDLoss(temperature=1.0)(s, t).item() == pytest.approx(expected, rel=1e-6)


def test_temperature_squared_scaling():
    # with tau = 2 and logits scaled by 2, the softened distributions equal the tau = 1 case: loss = 4 x KL
    s = torch.zeros(1, 2)
    t = torch.tensor([[math.log(3.0), 0.0]])
    base = KDLoss(temperature=1.0)(s, t).item()
    assert KDLoss(temperature=2.0)(2 * s, 2 * t).item() == pytest.approx(4.0 * base, rel=1e-6)


def test_dense_output_is_mean_of_per_pixel_kl():
    s, t = torch.randn(2, 3, 4, 5), torch.randn(2, 3, 4, 5)
    per_pixel = KDLoss(temperature=2.0)(s.permute(0, 2, 3, 1).reshape(-1, 3), t.permute(0, 2, 3, 1).reshape(-1, 3))
    assert KDLoss(temperature=2.0)(s, t).item() == pytest.approx(per_pixel.item(), rel=1e-5)
    assert KDLoss(temperature=2.0, reduction="none")(s, t).shape == (2,)
    assert KDLoss(temperature=2.0)(torch.randn(2, 3, 4, 4, 4), torch.randn(2, 3, 4, 4, 4)).ndim == 0


def test_gradient_reaches_student_only():
    s = torch.randn(4, 3, requires_grad=True)
    t = torch.randn(4, 3, requires_grad=True)
    KDLoss()(s, t).backward()
    assert s.grad is not None and s.grad.abs().sum() > 0
    assert t.grad is None


def test_bad_arguments():
    with pytest.raises(ValueError, match="temperature"):
        KDLoss(temperature=0)
    with pytest.raises(ValueError, match="differ in shape"):
        KDLoss()(torch.randn(2, 3), torch.randn(2, 4))


def test_mutual_learning_is_kl_from_the_detached_peer():
    a = torch.randn(3, 4, requires_grad=True)
    b = torch.randn(3, 4, requires_grad=True)
    loss = MutualLearningLoss()(a, b)
    manual = torch.nn.functional.kl_div(torch.log_softmax(a, 1), torch.softmax(b, 1), reduction="batchmean")
    assert loss.item() == pytest.approx(manual.item(), rel=1e-5)
    loss.backward()
    assert b.grad is None and a.grad is not None
