"""Deep mutual learning (Zhang et al. 2018) between peer networks."""

from __future__ import annotations

from monai_kd.losses.logit_kd import KDLoss


class MutualLearningLoss(KDLoss):
    """KL term a peer adds in deep mutual learning: ``tau^2 * KL(p_other || p_self)``.

    It is :class:`KDLoss` with the other peer in the teacher's place (its output is detached), and the
    DML default temperature of 1. Calling it once per peer with the roles swapped gives each peer its
    own mimicry gradient. Dense outputs are handled per pixel/voxel.

    Args:
        temperature: softening temperature (DML uses 1).
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.
    """

    def __init__(self, temperature: float = 1.0, reduction: str = "mean") -> None:
        super().__init__(temperature=temperature, reduction=reduction)
