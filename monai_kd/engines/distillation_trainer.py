"""Trainer that distils one or more frozen teachers into a student, built on MONAI's ``SupervisedTrainer``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from monai.engines import SupervisedTrainer
from monai.engines.utils import IterationEvents
from monai.utils.enums import CommonKeys as Keys
from torch import nn

from monai_kd.engines.steps import optimisation_step, prepare_inputs
from monai_kd.networks.feature_tap import FeatureTap
from monai_kd.networks.wrappers import unwrap_module

TEACHER_PRED = "teacher_pred"
TEACHER_WEIGHTS = "teacher_weights"
LOSS_TERM_PREFIX = "loss_"


class DistillationTrainer(SupervisedTrainer):
    """Distil 1..K frozen teachers into ``network`` (the student).

    Each iteration: teachers run in eval mode under ``torch.no_grad`` (their parameters are frozen at
    construction), the student runs in train mode, and ``loss_function`` — typically
    :class:`monai_kd.losses.DistillationLoss` — is called as
    ``loss_function(student_pred, labels, teacher_outputs, student_features, teacher_features)``. MONAI's
    iteration events (``FORWARD_COMPLETED``, ``LOSS_COMPLETED``, ``BACKWARD_COMPLETED``, ``MODEL_COMPLETED``)
    fire as in ``SupervisedTrainer``, so checkpoint, stats, validation and TensorBoard handlers work unchanged.

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
        teacher_layers: teacher layers to tap (on every teacher); default ``loss_function.teacher_layers``.
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
        teacher_layers: Sequence[str] | None = None,
        **kwargs: Any,
    ) -> None:
        if kwargs.get("accumulation_steps", 1) != 1:
            raise ValueError("DistillationTrainer does not support accumulation_steps > 1; raise the batch size instead.")
        if kwargs.get("compile", False):
            raise ValueError("DistillationTrainer does not support compile=True (forward hooks tap the student).")
        super().__init__(
            device=device,
            max_epochs=max_epochs,
            train_data_loader=train_data_loader,
            network=network,
            optimizer=optimizer,
            loss_function=loss_function,
            **kwargs,
        )
        teachers = [teachers] if isinstance(teachers, nn.Module) else list(teachers)
        if not teachers:
            raise ValueError("DistillationTrainer needs at least one teacher.")
        for teacher in teachers:
            teacher.to(self.state.device).eval().requires_grad_(False)
        self.teachers = teachers
        s_layers = student_layers if student_layers is not None else getattr(loss_function, "student_layers", [])
        t_layers = teacher_layers if teacher_layers is not None else getattr(loss_function, "teacher_layers", [])
        # tap the wrapped module of DistributedDataParallel / DataParallel so layer names stay the same
        self.student_tap = FeatureTap(unwrap_module(network), s_layers) if s_layers else None
        self.teacher_taps = [FeatureTap(t, t_layers, detach=True) for t in teachers] if t_layers else []

    def teacher_forward(self, inputs: torch.Tensor, *args: Any, **kwargs: Any) -> tuple[list[torch.Tensor], list[dict]]:
        """Run every teacher on ``inputs`` (eval mode, no gradients); return outputs and tapped features."""
        outputs = []
        with torch.no_grad():
            for teacher in self.teachers:
                teacher.eval()
                outputs.append(self.inferer(inputs, teacher, *args, **kwargs))
        features = [dict(tap.features) for tap in self.teacher_taps]
        for tap in self.teacher_taps:
            tap.clear()
        return outputs, features

    def _iteration(self, engine: DistillationTrainer, batchdata: dict[str, torch.Tensor]) -> dict:  # type: ignore[override]
        """One distillation step: teachers forward, student forward, loss, backward, optimizer step."""
        inputs, targets, args, kwargs = prepare_inputs(engine, batchdata)
        engine.state.output = {Keys.IMAGE: inputs, Keys.LABEL: targets}
        teacher_outputs, teacher_features = engine.teacher_forward(inputs, *args, **kwargs)
        engine.network.train()

        def compute_loss() -> torch.Tensor:
            if engine.student_tap is not None:
                engine.student_tap.clear()
            pred = engine.inferer(inputs, engine.network, *args, **kwargs)
            check_class_counts(pred, teacher_outputs, engine.teachers)
            engine.state.output[Keys.PRED] = pred
            engine.state.output[TEACHER_PRED] = torch.stack([t.detach() for t in teacher_outputs], dim=1)
            engine.fire_event(IterationEvents.FORWARD_COMPLETED)
            student_features = engine.student_tap.features if engine.student_tap is not None else {}
            loss = engine.loss_function(pred, targets, teacher_outputs, student_features, teacher_features)
            record_loss_terms(engine, engine.loss_function)
            return loss

        optimisation_step(engine, compute_loss)
        return engine.state.output


def check_class_counts(
    pred: torch.Tensor, teacher_outputs: Sequence[torch.Tensor], teachers: Sequence[nn.Module]
) -> None:
    """Raise a clear error when a teacher's output has another class (channel) count than the student's.

    Args:
        pred: student output ``(B, C, ...)``.
        teacher_outputs: one output per teacher.
        teachers: the teachers, only used in the error message.

    Raises:
        ValueError: a teacher's class count differs from the student's.
    """
    for k, (out, teacher) in enumerate(zip(teacher_outputs, teachers)):
        if out.dim() > 1 and pred.dim() > 1 and out.shape[1] != pred.shape[1]:
            raise ValueError(
                f"teacher {k} ({type(unwrap_module(teacher)).__name__}) predicts {out.shape[1]} classes but the student"
                f" predicts {pred.shape[1]}: every teacher must predict the student's classes"
                " (check num_classes / out_channels of the teachers and the student)."
            )


def record_loss_terms(engine: Any, loss_function: nn.Module) -> None:
    """Copy a loss's ``last_terms`` (as ``loss_<name>`` floats) and its KD term's ``last_weights`` into the output."""
    terms = getattr(loss_function, "last_terms", {})
    for name, value in terms.items():
        engine.state.output[LOSS_TERM_PREFIX + name] = value
    weights = getattr(getattr(loss_function, "kd_loss", None), "last_weights", None)
    if weights is not None and "kd" in terms:  # weights of this iteration only
        engine.state.output[TEACHER_WEIGHTS] = weights
