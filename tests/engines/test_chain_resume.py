"""A WeCKD chain killed inside a link resumes at that link's last completed epoch (real BreastMNIST images)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import Dataset
from monai.networks.nets import ResNet
from torch import nn

from monai_kd.engines import DistillationChain
from monai_kd.handlers import TrainingCheckpoint
from monai_kd.losses import DistillationLoss, MultiTeacherKDLoss


class _Crash(Exception):
    pass


def _net() -> ResNet:
    return ResNet("basic", [1, 1, 1, 1], [4] * 4, spatial_dims=2, n_input_channels=1, num_classes=2)


@pytest.fixture(scope="module")
def links(data_dir):
    archive = np.load(data_dir / "breastmnist" / "breastmnist.npz")
    images, labels = archive["train_images"][:48], archive["train_labels"][:48].reshape(-1)
    items = [{"image": (im[None] / 255.0).astype(np.float32), "label": np.int64(y), "index": i}
             for i, (im, y) in enumerate(zip(images, labels))]
    return [Dataset(items[:24]), Dataset(items[24:])]


def _chain(links, folder) -> DistillationChain:
    loss = DistillationLoss(nn.CrossEntropyLoss(), MultiTeacherKDLoss(2.0), task_weight=0.5, kd_weight=0.5)
    return DistillationChain(device="cpu", max_epochs=3, networks=_net, datasets=links, loss_function=loss,
                             optimizer=lambda p: torch.optim.AdamW(p, lr=2e-3), ckpt_dir=folder, batch_size=8,
                             progress=False, seed=3)


def test_a_chain_killed_inside_a_link_resumes_at_its_last_epoch(links, tmp_path, monkeypatch):
    _chain(links, tmp_path / "whole").run()
    assert not (tmp_path / "whole" / "resume").exists()  # finished links leave no training checkpoint

    original = TrainingCheckpoint.save
    resumed_from = []

    def save_then_crash(self, engine):
        original(self, engine)
        if self.stage == "link_2" and engine.state.epoch == 2:
            raise _Crash()

    monkeypatch.setattr(TrainingCheckpoint, "save", save_then_crash)
    with pytest.raises(_Crash):
        _chain(links, tmp_path / "broken").run()
    assert [p.name.split("-")[0] for p in (tmp_path / "broken" / "resume").iterdir()] == ["link_2"]
    monkeypatch.setattr(TrainingCheckpoint, "save", original)
    load = TrainingCheckpoint.load

    def spy(self, engine):
        load(self, engine)
        resumed_from.append((self.stage, self.resumed_from))

    monkeypatch.setattr(TrainingCheckpoint, "load", spy)
    _chain(links, tmp_path / "broken").run()
    assert resumed_from == [("link_2", 2)]  # link 1 reused whole, link 2 continued after its epoch 2
    whole, resumed = (torch.load(tmp_path / d / "link_2.pt", weights_only=True) for d in ("whole", "broken"))
    assert all(torch.equal(whole[k], resumed[k]) for k in whole)
