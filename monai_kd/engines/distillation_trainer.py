"""Trainer that distils one or more frozen teachers into a student: the distillation engine's default step."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from monai_kd.engines.distillation_engine import (
    LOSS_TERM_PREFIX,
    TEACHER_PRED,
    TEACHER_WEIGHTS,
    DistillationEngine,
    TrainingStep,
    check_class_counts,
    record_loss_terms,
)

__all__ = [
    "LOSS_TERM_PREFIX",
    "TEACHER_PRED",
    "TEACHER_WEIGHTS",
    "DistillationTrainer",
    "check_class_counts",
    "record_loss_terms",
]


class DistillationTrainer(DistillationEngine):
    """Distil 1..K frozen teachers into ``network`` (the student).

    Each iteration: teachers run in eval mode under ``torch.no_grad`` (their parameters are frozen at
    construction), the student runs in train mode, and ``loss_function`` — typically
    :class:`monai_kd.losses.DistillationLoss` — is called as
    ``loss_function(student_pred, labels, teacher_outputs, student_features, teacher_features)``. MONAI's
    iteration events (``FORWARD_COMPLETED``, ``LOSS_COMPLETED``, ``BACKWARD_COMPLETED``, ``MODEL_COMPLETED``)
    fire as in ``SupervisedTrainer``, so checkpoint, stats, validation and TensorBoard handlers work unchanged.

    A method that needs more than this (extra passes, virtual or meta steps) gives a ``step``: a
    :class:`monai_kd.engines.TrainingStep` whose hooks replace parts of the iteration (see
    :mod:`monai_kd.engines.distillation_engine`); e.g. MMKD is ``step=MetaWeightedStep(...)``.

    Besides ``image``, ``label``, ``pred`` and ``loss``, ``engine.state.output`` holds ``teacher_pred`` (teacher
    outputs stacked at dim 1: ``(B, K, C, ...)``), one ``loss_<term>`` float per entry of the loss's
    ``last_terms`` (e.g. ``loss_task``, ``loss_kd``, ``loss_feature``) and
    ``teacher_weights`` ``(B, K)`` when the KD term reports per-instance weights.

    Args:
        device: device for student, teachers and batches.
        max_epochs: number of epochs.
        train_data_loader: loader of training batches.
        network: the student.
        optimizer: optimizer over the student's parameters (and the loss's, for connectors / learned weights).
        loss_function: distillation loss with the call signature above.
        teachers: one teacher or a sequence of teachers; they are moved to ``device``, put in eval mode and frozen.
        student_layers: student layers to tap; default ``loss_function.student_layers`` if it has them.
        teacher_layers: teacher layers to tap, the same on every teacher (a list of names) or per teacher (a list
            of lists); default ``loss_function.teacher_layers_per_teacher(K)`` or ``loss_function.teacher_layers``.
        step: the iteration's hooks; default plain distillation (:class:`monai_kd.engines.TrainingStep`).
        kwargs: any other ``monai.engines.SupervisedTrainer`` argument (``epoch_length``, ``prepare_batch``,
            ``inferer``, ``postprocessing``, ``key_train_metric``, ``train_handlers``, ``amp``, ...).
    """

    def __init__(
        self,
        device: str | torch.device,
        max_epochs: int,
        train_data_loader: Any,
        network: nn.Module,
        optimizer: torch.optim.Optimizer,
        loss_function: nn.Module,
        teachers: nn.Module | Sequence[nn.Module],
        student_layers: Sequence[str] | None = None,
        teacher_layers: Sequence[str] | Sequence[Sequence[str]] | None = None,
        step: TrainingStep | None = None,
        **kwargs: Any,
    ) -> None:
        teachers = [teachers] if isinstance(teachers, nn.Module) else list(teachers)
        if not teachers:
            raise ValueError(f"{type(self).__name__} needs at least one teacher.")
        if student_layers is None:
            student_layers = getattr(loss_function, "student_layers", [])
        if teacher_layers is None:
            per_teacher = getattr(loss_function, "teacher_layers_per_teacher", None)
            if callable(per_teacher):
                teacher_layers = per_teacher(len(teachers))
            else:
                teacher_layers = getattr(loss_function, "teacher_layers", [])
        super().__init__(
            device=device,
            max_epochs=max_epochs,
            train_data_loader=train_data_loader,
            network=network,
            optimizer=optimizer,
            loss_function=loss_function,
            teachers=teachers,
            step=step,
            student_layers=student_layers,
            teacher_layers=teacher_layers,
            **kwargs,
        )
