"""The uniform mixture of classifiers: its softmax is the mean of theirs (hand-worked), and members are chosen by name."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from monai_kd.networks import MeanProbabilities, member_name, select_member


class Fixed(nn.Module):
    def __init__(self, logits: list[float]) -> None:
        super().__init__()
        self.logits = torch.tensor([logits])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits.expand(x.shape[0], -1)


def test_softmax_of_the_mixture_is_the_mean_probability():
    # teacher a: p = (0.5, 0.5); teacher b: logits (ln 3, 0) -> p = (0.75, 0.25); mixture (0.625, 0.375)
    mixture = MeanProbabilities([Fixed([0.0, 0.0]), Fixed([math.log(3.0), 0.0])])
    out = mixture(torch.zeros(2, 1, 4, 4))
    assert out.shape == (2, 2)
    torch.testing.assert_close(torch.softmax(out, 1), torch.tensor([[0.625, 0.375]] * 2))
    # NLL of label 1 under the mixture: -ln 0.375, not the mean of the members' NLLs (-(ln 0.5 + ln 0.25) / 2)
    nll = nn.functional.nll_loss(torch.log_softmax(out, 1), torch.tensor([1, 1]))
    assert nll.item() == pytest.approx(-math.log(0.375))


def test_members_are_chosen_by_name_or_mixed():
    teachers = nn.ModuleDict({"a": Fixed([0.0, 0.0]), "b": Fixed([1.0, 0.0])})
    assert select_member(teachers) is teachers and select_member(teachers, "b") is teachers["b"]
    mixed = select_member(teachers, ["a", "b"])
    assert isinstance(mixed, MeanProbabilities) and list(mixed.networks) == [teachers["a"], teachers["b"]]
    assert member_name(["a", "b"], "x/teachers.pt") == "mean(a,b)"
    assert member_name("a", "x/teachers.pt") == "a" and member_name(None, "x/teachers.pt") == "teachers"
    with pytest.raises(ValueError):
        MeanProbabilities([])
