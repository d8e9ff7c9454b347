from __future__ import annotations

import pytest
import torch
from monai.networks.nets import ResNet

from monai_kd.networks import load_pretrained
from monai_kd.networks.pretrained import CheckpointMismatchError


def _net(num_classes: int = 2, layers=(1, 1, 1, 1)) -> ResNet:
    return ResNet("basic", list(layers), [4, 8, 8, 8], spatial_dims=2, n_input_channels=1, num_classes=num_classes)


def test_loads_monai_checkpoint_saver_format(tmp_path):
    src = _net()
    path = tmp_path / "teacher.pt"
    torch.save({"model": src.state_dict()}, path)
    dst = load_pretrained(_net(), path)
    for a, b in zip(src.state_dict().values(), dst.state_dict().values()):
        assert torch.equal(a, b)


def test_class_count_mismatch_is_named(tmp_path):
    path = tmp_path / "teacher.pt"
    torch.save(_net(num_classes=3).state_dict(), path)
    with pytest.raises(CheckpointMismatchError, match=r"teacher.pt.*shape mismatch.*fc.weight"):
        load_pretrained(_net(num_classes=2), path)


def test_layer_name_mismatch_and_missing_file(tmp_path):
    path = tmp_path / "other.pt"
    torch.save(_net(layers=(2, 1, 1, 1)).state_dict(), path)
    with pytest.raises(CheckpointMismatchError, match="unexpected layers.*layer1.1"):
        load_pretrained(_net(), path)
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        load_pretrained(_net(), tmp_path / "missing.pt")


def test_pretrained_loader_fills_several_networks_on_started(tmp_path):
    from ignite.engine import Engine

    from monai_kd.handlers import PretrainedLoader

    sources = [_net(), _net()]
    paths = [tmp_path / "teacher_a.pt", tmp_path / "teacher_b.pt"]
    for net, path in zip(sources, paths):
        torch.save({"model": net.state_dict()}, path)
    targets = [_net(), _net()]
    engine = Engine(lambda e, b: None)
    engine.state.device = "cpu"
    PretrainedLoader(targets, paths)(engine)
    for src, dst in zip(sources, targets):
        assert all(torch.equal(a, b) for a, b in zip(src.state_dict().values(), dst.state_dict().values()))
    with pytest.raises(ValueError, match="2 networks but 1 checkpoints"):
        PretrainedLoader(targets, paths[:1])
    with pytest.raises(FileNotFoundError, match="teacher_c.pt"):
        PretrainedLoader(targets, [paths[0], tmp_path / "teacher_c.pt"])(engine)
