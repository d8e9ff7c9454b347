from __future__ import annotations

import pytest
import torch

from monai_kd.losses import FeatureKDLoss


def test_mse_without_connector():
    s, t = torch.zeros(2, 4, 3, 3), torch.ones(2, 4, 3, 3)
    loss = FeatureKDLoss(student_channels=4, teacher_channels=4)
    assert isinstance(loss.connector, torch.nn.Identity)
    assert loss(s, t).item() == pytest.approx(1.0)


def test_connector_maps_channels_and_trains():
    loss = FeatureKDLoss(student_channels=8, teacher_channels=16, spatial_dims=3)
    assert isinstance(loss.connector, torch.nn.Conv3d)
    s = torch.randn(2, 8, 4, 4, 4, requires_grad=True)
    value = loss(s, torch.randn(2, 16, 4, 4, 4))
    value.backward()
    assert loss.connector.weight.grad is not None and s.grad is not None


def test_spatial_mismatch_is_resized():
    loss = FeatureKDLoss(student_channels=4, teacher_channels=4)
    s = torch.ones(1, 4, 2, 2)
    t = torch.ones(1, 4, 4, 4)
    assert loss(s, t).item() == pytest.approx(0.0)  # nearest upsampling of a constant map


def test_channel_mismatch_without_connector_is_explained():
    with pytest.raises(ValueError, match="connector"):
        FeatureKDLoss(student_channels=None, teacher_channels=8)
    with pytest.raises(ValueError, match="student_channels"):
        FeatureKDLoss(student_layer="a", teacher_layer="b")(torch.randn(1, 2, 3, 3), torch.randn(1, 5, 3, 3))


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_default_resize_averages_every_student_position(spatial_dims):
    # a 4x4 student map against a 1x1 teacher map: a one-hot at the first or the last position must cost the same
    # (area resize: mean 1/16 against target 0 -> (1/16)^2); a nearest resize would see only the first one
    size = (4,) * spatial_dims
    loss = FeatureKDLoss(student_channels=1, teacher_channels=1, spatial_dims=spatial_dims)
    target = torch.zeros(1, 1, *([1] * spatial_dims))
    first, last = torch.zeros(1, 1, *size), torch.zeros(1, 1, *size)
    first.view(-1)[0] = 1.0
    last.view(-1)[-1] = 1.0
    expected = (1.0 / first.numel()) ** 2
    assert loss(first, target).item() == pytest.approx(expected)
    assert loss(last, target).item() == pytest.approx(expected)
