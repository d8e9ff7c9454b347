"""Semi-supervised multi-teacher distillation (EMTKD part 3): labelled CE + KD + FixMatch on unlabelled data."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import nn

from monai_kd.engines.distillation_engine import LOSS_TERM_PREFIX, StepContext, TrainingStep
from monai_kd.engines.distillation_trainer import DistillationTrainer
from monai_kd.engines.steps import BatchCycler, cat_batches, like_input
from monai_kd.losses._functional import fuse_probabilities
from monai_kd.losses.fixmatch import FixMatchLoss

__all__ = ["SemiSupervisedDistillationTrainer", "SemiSupervisedStep"]

PSEUDO_LABEL_RATE = "pseudo_label_rate"
TEACHER_WEIGHTS_UNLABELED = "teacher_weights_unlabeled"
PSEUDO_LABEL_SOURCES = ("teachers", "student")


class SemiSupervisedDistillationTrainer(DistillationTrainer):
    """Distil frozen teachers into a student from labelled **and** unlabelled (target-domain) data.

    Each iteration pairs a labelled batch from ``train_data_loader`` with an unlabelled batch from
    ``unlabeled_data_loader``, a dict holding two views of the same images, ``image_weak`` and ``image_strong``
    (made in the bundle by MONAI transforms, e.g. two ``CopyItemsd`` copies with weak and strong random
    augmentation). The loss is

    ``loss_function(labelled)  +  kd_weight * KD(unlabelled weak)  +  fixmatch_weight * FixMatch(unlabelled)``

    * ``loss_function`` is called exactly as in :class:`DistillationTrainer` on the labelled rows; with
      :class:`monai_kd.losses.distillation.DistillationLoss` that is ``CE + kd_weight * KD + feature terms``.
    * The unlabelled KD term reuses ``loss_function.kd_loss`` (a ``MultiTeacherKDLoss``) and
      ``loss_function.kd_weight`` on the student's and teachers' outputs for the weak view, with labels ``-1``
      passed to the teacher weighting (confidence weighting then uses teacher entropy; a learned gate sees the
      unlabelled rows too). Like the labelled KD it is averaged over its own rows.
    * FixMatch: ``fixmatch_loss`` (default :class:`FixMatchLoss` with threshold 0.95) of the student on the
      strong view, with pseudo-labels from the weak view: with ``pseudo_label_source="teachers"`` the teachers'
      probabilities (temperature 1) fused with the weights the KD weighting gave those rows (uniform when there
      is no unlabelled KD term); with ``"student"`` the student's own weak-view prediction (plain FixMatch).

    The student runs once on the concatenation of the labelled images and the views it needs, the teachers
    once on labelled + weak images, so labelled and unlabelled images must have the same shape.
    ``kd_weight = 0`` or ``fixmatch_weight = 0`` switch the terms off for ablation.

    Unlabelled loader behaviour:

    * ``None``, or a loader that yields no batch: every iteration is exactly a :class:`DistillationTrainer`
      iteration (supervised + KD on the labelled data, no ``pseudo_label_rate`` in the output); a warning is
      logged once.
    * exhausted before ``train_data_loader``: it is restarted (``unlabeled_batches.restarts`` counts restarts);
      epochs are defined by ``train_data_loader``.

    ``engine.state.output`` holds what :class:`DistillationTrainer` writes for the labelled rows (``image``,
    ``label``, ``pred``, ``teacher_pred``, ``loss``, ``loss_<term>``, ``teacher_weights`` ``(B, K)``) plus the
    floats ``loss_kd_unlabeled``, ``loss_fixmatch``, ``pseudo_label_rate`` (accepted fraction of pseudo-labels)
    and ``teacher_weights_unlabeled``: the mean weights over the unlabelled rows, repeated for every labelled
    row (``(B, K)``), so that it survives MONAI's decollation of the output.

    Args:
        device: device for student, teachers and batches.
        max_epochs: number of epochs.
        train_data_loader: loader of labelled batches; defines the epoch length.
        network: the student.
        optimizer: optimizer over the student's parameters and ``loss_function.parameters()`` (learned weighting).
        loss_function: distillation loss as for :class:`DistillationTrainer`, usually ``DistillationLoss``.
        teachers: one teacher or a sequence of teachers (moved to ``device``, eval mode, frozen).
        unlabeled_data_loader: loader of unlabelled batches with ``weak_key`` and ``strong_key``, or ``None``.
        fixmatch_loss: FixMatch term; default ``FixMatchLoss()``.
        fixmatch_weight: weight of the FixMatch term.
        pseudo_label_source: ``"teachers"`` (fused teacher probabilities) or ``"student"``.
        weak_key: key of the weakly augmented view in unlabelled batches.
        strong_key: key of the strongly augmented view in unlabelled batches.
        student_layers: student layers to tap (see :class:`DistillationTrainer`).
        teacher_layers: teacher layers to tap (see :class:`DistillationTrainer`).
        kwargs: any other ``monai.engines.SupervisedTrainer`` argument.
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
        unlabeled_data_loader: Iterable | None = None,
        fixmatch_loss: nn.Module | None = None,
        fixmatch_weight: float = 1.0,
        pseudo_label_source: str = "teachers",
        weak_key: str = "image_weak",
        strong_key: str = "image_strong",
        student_layers: Sequence[str] | None = None,
        teacher_layers: Sequence[str] | None = None,
        **kwargs: Any,
    ) -> None:
        step = SemiSupervisedStep(
            unlabeled_data_loader, fixmatch_loss, fixmatch_weight, pseudo_label_source, weak_key, strong_key
        )
        super().__init__(
            device=device,
            max_epochs=max_epochs,
            train_data_loader=train_data_loader,
            network=network,
            optimizer=optimizer,
            loss_function=loss_function,
            teachers=teachers,
            student_layers=student_layers,
            teacher_layers=teacher_layers,
            step=step,
            **kwargs,
        )
        # the step's settings, reachable from the trainer as before
        self.unlabeled_batches = step.unlabeled_batches
        self.fixmatch_loss = step.fixmatch_loss
        self.pseudo_label_source = step.pseudo_label_source

    @property
    def fixmatch_weight(self) -> float:
        """Weight of the FixMatch term (the step's)."""
        return self.step.fixmatch_weight

    @fixmatch_weight.setter
    def fixmatch_weight(self, value: float) -> None:
        self.step.fixmatch_weight = value


class SemiSupervisedStep(TrainingStep):
    """The iteration of :class:`SemiSupervisedDistillationTrainer` as hooks over the distillation engine.

    ``prepare`` draws the unlabelled batch; ``teacher_outputs`` runs the teachers once on labelled + weak images
    and keeps the labelled rows in ``ctx.teacher_outputs``; ``student_forward`` runs the student once on the
    labelled images and the views it needs; ``student_loss`` adds the unlabelled KD and FixMatch terms to the
    labelled distillation loss. Without an unlabelled batch every hook is the plain distillation step's.

    Args: as the same-named arguments of :class:`SemiSupervisedDistillationTrainer`.
    """

    def __init__(
        self,
        unlabeled_data_loader: Iterable | None = None,
        fixmatch_loss: nn.Module | None = None,
        fixmatch_weight: float = 1.0,
        pseudo_label_source: str = "teachers",
        weak_key: str = "image_weak",
        strong_key: str = "image_strong",
    ) -> None:
        if pseudo_label_source not in PSEUDO_LABEL_SOURCES:
            raise ValueError(f"pseudo_label_source must be one of {PSEUDO_LABEL_SOURCES}, got '{pseudo_label_source}'.")
        self.unlabeled_batches = BatchCycler(unlabeled_data_loader)
        self.fixmatch_loss = FixMatchLoss() if fixmatch_loss is None else fixmatch_loss
        self.fixmatch_weight = fixmatch_weight
        self.pseudo_label_source = pseudo_label_source
        self.weak_key = weak_key
        self.strong_key = strong_key
        self._warned_no_unlabeled = False

    def prepare(self, ctx: StepContext) -> None:  # noqa: D102
        engine = ctx.engine
        unlabeled = self.unlabeled_batches.next()
        ctx.extra["unlabeled"] = None
        if unlabeled is None:
            if not self._warned_no_unlabeled:
                engine.logger.warning("no unlabelled batches: training with supervision and KD on labelled data only.")
                self._warned_no_unlabeled = True
            return
        weak, strong = (
            unlabeled[key].to(device=engine.state.device, non_blocking=engine.non_blocking, **engine.to_kwargs)
            for key in (self.weak_key, self.strong_key)
        )
        if weak.shape[1:] != ctx.inputs.shape[1:] or strong.shape != weak.shape:
            raise ValueError(
                f"labelled images {tuple(ctx.inputs.shape)}, '{self.weak_key}' {tuple(weak.shape)} and "
                f"'{self.strong_key}' {tuple(strong.shape)} must agree in all but the batch size."
            )
        kd_loss = getattr(engine.loss_function, "kd_loss", None)
        kd_weight = getattr(engine.loss_function, "kd_weight", 0.0) if kd_loss is not None else 0.0
        use_fixmatch = self.fixmatch_weight != 0
        from_teachers = use_fixmatch and self.pseudo_label_source == "teachers"
        views = {"labelled": ctx.inputs}
        if kd_weight != 0 or (use_fixmatch and not from_teachers):
            views["weak"] = weak
        if use_fixmatch:
            views["strong"] = strong
        ctx.extra.update(
            unlabeled=weak, views=views, kd_loss=kd_loss, kd_weight=kd_weight, use_fixmatch=use_fixmatch,
            from_teachers=from_teachers, teachers_on_weak=kd_weight != 0 or from_teachers,
        )

    def teacher_outputs(self, ctx: StepContext) -> None:  # noqa: D102
        weak = ctx.extra["unlabeled"]
        if weak is None or not ctx.extra["teachers_on_weak"]:
            super().teacher_outputs(ctx)
            ctx.extra["teacher_unlabeled"] = []
            return
        n_l = ctx.inputs.shape[0]
        outputs, features = ctx.engine.teacher_forward(cat_batches([ctx.inputs, weak]), *ctx.args, **ctx.kwargs)
        ctx.extra["teacher_unlabeled"] = [t[n_l:] for t in outputs]
        ctx.teacher_outputs = [t[:n_l] for t in outputs]
        ctx.teacher_features = [_rows(f, n_l) for f in features]

    def student_forward(self, ctx: StepContext) -> None:  # noqa: D102
        if ctx.extra["unlabeled"] is None:
            return super().student_forward(ctx)
        engine, views, n_l = ctx.engine, ctx.extra["views"], ctx.inputs.shape[0]
        with engine.capture_student() as features:
            pred_all = engine.inferer(cat_batches(list(views.values())), engine.network, *ctx.args, **ctx.kwargs)
        pred = dict(zip(views, pred_all.split([v.shape[0] for v in views.values()])))
        ctx.pred = like_input(pred["labelled"], ctx.inputs)
        ctx.extra["pred"] = pred
        ctx.student_features = _rows(features, n_l)

    def student_loss(self, ctx: StepContext) -> torch.Tensor:  # noqa: D102
        loss = super().student_loss(ctx)
        weak = ctx.extra["unlabeled"]
        if weak is None:
            return loss
        loss = loss.mean()
        x, pred, out = ctx.extra, ctx.extra["pred"], ctx.output
        n_l = ctx.inputs.shape[0]
        unlabeled_weights = None
        if x["kd_weight"] != 0:
            kd_loss = x["kd_loss"]
            no_labels = torch.full((weak.shape[0], *ctx.targets.shape[1:]), -1, device=ctx.targets.device)
            value = kd_loss(pred["weak"], x["teacher_unlabeled"], labels=no_labels).mean()
            unlabeled_weights = kd_loss.last_weights
            out[TEACHER_WEIGHTS_UNLABELED] = unlabeled_weights.mean(dim=0).repeat(n_l, 1)
            out[LOSS_TERM_PREFIX + "kd_unlabeled"] = float(value.detach())
            loss = loss + x["kd_weight"] * value
        if x["use_fixmatch"]:
            if x["from_teachers"]:
                pseudo = fuse_probabilities(torch.stack(x["teacher_unlabeled"]), unlabeled_weights, temperature=1.0)
                value = self.fixmatch_loss(pred["strong"], pseudo, target_is_probs=True)
            else:
                value = self.fixmatch_loss(pred["strong"], pred["weak"].detach())
            value = value.mean()
            out[LOSS_TERM_PREFIX + "fixmatch"] = float(value.detach())
            out[PSEUDO_LABEL_RATE] = float(getattr(self.fixmatch_loss, "last_mask_rate", 0.0))
            loss = loss + self.fixmatch_weight * value
        return loss


def _rows(features: dict[str, torch.Tensor], n: int) -> dict[str, torch.Tensor]:
    """The first ``n`` rows (the labelled instances) of every tapped feature."""
    return {name: value[:n] for name, value in features.items()}
