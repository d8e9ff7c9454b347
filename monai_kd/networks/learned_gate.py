"""Learned per-instance teacher weighting: a small gate network trained with the student."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from monai_kd.networks.teacher_weighting import TeacherWeighting

__all__ = ["LearnedGateWeighting", "pooled_probs"]


class LearnedGateWeighting(TeacherWeighting):
    """Gate network giving softmax weights over K teachers from their (detached) predictions.

    The input of the gate for instance ``b`` is the concatenation of the K teachers' class probabilities
    ``softmax(z_k(b))`` (averaged over pixels/voxels for dense ``(K, B, C, *spatial)`` outputs) and, with
    ``use_student``, the student's probabilities, all detached: the gate learns *which* teacher to trust for
    which input without back-propagating into teachers or student. A two-layer MLP maps it to K scores and a
    softmax over teachers gives ``w(b)``, non-negative and summing to one.

    Its training signal comes from the labels: :class:`monai_kd.losses.multi_teacher.MultiTeacherKDLoss` (with its
    default ``weighting_signal="label"``) adds the cross-entropy of the fused teacher prediction
    ``sum_k w_k p_k`` on the labelled rows, so weight moves to the teachers that are right on inputs like these, and
    the gate applies what it learned to unlabelled rows. Trained only through the KD term it weights, a gate would
    instead learn to trust whichever teacher the student already agrees with. Include ``loss.parameters()`` in the
    student's optimizer. ``features`` and ``labels`` are accepted for interface compatibility and ignored by the
    forward pass.

    Args:
        num_teachers: K.
        num_classes: C, the class (channel) count of the teachers' outputs.
        hidden: width of the gate's hidden layer.
        use_student: also feed the student's probabilities to the gate (the call then needs ``student_logits``).
    """

    def __init__(self, num_teachers: int, num_classes: int, hidden: int = 32, use_student: bool = False) -> None:
        super().__init__()
        if num_teachers < 1 or num_classes < 1 or hidden < 1:
            raise ValueError(
                f"num_teachers, num_classes and hidden must be >= 1, got {num_teachers}, {num_classes}, {hidden}."
            )
        self.num_teachers = num_teachers
        self.num_classes = num_classes
        self.use_student = use_student
        in_features = (num_teachers + int(use_student)) * num_classes
        self.gate = nn.Sequential(
            nn.Linear(in_features, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, num_teachers)
        )

    def forward(self, teacher_logits, labels=None, features=None, student_logits=None) -> torch.Tensor:  # noqa: D102
        k, b, c = teacher_logits.shape[:3]
        if (k, c) != (self.num_teachers, self.num_classes):
            raise ValueError(
                f"LearnedGateWeighting was built for {self.num_teachers} teachers x {self.num_classes} classes,"
                f" got {k} x {c}."
            )
        probs = pooled_probs(teacher_logits.detach().flatten(0, 1)).view(k, b, c)
        inputs = [probs.permute(1, 0, 2).reshape(b, k * c)]
        if self.use_student:
            if student_logits is None:
                raise ValueError("LearnedGateWeighting(use_student=True) needs student_logits.")
            inputs.append(pooled_probs(student_logits.detach()))
        return F.softmax(self.gate(torch.cat(inputs, dim=1)), dim=1)


def pooled_probs(logits: torch.Tensor) -> torch.Tensor:
    """Softmax over dim 1 of ``(N, C[, *spatial])`` logits, averaged over spatial positions: ``(N, C)``."""
    probs = F.softmax(logits.float(), dim=1)
    return probs.reshape(*probs.shape[:2], -1).mean(dim=2)
