"""Gradient reversal layer (Ganin & Lempitsky 2015) and the DANN coefficient schedule."""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["GradientReversal", "dann_coefficient"]


class _ReverseGradient(torch.autograd.Function):
    """Identity in the forward pass; multiplies the incoming gradient by ``-coefficient`` in the backward pass."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, coefficient: float) -> torch.Tensor:  # type: ignore[override]
        ctx.coefficient = coefficient
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor) -> tuple[torch.Tensor, None]:  # type: ignore[override]
        return -ctx.coefficient * grad_output, None


class GradientReversal(nn.Module):
    """Gradient reversal layer: ``forward(x) = x``, ``d forward / dx = -coefficient``.

    Placed between a feature extractor and a domain classifier, it lets the classifier minimise its loss while
    the feature extractor maximises it (domain-adversarial training, DANN). ``coefficient`` is a plain attribute,
    so a trainer can change it every iteration (see :func:`dann_coefficient` and
    :class:`monai_kd.engines.domain_adversarial_trainer.DomainAdversarialTrainer`). With ``coefficient = 0`` the
    domain head still trains but the feature extractor gets no gradient from it.

    Args:
        coefficient: scale ``lambda`` of the reversed gradient (>= 0).
    """

    def __init__(self, coefficient: float = 1.0) -> None:
        super().__init__()
        self.coefficient = float(coefficient)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return ``x`` unchanged; its gradient is multiplied by ``-coefficient``."""
        return _ReverseGradient.apply(x, float(self.coefficient))

    def extra_repr(self) -> str:
        return f"coefficient={self.coefficient}"


def dann_coefficient(progress: float, gamma: float = 10.0) -> float:
    """DANN schedule ``2 / (1 + exp(-gamma * p)) - 1`` of the reversal coefficient over training progress ``p``.

    It rises from 0 at ``p = 0`` towards 1 (``0.9999`` at ``p = 1`` for ``gamma = 10``), so the noisy domain
    signal of early training does not disturb the feature extractor.

    Args:
        progress: fraction of training done; clamped to ``[0, 1]``.
        gamma: steepness of the ramp (10 in Ganin & Lempitsky 2015).
    """
    p = min(max(float(progress), 0.0), 1.0)
    return 2.0 / (1.0 + math.exp(-gamma * p)) - 1.0
