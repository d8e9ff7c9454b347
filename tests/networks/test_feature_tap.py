from __future__ import annotations

import pytest
import torch
from monai.networks.nets import ResNet, UNet

from monai_kd.networks import FeatureTap


def _small_resnet(spatial_dims: int) -> ResNet:
    return ResNet("basic", [1, 1, 1, 1], [4, 8, 8, 8], spatial_dims=spatial_dims, n_input_channels=1, num_classes=2)


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_taps_the_named_layer(spatial_dims):
    net = _small_resnet(spatial_dims).eval()
    x = torch.randn(2, 1, *([16] * spatial_dims))
    with FeatureTap(net, ["layer2"]) as tap:
        net(x)
        expected = net.layer2(net.layer1(net.maxpool(net.act(net.bn1(net.conv1(x))))))
        assert torch.allclose(tap.features["layer2"], expected, atol=1e-6)
        assert tap.features["layer2"].shape[:2] == (2, 8)


def test_student_features_keep_gradients_and_teacher_features_do_not():
    net = _small_resnet(2)
    x = torch.randn(2, 1, 16, 16)
    grad_tap, frozen_tap = FeatureTap(net, ["layer1"]), FeatureTap(net, ["layer1"], detach=True)
    net(x)
    assert grad_tap.features["layer1"].requires_grad
    assert not frozen_tap.features["layer1"].requires_grad


def test_hooks_are_removed():
    net = UNet(spatial_dims=2, in_channels=1, out_channels=2, channels=(4, 8), strides=(2,))
    name = [n for n, _ in net.named_modules() if n][0]
    tap = FeatureTap(net, [name])
    module = dict(net.named_modules())[name]
    assert len(module._forward_hooks) == 1 and tap.active
    tap.remove()
    assert len(module._forward_hooks) == 0 and not tap.active
    net(torch.randn(1, 1, 8, 8))
    assert tap.features == {}


def test_unknown_layer_names_close_matches():
    with pytest.raises(KeyError, match="layer5.*close names.*layer4"):
        FeatureTap(_small_resnet(2), ["layer5"])
