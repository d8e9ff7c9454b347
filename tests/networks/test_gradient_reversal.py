from __future__ import annotations

import math

import pytest
import torch

from monai_kd.networks.gradient_reversal import GradientReversal, dann_coefficient


def test_forward_is_identity_and_gradient_is_reversed_and_scaled():
    x = torch.tensor([1.0, -2.0, 3.0], requires_grad=True)
    grl = GradientReversal(coefficient=0.5)
    y = grl(x)
    assert torch.equal(y, x)
    # d/dx sum(w * y) = w without the layer; with it: -0.5 * w
    (torch.tensor([2.0, 4.0, -6.0]) * y).sum().backward()
    assert torch.equal(x.grad, torch.tensor([-1.0, -2.0, 3.0]))


def test_coefficient_is_settable_between_calls():
    x = torch.ones(2, requires_grad=True)
    grl = GradientReversal()
    grl.coefficient = 3.0
    grl(x).sum().backward()
    assert torch.equal(x.grad, torch.full((2,), -3.0))
    x.grad = None
    grl.coefficient = 0.0  # the domain head still trains, the features get nothing from it
    grl(x).sum().backward()
    assert torch.equal(x.grad, torch.zeros(2))
    assert "coefficient=0.0" in repr(grl)


def test_only_the_path_through_the_layer_is_reversed():
    x = torch.tensor(2.0, requires_grad=True)
    (x * 3.0 + GradientReversal(1.0)(x) * 5.0).backward()
    assert x.grad.item() == pytest.approx(3.0 - 5.0)


def test_schedule_values_and_monotone():
    assert dann_coefficient(0.0) == 0.0
    assert dann_coefficient(1.0) == pytest.approx(2.0 / (1.0 + math.exp(-10.0)) - 1.0)  # 0.99991
    assert dann_coefficient(0.5, gamma=2.0) == pytest.approx(2.0 / (1.0 + math.exp(-1.0)) - 1.0)
    values = [dann_coefficient(p / 20) for p in range(21)]
    assert all(b > a for a, b in zip(values, values[1:]))
    assert dann_coefficient(-1.0) == 0.0 and dann_coefficient(2.0) == dann_coefficient(1.0)  # clamped
