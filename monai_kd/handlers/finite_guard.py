# Copyright (c) MONAI KD contributors.
# Licensed under the Apache License, Version 2.0.
"""Stop training at the first non-finite value, saying where it came from."""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import torch
from monai.engines.utils import IterationEvents
from monai.utils import optional_import
from monai.utils.enums import CommonKeys as Keys

if TYPE_CHECKING:
    from ignite.engine import Engine, Events
else:
    Engine, _ = optional_import("ignite.engine", name="Engine")
    Events, _ = optional_import("ignite.engine", name="Events")

__all__ = ["NonFiniteError", "NonFiniteGuard", "nan_safe_best_metric"]

TEACHER_PRED = "teacher_pred"
LOSS_TERM_PREFIX = "loss_"


class NonFiniteError(ValueError):
    """Training produced a NaN or infinite value; the message names the stage, epoch, iteration and the culprit."""


def _finite(value: Any) -> bool:
    if isinstance(value, torch.Tensor):
        return bool(torch.isfinite(value.detach()).all())
    if isinstance(value, (int, float)):
        return math.isfinite(value)
    return True


def _source(inputs: Any) -> str:
    """File names of a MONAI ``MetaTensor`` batch, for messages (empty when unknown)."""
    names = getattr(inputs, "meta", {}).get("filename_or_obj") if hasattr(inputs, "meta") else None
    if isinstance(names, (list, tuple)):
        names = [os.fspath(n) for n in names if isinstance(n, (str, os.PathLike))]
        return f" (batch files: {', '.join(names[:3])}{' ...' if len(names) > 3 else ''})" if names else ""
    return f" (file: {names})" if isinstance(names, (str, os.PathLike)) else ""


class NonFiniteGuard:
    """Raise :class:`NonFiniteError` as soon as a batch, a teacher, the student, the loss or the weights go non-finite.

    Checks, in the order a fault propagates: the input batch and every teacher's output (``FORWARD_COMPLETED``;
    a NaN teacher output is the teacher's fault, reported as such), the student's output, the loss and each of its
    named terms (``loss_<name>``, ``LOSS_COMPLETED``, before ``backward`` so no weight is updated from it), and the
    trained weights at every epoch end (before a :class:`~monai_kd.handlers.TrainingCheckpoint` saves them; attach
    this guard first). The last good checkpoint is therefore never overwritten with non-finite weights.

    Before the first iteration (``STARTED``, after the teachers' weights are loaded) the frozen teachers'
    (``engine.teachers``) weights are checked, so a teacher checkpoint holding a NaN weight is named at once.

    Args:
        stage: the stage's name in messages (e.g. ``teacher``).
        checkpoint: the last good checkpoint, named in the message (optional).
        teacher_files: the teachers' checkpoint files, one per teacher, named in the messages (optional).
    """

    def __init__(
        self,
        stage: str = "training",
        checkpoint: str | os.PathLike | None = None,
        teacher_files: list[str | os.PathLike] | None = None,
    ) -> None:
        self.stage = stage
        self.checkpoint = checkpoint
        self.teacher_files = [os.fspath(f) for f in teacher_files or []]

    def attach(self, engine: Engine) -> None:
        """Check teachers at ``STARTED``, outputs at ``FORWARD_COMPLETED``, the loss at ``LOSS_COMPLETED`` and the
        weights at epoch end."""
        engine.add_event_handler(Events.STARTED, self.check_teachers)
        engine.add_event_handler(IterationEvents.FORWARD_COMPLETED, self.check_outputs)
        engine.add_event_handler(IterationEvents.LOSS_COMPLETED, self.check_loss)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self.check_weights)

    def _fail(self, engine: Engine, what: str) -> None:
        kept = ""
        if self.checkpoint is not None:
            kept = (
                f"; the last good checkpoint is kept: '{self.checkpoint}'"
                if os.path.isfile(self.checkpoint)
                else "; no epoch of this stage had completed, so there is no checkpoint to keep"
            )
        when = (
            f"epoch {engine.state.epoch}, iteration {engine.state.iteration}"
            if engine.state.iteration
            else f"before epoch {engine.state.epoch + 1}"
        )
        raise NonFiniteError(f"stage '{self.stage}', {when}: {what}; training stopped{kept}.")

    def _teacher(self, k: int) -> str:
        return f"teacher {k}" + (f" ('{self.teacher_files[k]}')" if k < len(self.teacher_files) else "")

    def check_teachers(self, engine: Engine) -> None:
        """Every frozen teacher's weights, once they are loaded."""
        for k, teacher in enumerate(getattr(engine, "teachers", None) or []):
            bad = [n for n, p in teacher.state_dict().items() if p.is_floating_point() and not _finite(p)]
            if bad:
                self._fail(
                    engine,
                    f"{self._teacher(k)} has {len(bad)} NaN or infinite weight tensor(s) (first: {bad[0]}): the"
                    " teacher's fault; retrain or restore that teacher",
                )

    def check_outputs(self, engine: Engine) -> None:
        """The batch, every teacher's output, then the student's output."""
        output: Mapping = engine.state.output or {}
        image = output.get(Keys.IMAGE)
        if isinstance(image, torch.Tensor) and not _finite(image):
            self._fail(engine, f"the input images hold NaN or infinite values{_source(image)}; fix the data")
        teachers = output.get(TEACHER_PRED)
        if isinstance(teachers, torch.Tensor):
            for k in range(teachers.shape[1]):
                if not _finite(teachers[:, k]):
                    self._fail(
                        engine,
                        f"{self._teacher(k)} output is NaN or infinite on finite inputs: the teacher's fault, not"
                        " the student's (check the teacher's weights)",
                    )
        pred = output.get(Keys.PRED)
        if pred is not None and not _pred_finite(pred):
            self._fail(engine, "the student's output is NaN or infinite (its weights diverged: lower learning_rate)")

    def check_loss(self, engine: Engine) -> None:
        """The loss, naming each non-finite term."""
        output: Mapping = engine.state.output or {}
        loss = output.get(Keys.LOSS)
        if loss is None or _finite(loss):
            return
        terms = [k[len(LOSS_TERM_PREFIX):] for k, v in output.items() if k.startswith(LOSS_TERM_PREFIX) and not _finite(v)]
        named = f" in the term(s) {', '.join(terms)}" if terms else ""
        value = float(loss.detach().float().mean()) if isinstance(loss, torch.Tensor) else loss
        self._fail(engine, f"the loss is {value}{named} (learning rate too high, or bad labels / inputs)")

    def check_weights(self, engine: Engine) -> None:
        """Every parameter of the trained network."""
        bad = [n for n, p in engine.network.named_parameters() if not _finite(p)]
        if bad:
            self._fail(engine, f"{len(bad)} weight tensors are NaN or infinite (first: {bad[0]})")


def _pred_finite(pred: Any) -> bool:
    if isinstance(pred, Mapping):
        return all(_pred_finite(v) for v in pred.values())
    if isinstance(pred, (list, tuple)):
        return all(_pred_finite(v) for v in pred)
    return _finite(pred)


class _NanSafeComparison:
    """``metric_cmp_fn`` that never takes a NaN (or an infinite) key metric for a new best."""

    def __init__(self, compare: Any, name: str) -> None:
        self.compare = compare
        self.name = name

    def __call__(self, current: Any, best: Any) -> bool:
        value = float(current) if isinstance(current, (int, float)) or getattr(current, "numel", lambda: 0)() == 1 else None
        if value is not None and not math.isfinite(value):
            logging.getLogger("monai_kd.guard").warning(
                "%s: the key metric is %s (a validation split with a single class, or a diverged network): not taken"
                " as a best", self.name, value,
            )
            return False
        return bool(self.compare(current, best))


def nan_safe_best_metric(evaluator: Any) -> None:
    """Make ``evaluator`` never report a NaN key metric (e.g. ``val_auc`` of a single-class split) as a new best.

    MONAI takes the first validation's key metric as the best whatever its value, and no later value beats a NaN
    best (``x > nan`` is false). This starts the comparison from ``-inf`` instead (``best_metric_epoch`` 0 means
    no best yet) and makes the evaluator's ``metric_cmp_fn`` refuse non-finite values.

    Args:
        evaluator: a MONAI ``Evaluator`` (e.g. the validator of a ``ValidationHandler``).
    """
    if isinstance(getattr(evaluator, "metric_cmp_fn", None), _NanSafeComparison):
        return
    evaluator.metric_cmp_fn = _NanSafeComparison(evaluator.metric_cmp_fn, type(evaluator).__name__)
    state = evaluator.state
    if getattr(state, "best_metric_epoch", -1) == -1:
        state.best_metric, state.best_metric_epoch = -math.inf, 0
