from __future__ import annotations

import pytest
import torch
from monai.engines import SupervisedEvaluator
from torch import nn

from monai_kd.inferers.ensemble import (
    StudentEnsembleInferer,
    ensemble,
    max_probability_ensemble,
    mean_probability_ensemble,
    union_ensemble,
)


class _Constant(nn.Module):
    """Returns fixed logits for every input (batch size taken from the input)."""

    def __init__(self, logits: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("logits", logits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits.expand(x.shape[0], *self.logits.shape)


def _mask_logits(mask: torch.Tensor) -> torch.Tensor:
    """Two-class logits ``(B, 2, H, W)`` whose argmax is ``mask``."""
    fg = mask.float() * 4.0 - 2.0
    return torch.stack([-fg, fg], dim=1)


def test_union_of_two_masks_is_their_logical_or():
    yy, xx = torch.meshgrid(torch.arange(8), torch.arange(8), indexing="ij")
    left, top = (xx < 3).unsqueeze(0), (yy < 2).unsqueeze(0)  # two overlapping rectangles, batch of 1
    ring = ((xx - 5) ** 2 + (yy - 5) ** 2 <= 4).unsqueeze(0)
    for a, b in ((left, top), (top, ring), (left, torch.zeros_like(left))):
        out = union_ensemble([_mask_logits(a), _mask_logits(b)])
        assert torch.equal(out[:, 1].bool(), a | b)
        assert torch.equal(out.sum(dim=1), torch.ones_like(out[:, 0]))  # one-hot
    probs = [torch.softmax(_mask_logits(m), dim=1) for m in (left, top)]
    assert torch.equal(union_ensemble(probs, softmax=False)[:, 1].bool(), left | top)


def test_union_with_several_classes_keeps_the_claimed_class_with_highest_mean_probability():
    # one voxel, three classes: student 1 says class 1 (p=0.5), student 2 says class 2 (p=0.9)
    p1 = torch.tensor([0.2, 0.5, 0.3]).reshape(1, 3, 1, 1)
    p2 = torch.tensor([0.05, 0.05, 0.9]).reshape(1, 3, 1, 1)
    out = union_ensemble([p1, p2], softmax=False)
    assert out.flatten().tolist() == [0.0, 0.0, 1.0]  # mean p(class 2) = 0.6 > mean p(class 1) = 0.275
    background = torch.tensor([0.8, 0.1, 0.1]).reshape(1, 3, 1, 1)
    assert union_ensemble([background, p1], softmax=False).flatten().tolist() == [0.0, 1.0, 0.0]


def test_max_probability_ensemble_on_a_hand_computed_case():
    p1 = torch.tensor([[0.7, 0.2, 0.1]])
    p2 = torch.tensor([[0.3, 0.6, 0.1]])
    # per-class max (0.7, 0.6, 0.1), sum 1.4 -> (1/2, 3/7, 1/14)
    expected = torch.tensor([[0.5, 3 / 7, 1 / 14]])
    assert torch.allclose(max_probability_ensemble([p1, p2], softmax=False), expected)
    assert torch.allclose(max_probability_ensemble([p1.log(), p2.log()]), expected)  # logits input
    assert torch.allclose(mean_probability_ensemble([p1, p2], softmax=False), torch.tensor([[0.5, 0.4, 0.1]]))
    # decollated items: class axis 0
    assert torch.allclose(ensemble([p1[0], p2[0]], mode="max", softmax=False, dim=0), expected[0])
    # stacked at dim 0
    assert torch.allclose(ensemble(torch.stack([p1, p2]), mode="max", softmax=False), expected)


def test_inferer_takes_members_from_constructor_or_call():
    p1, p2 = torch.tensor([0.7, 0.2, 0.1]), torch.tensor([0.3, 0.6, 0.1])
    students = nn.ModuleDict({"s1": _Constant(p1.log()), "s2": _Constant(p2.log())})
    x = torch.zeros(2, 1, 4, 4)
    expected = torch.tensor([0.5, 3 / 7, 1 / 14]).expand(2, 3)
    assert torch.allclose(StudentEnsembleInferer(list(students.values()), mode="max")(x), expected)
    assert torch.allclose(StudentEnsembleInferer(mode="max")(x, students), expected)
    assert torch.allclose(StudentEnsembleInferer({"a": students["s1"]}, mode="mean")(x, None), p1.expand(2, 3))
    with pytest.raises(ValueError, match="mode"):
        StudentEnsembleInferer(mode="vote")
    with pytest.raises(TypeError, match="networks"):
        StudentEnsembleInferer(mode="max")(x)


def test_inferer_in_a_monai_evaluator():
    # wiring only: an evaluator with the students as its network and the ensemble as its inferer
    modes = []
    students = nn.ModuleDict({"s1": nn.Conv2d(1, 2, 1), "s2": nn.Conv2d(1, 2, 1)}).train()
    for s in students.values():
        s.register_forward_hook(lambda m, i, o: modes.append(m.training))
    data = [{"image": torch.ones(1, 4, 4), "label": torch.zeros(1, 4, 4)} for _ in range(2)]
    evaluator = SupervisedEvaluator(
        "cpu", torch.utils.data.DataLoader(data, batch_size=2), students, inferer=StudentEnsembleInferer(mode="union")
    )
    evaluator.run()
    pred = evaluator.state.output[0]["pred"]
    assert pred.shape == (2, 4, 4) and torch.equal(pred.sum(dim=0), torch.ones(4, 4))
    assert modes == [False, False]  # the evaluator put every student in eval mode
