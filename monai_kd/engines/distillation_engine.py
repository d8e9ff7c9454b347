"""The one distillation engine: MONAI's ``SupervisedTrainer`` with a pluggable step object.

MONAI lets a user swap the whole iteration with ``SupervisedTrainer(iteration_update=...)``; torchdistill
registers named forward and loss functions. :class:`DistillationEngine` sits between the two: the engine
owns what every distillation method shares (batch preparation, frozen teachers, feature taps, the
``image``/``label``/``pred``/``teacher_pred`` output keys, ``FORWARD_COMPLETED``, loss-term recording, the
optimisation step with AMP and MONAI's events, the guards), and a :class:`TrainingStep` says what a method
computes through named hooks that all receive one :class:`StepContext`:

=====================  ===========================================================================================
hook                   called / default
=====================  ===========================================================================================
``prepare(ctx)``       after the batch is on the device: draw extra batches, set schedules. Default: nothing.
``teacher_outputs``    ``(ctx)`` fills ``ctx.teacher_outputs`` / ``ctx.teacher_features``. Default: every frozen
                       teacher on ``ctx.inputs`` (eval mode, no gradients, tapped layers).
``before_step(ctx)``   after the teachers, before the real step: extra forward passes and optimizer steps (MMKD's
                       virtual and meta steps). Default: nothing.
``student_forward``    ``(ctx)`` the real student pass: sets ``ctx.pred`` and ``ctx.student_features``. Default:
                       ``inferer(inputs, network)`` with the student's tapped layers captured.
``student_loss(ctx)``  returns the loss to back-propagate. Default: ``loss_function(pred, labels,
                       teacher_outputs, student_features, teacher_features)``.
``after_backward``     ``(ctx)`` after ``loss.backward()``, before ``optimizer.step()`` (gradient surgery,
                       clipping). Default: nothing.
``after_step(ctx)``    after the optimizer step. Default: nothing.
=====================  ===========================================================================================

A method is then a :class:`TrainingStep` subclass overriding one or two hooks (see
:class:`monai_kd.engines.meta_step.MetaWeightedStep` for MMKD), not a copy of the trainer. Extra forward passes
of the student must run inside :meth:`DistillationEngine.capture_student` so they record features into their own
dict and never overwrite the real pass's (``ctx.student_features``); a pass that must not touch BatchNorm
statistics uses :func:`torch.func.functional_call` with cloned buffers (see ``meta_step``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from monai.engines import SupervisedTrainer
from monai.engines.utils import IterationEvents
from monai.utils.enums import CommonKeys as Keys
from torch import nn

from monai_kd.engines.steps import optimisation_step, prepare_inputs
from monai_kd.networks.feature_tap import FeatureTap
from monai_kd.networks.wrappers import unwrap_module

__all__ = [
    "LOSS_TERM_PREFIX",
    "TEACHER_PRED",
    "TEACHER_WEIGHTS",
    "DistillationEngine",
    "StepContext",
    "TrainingStep",
    "check_class_counts",
    "record_loss_terms",
]

TEACHER_PRED = "teacher_pred"
TEACHER_WEIGHTS = "teacher_weights"
LOSS_TERM_PREFIX = "loss_"


@dataclass
class StepContext:
    """Everything one iteration has computed so far, handed to every hook of a :class:`TrainingStep`.

    Attributes:
        engine: the running :class:`DistillationEngine`.
        inputs: the batch's images on the device (after ``prepare_batch``).
        targets: the batch's labels.
        args: extra positional network arguments from ``prepare_batch``.
        kwargs: extra keyword network arguments from ``prepare_batch``.
        teacher_outputs: one output per frozen teacher, rows aligned with ``inputs``.
        teacher_features: tapped teacher features, one ``{layer: tensor}`` per teacher (``[]`` when none tapped).
        pred: the student's output of the real pass.
        student_features: the student's tapped features of the real pass, ``{layer: tensor}``.
        extra: free slots for a method's own intermediate values (e.g. unlabelled batches, other networks).
    """

    engine: DistillationEngine
    inputs: Any
    targets: Any
    args: tuple = ()
    kwargs: dict = field(default_factory=dict)
    teacher_outputs: list[torch.Tensor] = field(default_factory=list)
    teacher_features: list[dict[str, torch.Tensor]] = field(default_factory=list)
    pred: torch.Tensor | None = None
    student_features: dict[str, torch.Tensor] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def output(self) -> dict:
        """``engine.state.output`` of this iteration (write extra floats / tensors to log here)."""
        return self.engine.state.output


class TrainingStep:
    """Named hooks of one training iteration; the defaults are plain multi-teacher distillation.

    Subclass and override hooks to add a method; pass an instance as ``step=`` to
    :class:`monai_kd.engines.DistillationTrainer` (or any :class:`DistillationEngine`). A step may keep state
    (extra loaders, a meta optimizer); :meth:`attach` is called once with the engine at construction.
    """

    def attach(self, engine: DistillationEngine) -> None:
        """Called once when the engine is built; check the configuration here. Default: nothing."""

    def prepare(self, ctx: StepContext) -> None:
        """Draw extra batches, set schedules (before any forward pass). Default: nothing."""

    def teacher_outputs(self, ctx: StepContext) -> None:
        """Fill ``ctx.teacher_outputs`` and ``ctx.teacher_features``. Default: frozen teachers on ``ctx.inputs``."""
        ctx.teacher_outputs, ctx.teacher_features = ctx.engine.teacher_forward(ctx.inputs, *ctx.args, **ctx.kwargs)

    def before_step(self, ctx: StepContext) -> None:
        """Extra forward passes / optimizer steps before the real step (virtual and meta steps). Default: nothing."""

    def student_forward(self, ctx: StepContext) -> None:
        """The real student pass: set ``ctx.pred`` and ``ctx.student_features``."""
        engine = ctx.engine
        with engine.capture_student() as features:
            ctx.pred = engine.inferer(ctx.inputs, engine.network, *ctx.args, **ctx.kwargs)
        ctx.student_features = features

    def student_loss(self, ctx: StepContext) -> torch.Tensor:
        """The loss of the real step. Default: the distillation loss call of :class:`DistillationTrainer`."""
        return ctx.engine.loss_function(
            ctx.pred, ctx.targets, ctx.teacher_outputs, ctx.student_features, ctx.teacher_features
        )

    def after_backward(self, ctx: StepContext) -> None:
        """After ``loss.backward()``, before the optimizer step. Default: nothing."""

    def after_step(self, ctx: StepContext) -> None:
        """After the optimizer step. Default: nothing."""


class DistillationEngine(SupervisedTrainer):
    """``SupervisedTrainer`` whose iteration is a :class:`TrainingStep`, with 0..K frozen teachers.

    Each iteration: ``prepare_batch`` -> ``step.prepare`` -> ``step.teacher_outputs`` (``teacher_pred`` is logged,
    stacked at dim 1, when teachers ran) -> ``step.before_step`` -> zero grad -> ``step.student_forward``
    (``pred`` logged, class counts checked against the teachers, ``FORWARD_COMPLETED``) -> ``step.student_loss``
    (``loss`` and the loss's ``last_terms`` as ``loss_<name>`` logged, ``LOSS_COMPLETED``) -> backward
    (``BACKWARD_COMPLETED``) -> ``step.after_backward`` -> optimizer step (``MODEL_COMPLETED``) ->
    ``step.after_step``. MONAI handlers (checkpoints, stats, validation, TensorBoard) work unchanged.

    Args:
        device: device for networks and batches.
        max_epochs: number of epochs.
        train_data_loader: loader of training batches.
        network: the trained network (the student, or a ``ModuleDict`` of students).
        optimizer: optimizer of the real step.
        loss_function: loss object the step uses.
        teachers: frozen teachers (moved to ``device``, eval mode, ``requires_grad_(False)``); may be empty.
        step: the :class:`TrainingStep`; default the plain distillation step.
        student_layers: student layers to tap.
        teacher_layers: teacher layers to tap: one list for every teacher, or one list per teacher.
        kwargs: any other ``monai.engines.SupervisedTrainer`` argument. ``accumulation_steps > 1`` and
            ``compile=True`` are refused (the step owns the optimizer; hooks tap the networks).
    """

    def __init__(
        self,
        device: str | torch.device,
        max_epochs: int,
        train_data_loader: Any,
        network: nn.Module,
        optimizer: torch.optim.Optimizer,
        loss_function: nn.Module,
        teachers: nn.Module | Sequence[nn.Module] = (),
        step: TrainingStep | None = None,
        student_layers: Sequence[str] = (),
        teacher_layers: Sequence[str] | Sequence[Sequence[str]] = (),
        **kwargs: Any,
    ) -> None:
        name = type(self).__name__
        if kwargs.get("accumulation_steps", 1) != 1:
            raise ValueError(f"{name} does not support accumulation_steps > 1; raise the batch size instead.")
        if kwargs.get("compile", False):
            raise ValueError(f"{name} does not support compile=True (forward hooks tap the networks).")
        if step is not None and not isinstance(step, TrainingStep):
            raise TypeError(f"step must be a monai_kd.engines.TrainingStep, got {type(step).__name__}.")
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
        for teacher in teachers:
            teacher.to(self.state.device).eval().requires_grad_(False)
        self.teachers = teachers
        # tap the wrapped module of DistributedDataParallel / DataParallel so layer names stay the same
        self.student_tap = FeatureTap(unwrap_module(network), list(student_layers)) if student_layers else None
        self.teacher_taps = _teacher_taps(teachers, teacher_layers)
        self.step = TrainingStep() if step is None else step
        self.step.attach(self)

    def teacher_forward(self, inputs: torch.Tensor, *args: Any, **kwargs: Any) -> tuple[list[torch.Tensor], list[dict]]:
        """Run every teacher on ``inputs`` (eval mode, no gradients); return outputs and tapped features."""
        outputs = []
        for tap in self.teacher_taps:
            if tap is not None:
                tap.clear()
        with torch.no_grad():
            for teacher in self.teachers:
                teacher.eval()
                outputs.append(self.inferer(inputs, teacher, *args, **kwargs))
        features = [dict(tap.features) if tap is not None else {} for tap in self.teacher_taps]
        for tap in self.teacher_taps:
            if tap is not None:
                tap.clear()
        return outputs, features

    @contextlib.contextmanager
    def capture_student(self) -> Iterator[dict[str, torch.Tensor]]:
        """Record the student's tapped features of the passes run inside into a fresh dict (yielded).

        Any number of student passes (virtual steps, second views) can each run in their own ``capture_student``
        block: none of them overwrites another's record.
        """
        if self.student_tap is None:
            yield {}
            return
        with self.student_tap.capture() as features:
            yield features

    def _iteration(self, engine: DistillationEngine, batchdata: dict[str, torch.Tensor]) -> dict:  # type: ignore[override]
        """One training iteration through ``engine.step``'s hooks."""
        inputs, targets, args, kwargs = prepare_inputs(engine, batchdata)
        engine.state.output = {Keys.IMAGE: inputs, Keys.LABEL: targets}
        ctx = StepContext(engine, inputs, targets, args, kwargs)
        step = engine.step
        step.prepare(ctx)
        step.teacher_outputs(ctx)
        step.before_step(ctx)
        engine.network.train()

        def compute_loss() -> torch.Tensor:
            step.student_forward(ctx)
            if ctx.teacher_outputs:
                check_class_counts(ctx.pred, ctx.teacher_outputs, engine.teachers)
                engine.state.output[TEACHER_PRED] = torch.stack([t.detach() for t in ctx.teacher_outputs], dim=1)
            engine.state.output[Keys.PRED] = ctx.pred
            engine.fire_event(IterationEvents.FORWARD_COMPLETED)
            loss = step.student_loss(ctx)
            record_loss_terms(engine, engine.loss_function)
            return loss

        optimisation_step(engine, compute_loss, after_backward=lambda: step.after_backward(ctx))
        step.after_step(ctx)
        return engine.state.output


def _teacher_taps(
    teachers: Sequence[nn.Module], layers: Sequence[str] | Sequence[Sequence[str]]
) -> list[FeatureTap | None]:
    """One detached tap per teacher (``None`` for a teacher without layers); ``[]`` when nothing is tapped."""
    layers = list(layers)
    if not layers:
        return []
    if all(isinstance(x, str) for x in layers):
        per_teacher = [list(layers)] * len(teachers)
    else:
        per_teacher = [list(x) for x in layers]
        if len(per_teacher) != len(teachers):
            raise ValueError(f"teacher_layers has {len(per_teacher)} lists for {len(teachers)} teachers.")
        if not any(per_teacher):
            return []
    return [FeatureTap(t, ls, detach=True) if ls else None for t, ls in zip(teachers, per_teacher)]


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
    terms: Mapping[str, float] = getattr(loss_function, "last_terms", {})
    for name, value in terms.items():
        engine.state.output[LOSS_TERM_PREFIX + name] = value
    weights = getattr(getattr(loss_function, "kd_loss", None), "last_weights", None)
    if weights is not None and "kd" in terms:  # weights of this iteration only
        engine.state.output[TEACHER_WEIGHTS] = weights
