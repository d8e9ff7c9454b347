"""Pixel ROC AUC and foreground Dice against hand-worked values; whole-image evaluation on the labels' grid."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.inferers import SlidingWindowInferer
from monai.transforms import Zoomd

from monai_kd.metrics.segmentation import evaluate_segmentation, foreground_dice, pixel_roc_auc


def test_pixel_roc_auc_hand_worked_with_ties():
    # positives 0.35, 0.8; negatives 0.1, 0.4: pairs (0.35>0.1 yes, 0.35>0.4 no, 0.8 > both) -> 3/4
    assert pixel_roc_auc(torch.tensor([0.1, 0.4, 0.35, 0.8]), torch.tensor([0, 0, 1, 1])) == pytest.approx(0.75)
    # a tie between a positive and a negative counts one half
    assert pixel_roc_auc(torch.tensor([0.5, 0.5, 0.9]), torch.tensor([0, 1, 1])) == pytest.approx(0.75)
    assert np.isnan(pixel_roc_auc(torch.ones(3), torch.ones(3)))


def test_pixel_roc_auc_matches_monai_on_random_scores():
    from monai.metrics import compute_roc_auc

    g = torch.Generator().manual_seed(0)
    y = (torch.rand(500, generator=g) > 0.7).long()
    s = torch.round(torch.rand(500, generator=g) * 20) / 20 + 0.3 * y  # many ties
    assert pixel_roc_auc(s, y) == pytest.approx(float(compute_roc_auc(s, y)), abs=1e-9)


def test_foreground_dice_hand_worked():
    p = torch.tensor([1, 1, 0, 0])
    t = torch.tensor([1, 0, 1, 0])
    assert foreground_dice(p, t) == pytest.approx(0.5)  # 2*1 / (2+2)
    assert foreground_dice(torch.zeros(4), torch.zeros(4)) == 1.0


class _Oracle(torch.nn.Module):
    """Predicts foreground where the (normalised) image is bright: right on a bright-vessel image."""

    def forward(self, x):
        return torch.cat([-x, x], dim=1) * 10


def test_evaluate_segmentation_right_and_wrong_network_on_original_grid():
    image = np.zeros((1, 40, 30), np.float32)
    image[0, 10:30, 12:18] = 1.0
    label = (image > 0).astype(np.uint8)
    fov = np.ones_like(label)
    fov[0, :, :6] = 0
    items = [{"image": image - 0.5, "label": label, "fov": fov}]
    preprocess = Zoomd("image", zoom=0.5, mode="area", keep_size=False)
    inferer = SlidingWindowInferer(roi_size=(8, 8), sw_batch_size=4)
    right = evaluate_segmentation(_Oracle(), items, preprocess, inferer)
    assert right["dice"] > 0.9 and right["auc"] > 0.99
    wrong = evaluate_segmentation(_Oracle(), [{**items[0], "image": 0.5 - image}], preprocess, inferer)  # inverted
    assert wrong["dice"] < 0.1 and wrong["auc"] < 0.01
