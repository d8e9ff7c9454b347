from __future__ import annotations

import math

import pytest
import torch

from monai_kd.networks import ConfidenceWeighting, UniformWeighting


def test_uniform():
    w = UniformWeighting()(torch.randn(3, 5, 2))
    assert w.shape == (5, 3) and torch.allclose(w, torch.full((5, 3), 1 / 3))


def test_confident_teacher_gets_more_weight_without_labels():
    sure = torch.tensor([[6.0, -6.0]] * 4)
    unsure = torch.tensor([[0.1, 0.0]] * 4)
    w = ConfidenceWeighting()(torch.stack([unsure, sure]))
    assert (w >= 0).all() and torch.allclose(w.sum(dim=1), torch.ones(4))
    assert (w[:, 1] > w[:, 0]).all()


def test_correct_teacher_gets_more_weight_with_labels_hand_computed():
    # teacher A: p(y=0) = 0.75, teacher B: p(y=0) = 0.25, label 0 -> w ∝ exp(-CE) = p(y) -> (0.75, 0.25)
    a = torch.tensor([[math.log(3.0), 0.0]])
    b = torch.tensor([[0.0, math.log(3.0)]])
    w = ConfidenceWeighting()(torch.stack([a, b]), labels=torch.tensor([0]))
    assert torch.allclose(w, torch.tensor([[0.75, 0.25]]), atol=1e-6)


def test_unlabelled_rows_fall_back_to_entropy():
    a = torch.tensor([[math.log(3.0), 0.0], [5.0, -5.0]])
    b = torch.tensor([[0.0, math.log(3.0)], [0.0, 0.0]])
    w = ConfidenceWeighting()(torch.stack([a, b]), labels=torch.tensor([1, -1]))
    assert w[0, 1] > w[0, 0]  # labelled row: B is right
    assert w[1, 0] > w[1, 1]  # unlabelled row: A is more confident
    assert torch.allclose(w.sum(dim=1), torch.ones(2))


def test_dense_outputs_and_bad_sharpness():
    w = ConfidenceWeighting()(torch.randn(3, 2, 4, 8, 8), labels=torch.randint(0, 4, (2, 1, 8, 8)))
    assert w.shape == (2, 3) and torch.allclose(w.sum(dim=1), torch.ones(2))
    with pytest.raises(ValueError, match="sharpness"):
        ConfidenceWeighting(sharpness=0)


def test_camkd_form_is_ca_mkd_exactly_and_softmin_is_exp_minus_ce():
    # scores (CE of the label) 0.1, 0.5, 2.0: CA-MKD gives (1 - softmax(CE)) / (K - 1); softmin gives softmax(-CE)
    ces = [0.1, 0.5, 2.0]
    logits = torch.stack([torch.tensor([[-c, math.log(1 - math.exp(-c))]]) for c in ces])
    camkd = ConfidenceWeighting(form="camkd")(logits, labels=torch.tensor([0]))
    softmin = ConfidenceWeighting()(logits, labels=torch.tensor([0]))
    assert torch.allclose(camkd, torch.tensor([[0.446, 0.419, 0.136]]), atol=1e-3)
    assert torch.allclose(softmin, torch.tensor([[0.549, 0.368, 0.082]]), atol=1e-3)
    # two teachers: both forms are the same; one teacher: weight 1
    two = logits[:2]
    assert torch.allclose(
        ConfidenceWeighting(form="camkd")(two, labels=torch.tensor([0])), ConfidenceWeighting()(two, torch.tensor([0]))
    )
    assert ConfidenceWeighting(form="camkd")(logits[:1], labels=torch.tensor([0])).item() == pytest.approx(1.0)
    with pytest.raises(ValueError, match="form"):
        ConfidenceWeighting(form="ca-mkd")
