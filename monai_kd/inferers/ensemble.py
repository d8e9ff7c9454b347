"""Ensembles of student networks: max / mean probability (classification), union / mean (segmentation)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from monai.inferers import Inferer, SimpleInferer
from torch import nn

ENSEMBLE_MODES = ("max", "mean", "union")


def _probabilities(outputs: Sequence[torch.Tensor] | torch.Tensor, softmax: bool, dim: int) -> torch.Tensor:
    """Stack the members' outputs at dim 0 (``(K, *shape)``) as float probabilities over the class axis."""
    stacked = outputs if isinstance(outputs, torch.Tensor) else torch.stack([torch.as_tensor(o) for o in outputs])
    if stacked.ndim < 2 or stacked.shape[0] == 0:
        raise ValueError("an ensemble needs at least one member output of shape (B, C, ...).")
    if stacked.shape[dim + 1 if dim >= 0 else dim] < 2:
        raise ValueError("ensembles need at least two classes on the class axis (softmax outputs, not sigmoid).")
    stacked = stacked.float()
    return torch.softmax(stacked, dim=dim + 1 if dim >= 0 else dim) if softmax else stacked


def max_probability_ensemble(
    outputs: Sequence[torch.Tensor] | torch.Tensor, softmax: bool = True, dim: int = 1
) -> torch.Tensor:
    """Classification ensemble of Niyaz et al.: per class, the highest probability across members, renormalised.

    ``p_E(c) = max_k p_k(c) / sum_c' max_k p_k(c')``.

    Args:
        outputs: member outputs of equal shape ``(B, C, ...)``, or one tensor stacking them at dim 0.
        softmax: the outputs are logits (apply softmax over the class axis); ``False`` if already probabilities.
        dim: class axis of each member output (1 for batch-first, 0 for decollated items).
    """
    probs = _probabilities(outputs, softmax, dim).amax(dim=0)
    return probs / probs.sum(dim=dim, keepdim=True).clamp_min(torch.finfo(probs.dtype).tiny)


def mean_probability_ensemble(
    outputs: Sequence[torch.Tensor] | torch.Tensor, softmax: bool = True, dim: int = 1
) -> torch.Tensor:
    """Mean of the members' class probabilities, for classification ``(B, C)`` and segmentation ``(B, C, *spatial)``.

    Args:
        outputs: member outputs of equal shape, or one tensor stacking them at dim 0.
        softmax: the outputs are logits; ``False`` if already probabilities.
        dim: class axis of each member output.
    """
    return _probabilities(outputs, softmax, dim).mean(dim=0)


def union_ensemble(outputs: Sequence[torch.Tensor] | torch.Tensor, softmax: bool = True, dim: int = 1) -> torch.Tensor:
    """Segmentation ensemble of Niyaz et al.: union of the members' foreground masks, as a one-hot tensor.

    Each member's mask is the argmax over classes (class 0 is background). A voxel is foreground when any member
    marks it foreground (logical OR), so for two classes the foreground channel is exactly the union of the masks.
    With several foreground classes, a voxel claimed by members for different classes takes the claimed class with
    the highest mean probability. The result is one-hot, ``float``, with the input shape.

    Args:
        outputs: member outputs ``(B, C, *spatial)``, or one tensor stacking them at dim 0.
        softmax: the outputs are logits (only used to break multi-class ties); ``False`` if probabilities.
        dim: class axis of each member output.
    """
    probs = _probabilities(outputs, softmax, dim)
    cls_dim = dim + 1 if dim >= 0 else dim
    num_classes = probs.shape[cls_dim]
    labels = probs.argmax(dim=cls_dim, keepdim=True)
    claimed = torch.zeros_like(probs).scatter_(cls_dim, labels, 1.0).amax(dim=0)  # per-class OR over members
    fg_claimed = claimed.narrow(dim, 1, num_classes - 1)
    score = torch.where(fg_claimed > 0, probs.mean(dim=0).narrow(dim, 1, num_classes - 1), -1.0)
    label = torch.where(fg_claimed.amax(dim=dim, keepdim=True) > 0, score.argmax(dim=dim, keepdim=True) + 1, 0)
    return torch.zeros_like(claimed).scatter_(dim, label, 1.0)


_ENSEMBLE_FUNCTIONS = {"max": max_probability_ensemble, "mean": mean_probability_ensemble, "union": union_ensemble}


def ensemble(outputs: Sequence[torch.Tensor] | torch.Tensor, mode: str = "mean", softmax: bool = True, dim: int = 1) -> torch.Tensor:
    """Combine member outputs with ``mode`` ``"max"`` / ``"mean"`` (classification) or ``"union"`` / ``"mean"``
    (segmentation); see :func:`max_probability_ensemble`, :func:`mean_probability_ensemble`, :func:`union_ensemble`.
    """
    if mode not in _ENSEMBLE_FUNCTIONS:
        raise ValueError(f'unknown ensemble mode "{mode}"; choose one of {ENSEMBLE_MODES}.')
    return _ENSEMBLE_FUNCTIONS[mode](outputs, softmax=softmax, dim=dim)


class StudentEnsembleInferer(Inferer):
    """Run several networks on the same input and combine their outputs into one prediction.

    ``mode="max"``: per-class maximum probability across the students, renormalised (classification, as in the
    KD+ML paper); ``"union"``: union of the argmax foreground masks as a one-hot tensor (segmentation);
    ``"mean"``: mean probability (both). The output is probability-like (sums to 1 over the class axis), so
    post-processing should not apply softmax again.

    The members are ``networks`` if given, otherwise taken from the ``network`` argument of the call: an
    ``nn.ModuleDict`` / dict / ``nn.ModuleList`` / list of networks, e.g. ``MultiStudentTrainer.network``. Passing
    the students as the evaluator's ``network`` is preferred: the evaluator then puts them all in eval mode, which
    this inferer does not do by itself.

    Args:
        networks: the members, as a sequence or a mapping name -> network; ``None`` to use the call's ``network``.
        mode: ``"max"``, ``"mean"`` or ``"union"``.
        inferer: inferer run on each member (e.g. ``SlidingWindowInferer``); default ``SimpleInferer``.

    Example::

        evaluator = SupervisedEvaluator(device, loader, network=trainer.network,
                                        inferer=StudentEnsembleInferer(mode="union"))
    """

    def __init__(
        self,
        networks: Sequence[nn.Module] | Mapping[str, nn.Module] | None = None,
        mode: str = "mean",
        inferer: Inferer | None = None,
    ) -> None:
        super().__init__()
        if mode not in ENSEMBLE_MODES:
            raise ValueError(f'unknown ensemble mode "{mode}"; choose one of {ENSEMBLE_MODES}.')
        self.networks = None if networks is None else _members(networks)
        self.mode = mode
        self.inferer = SimpleInferer() if inferer is None else inferer

    def __call__(self, inputs: torch.Tensor, network: Any = None, *args: Any, **kwargs: Any) -> torch.Tensor:
        """
        Args:
            inputs: batch ``(B, C_in, *spatial)``.
            network: the members when none were given at construction (otherwise ignored).
            args: positional arguments passed on to every member.
            kwargs: keyword arguments passed on to every member.
        """
        members = self.networks if self.networks is not None else _members(network)
        outputs = [self.inferer(inputs, member, *args, **kwargs) for member in members]
        return ensemble(outputs, self.mode)


def _members(networks: Any) -> list[nn.Module]:
    if isinstance(networks, (Mapping, nn.ModuleDict)):
        members = list(networks.values())
    elif isinstance(networks, (nn.ModuleList, list, tuple)):
        members = list(networks)
    elif isinstance(networks, nn.Module):
        members = [networks]
    else:
        raise TypeError(f"StudentEnsembleInferer needs networks (a dict or list of modules), got {type(networks).__name__}.")
    if not members:
        raise ValueError("StudentEnsembleInferer needs at least one network.")
    return members
