"""Train several students (and optionally an online teacher) together, with per-target loss terms as configuration."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn.modules.loss import _Loss

from monai_kd.engines.distillation_engine import DistillationEngine, StepContext, TrainingStep
from monai_kd.networks.feature_tap import FeatureTap
from monai_kd.networks.wrappers import unwrap_module

LABELS = "labels"
TEACHER = "teacher"
TASK, LOGIT, FEATURE = "task", "logit", "feature"
KINDS = (TASK, LOGIT, FEATURE)
TEACHER_MODES = ("offline", "online", "none")
PRED_PREFIX = "pred_"


@dataclass(eq=False)
class LossTerm:
    """One weighted loss term of a multi-network training step: who learns, from what, with which loss.

    ``kind`` decides what ``loss`` is called with, always as ``loss(input, target)``:

    - ``"task"``: ``loss(pred_<learner>, labels)``; ``source`` must be ``"labels"``.
    - ``"logit"``: ``loss(pred_<learner>, pred_<source>.detach())``, e.g. :class:`monai_kd.losses.KDLoss`
      or :class:`monai_kd.losses.MutualLearningLoss`.
    - ``"feature"``: ``loss(feature, source_feature.detach())`` with the outputs of ``learner_layer`` in the learner
      and ``source_layer`` in the source (tapped by :class:`monai_kd.networks.FeatureTap`), e.g.
      :class:`monai_kd.losses.FeatureKDLoss`. When the layers are not given they are read from the loss's
      ``student_layer`` / ``teacher_layer`` attributes.

    Sources other than the labels are always detached: a term only trains its ``learner``.
    In a bundle: ``{"_target_": "monai_kd.engines.LossTerm", "name": "s1_task", "learner": "s1", "kind": "task",
    "loss": "@task_loss"}``; the trainer also accepts the same keys as a plain dict.

    Args:
        name: identifier of the term; logged as ``loss_<name>`` in ``engine.state.output``.
        learner: the network trained by this term: a student name, or ``"teacher"`` (online teacher only).
        kind: ``"task"``, ``"logit"`` or ``"feature"``.
        loss: callable ``loss(input, target) -> Tensor``; a tensor with several values is averaged.
        source: ``"labels"`` for task terms, otherwise ``"teacher"`` or another student's name.
        learner_layer: dotted module name in the learner (feature terms only).
        source_layer: dotted module name in the source (feature terms only).
        weight: multiplier of the term in the total loss; a term with weight 0 is neither computed nor logged.
    """

    name: str
    learner: str
    kind: str
    loss: Callable[..., torch.Tensor]
    source: str = LABELS
    learner_layer: str | None = None
    source_layer: str | None = None
    weight: float = 1.0

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.isidentifier():
            raise ValueError(f"loss term name must be an identifier (letters, digits, _), got {self.name!r}.")
        if self.kind not in KINDS:
            raise ValueError(f'loss term "{self.name}": kind must be one of {KINDS}, got "{self.kind}".')
        if not callable(self.loss):
            raise TypeError(f'loss term "{self.name}": loss must be callable, got {type(self.loss).__name__}.')
        if (self.kind == TASK) != (self.source == LABELS):
            raise ValueError(
                f'loss term "{self.name}": a "task" term has source "labels" and only a task term may; '
                f'got kind "{self.kind}" with source "{self.source}".'
            )
        if self.source == self.learner:
            raise ValueError(f'loss term "{self.name}": learner and source are both "{self.learner}".')
        if self.kind == FEATURE:
            self.learner_layer = self.learner_layer or getattr(self.loss, "student_layer", None) or None
            self.source_layer = self.source_layer or getattr(self.loss, "teacher_layer", None) or None
            if not self.learner_layer or not self.source_layer:
                raise ValueError(f'feature loss term "{self.name}" needs learner_layer and source_layer.')
        elif self.learner_layer or self.source_layer:
            raise ValueError(f'loss term "{self.name}": layers are only used by "feature" terms, not "{self.kind}".')
        self.weight = float(self.weight)

    @classmethod
    def from_spec(cls, spec: LossTerm | Mapping[str, Any]) -> LossTerm:
        """Return ``spec`` if it is a :class:`LossTerm`, else build one from a mapping with the same keys."""
        if isinstance(spec, cls):
            return spec
        if not isinstance(spec, Mapping):
            raise TypeError(f"a loss term must be a LossTerm or a dict, got {type(spec).__name__}.")
        unknown = set(spec) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown loss term keys {sorted(unknown)}; allowed: {sorted(cls.__dataclass_fields__)}.")
        return cls(**spec)


class MultiTermLoss(_Loss):
    """Weighted sum of :class:`LossTerm` s over the outputs and tapped features of several named networks.

    Called by :class:`MultiStudentTrainer` as ``loss(outputs, labels, features)``; after each call ``last_terms``
    holds the unweighted value of every computed term as floats (for logging), as in
    :class:`monai_kd.losses.DistillationLoss`. The term losses are registered as submodules, so
    ``parameters()`` includes trainable connectors (e.g. of :class:`monai_kd.losses.FeatureKDLoss`).

    Args:
        terms: :class:`LossTerm` objects or dicts with their keys; names must be unique.
    """

    def __init__(self, terms: Sequence[LossTerm | Mapping[str, Any]]) -> None:
        super().__init__()
        self.terms = [LossTerm.from_spec(t) for t in terms]
        if not self.terms:
            raise ValueError("MultiTermLoss needs at least one loss term.")
        names = [t.name for t in self.terms]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"loss term names must be unique, repeated: {duplicates}.")
        self.term_losses = nn.ModuleDict({t.name: t.loss for t in self.terms if isinstance(t.loss, nn.Module)})
        self.last_terms: dict[str, float] = {}

    @property
    def networks(self) -> list[str]:
        """Names of the networks the terms read (learners and non-label sources), in order of appearance."""
        names = [t.learner for t in self.terms] + [t.source for t in self.terms if t.source != LABELS]
        return list(dict.fromkeys(names))

    @property
    def layers(self) -> dict[str, list[str]]:
        """Layers to tap, per network name, for the feature terms."""
        layers: dict[str, list[str]] = {}
        for t in self.terms:
            if t.kind == FEATURE:
                layers.setdefault(t.learner, []).append(t.learner_layer)  # type: ignore[arg-type]
                layers.setdefault(t.source, []).append(t.source_layer)  # type: ignore[arg-type]
        return {name: list(dict.fromkeys(names)) for name, names in layers.items()}

    def forward(
        self,
        outputs: Mapping[str, torch.Tensor],
        labels: torch.Tensor | None,
        features: Mapping[str, Mapping[str, torch.Tensor]] | None = None,
    ) -> torch.Tensor:
        """
        Args:
            outputs: prediction (logits) of every network by name (``"teacher"``, ``"s1"``, ...).
            labels: targets of the task terms.
            features: tapped features per network name, then per layer name.
        """
        features = features or {}
        total: torch.Tensor | None = None
        terms: dict[str, float] = {}
        for term in self.terms:
            if term.weight == 0:
                continue
            if term.kind == TASK:
                value = term.loss(_lookup(outputs, term.learner, "output"), labels)
            elif term.kind == LOGIT:
                value = term.loss(_lookup(outputs, term.learner, "output"), _lookup(outputs, term.source, "output").detach())
            else:
                learner_feat = _lookup(_lookup(features, term.learner, "features"), term.learner_layer, term.learner)
                source_feat = _lookup(_lookup(features, term.source, "features"), term.source_layer, term.source)
                value = term.loss(learner_feat, source_feat.detach())
            value = value.mean()
            terms[term.name] = float(value.detach())
            total = term.weight * value if total is None else total + term.weight * value
        self.last_terms = terms
        if total is None:
            raise ValueError("every loss term has weight 0: nothing to train.")
        return total


def trainable_parameters(
    students: Mapping[str, nn.Module],
    loss_terms: Sequence[LossTerm | Mapping[str, Any]] | MultiTermLoss = (),
    teacher: nn.Module | None = None,
    teacher_mode: str = "offline",
) -> list[nn.Parameter]:
    """All parameters one optimizer must update: students, the teacher when online, and trainable loss modules.

    Use it to build the single optimizer before the trainer exists, e.g. in a bundle
    ``"params": "$monai_kd.engines.trainable_parameters(@students, @loss_terms, @teacher, @teacher_mode)"``.
    Parameters with ``requires_grad=False`` are left out; each parameter appears once.

    Args:
        students: the student networks by name.
        loss_terms: the term specs (or a :class:`MultiTermLoss`), for connector parameters.
        teacher: the teacher, if any.
        teacher_mode: ``"online"`` includes the teacher's parameters; ``"offline"`` / ``"none"`` do not.
    """
    modules: list[nn.Module] = list(students.values())
    if teacher is not None and teacher_mode == "online":
        modules.append(teacher)
    terms = loss_terms.terms if isinstance(loss_terms, MultiTermLoss) else [LossTerm.from_spec(t) for t in loss_terms]
    modules += [t.loss for t in terms if isinstance(t.loss, nn.Module)]
    params: dict[int, nn.Parameter] = {}
    for module in modules:
        for p in module.parameters():
            if p.requires_grad:
                params.setdefault(id(p), p)
    return list(params.values())


class MultiStudentTrainer(DistillationEngine):
    """Train one or more students, and optionally an online teacher, in one step with one optimizer.

    What each network learns from is configuration: a list of :class:`LossTerm` specs, each naming a learner
    (a student or ``"teacher"``), a ``kind`` (``"task"``, ``"logit"``, ``"feature"``), a source (``"labels"``,
    ``"teacher"`` or another student), the layers for feature terms, a weight and a loss module; see
    :func:`monai_kd.engines.kdml_recipes.kdml_terms` for the KD / ML / KD+ML x V1 / V2 / V3 configurations of
    Niyaz et al. Features are captured by layer name with :class:`monai_kd.networks.FeatureTap`, so tapped networks
    should see the whole input in one forward (e.g. ``SimpleInferer``).

    ``teacher_mode``:

    - ``"offline"``: the teacher is frozen at construction (``requires_grad_(False)``) and runs in eval mode
      under ``torch.no_grad`` (through :meth:`DistillationEngine.teacher_forward`, with its tapped layers); no term
      may train it. Its outputs and features can then come from the teacher-output cache:
      ``step=TeacherCacheStep(MultiStudentStep())`` (see :mod:`monai_kd.engines.teacher_cache`).
    - ``"online"``: the teacher runs in train mode and is updated by the same optimizer; at least one term must
      have ``learner="teacher"`` (its task loss). Students only see its detached outputs/features.
    - ``"none"``: no teacher is run (a given ``teacher`` is ignored); no term may refer to it.

    Each iteration: forward of the teacher (if used) and every student on the same batch, the weighted sum of
    the terms, one backward and one optimizer step, firing MONAI's ``FORWARD_COMPLETED``, ``LOSS_COMPLETED``,
    ``BACKWARD_COMPLETED`` and ``MODEL_COMPLETED`` like ``SupervisedTrainer``. ``engine.network`` is an
    ``nn.ModuleDict`` of the students (checkpoint it, or give it to an evaluator with
    :class:`monai_kd.inferers.StudentEnsembleInferer`). ``engine.state.output`` holds ``image``, ``label``,
    ``loss``, ``pred`` (the first student's output), ``pred_<name>`` per student, ``pred_teacher`` when a teacher
    runs, and one float ``loss_<term name>`` per computed term (flat keys, so MONAI's decollation keeps them).

    Args:
        device: device for all networks and batches.
        max_epochs: number of epochs.
        train_data_loader: loader of training batches.
        students: student networks by name (identifiers other than ``"teacher"`` / ``"labels"``); the first is
            the one reported as ``pred``.
        optimizer: one optimizer over :func:`trainable_parameters`, or a callable taking that parameter list and
            returning the optimizer (e.g. ``{"_target_": "torch.optim.Adam", "_mode_": "callable", "lr": 1e-3}``).
            A given optimizer must cover every trainable parameter.
        loss_terms: :class:`LossTerm` objects or dicts with their keys.
        teacher: the teacher network (required unless ``teacher_mode="none"``).
        teacher_mode: ``"offline"``, ``"online"`` or ``"none"``.
        step: the iteration; default :class:`MultiStudentStep`. The teacher-output cache switch, offline only:
            ``TeacherCacheStep(MultiStudentStep())`` (an online teacher changes every step, mutual learning has
            no teacher to cache: :class:`TeacherCacheStep` refuses a trainer without frozen teachers).
        kwargs: other ``monai.engines.SupervisedTrainer`` arguments (``epoch_length``, ``prepare_batch``,
            ``inferer``, ``postprocessing``, ``key_train_metric``, ``train_handlers``, ``amp``, ...).
            ``accumulation_steps > 1`` and ``compile=True`` are not supported.
    """

    def __init__(
        self,
        device: str | torch.device,
        max_epochs: int,
        train_data_loader: Iterable,
        students: Mapping[str, nn.Module],
        optimizer: torch.optim.Optimizer | Callable[[list[nn.Parameter]], torch.optim.Optimizer],
        loss_terms: Sequence[LossTerm | Mapping[str, Any]],
        teacher: nn.Module | None = None,
        teacher_mode: str = "offline",
        step: TrainingStep | None = None,
        **kwargs: Any,
    ) -> None:
        from monai_kd.engines.teacher_cache import TeacherCacheStep

        step = MultiStudentStep() if step is None else step
        inner = step.step if isinstance(step, TeacherCacheStep) else step
        if not isinstance(inner, MultiStudentStep):
            raise TypeError(
                f"MultiStudentTrainer's step must be a MultiStudentStep (or TeacherCacheStep(MultiStudentStep())), "
                f"got {type(inner).__name__}."
            )
        if teacher_mode not in TEACHER_MODES:
            raise ValueError(f'teacher_mode must be one of {TEACHER_MODES}, got "{teacher_mode}".')
        if not isinstance(students, Mapping) or not students:
            raise ValueError("MultiStudentTrainer needs a non-empty dict of students, e.g. {'s1': net1, 's2': net2}.")
        for name in students:
            if not isinstance(name, str) or not name.isidentifier() or name in (TEACHER, LABELS):
                raise ValueError(f"student names must be identifiers other than 'teacher'/'labels', got {name!r}.")
        if teacher_mode != "none" and teacher is None:
            raise ValueError(f'teacher_mode="{teacher_mode}" needs a teacher network.')
        loss_function = MultiTermLoss(loss_terms)
        _check_terms(loss_function, list(students), teacher_mode)
        teacher = teacher if teacher_mode != "none" else None
        if teacher is not None:
            teacher.to(device)  # an offline teacher is frozen by the engine (passed as one of its teachers)
        network = nn.ModuleDict(dict(students)).to(device)
        loss_function.to(device)
        params = trainable_parameters(students, loss_function, teacher, teacher_mode)
        if not isinstance(optimizer, torch.optim.Optimizer):
            optimizer = optimizer(params)
        _check_optimizer(optimizer, params)
        layers = loss_function.layers
        offline = teacher is not None and teacher_mode == "offline"
        super().__init__(
            device=device,
            max_epochs=max_epochs,
            train_data_loader=train_data_loader,
            network=network,
            optimizer=optimizer,
            loss_function=loss_function,
            teachers=[teacher] if offline else [],
            teacher_layers=[list(layers.get(TEACHER, []))] if offline else (),
            step=step,
            **kwargs,
        )
        self.teacher = teacher
        self.teacher_mode = teacher_mode
        # the offline teacher is tapped by the engine (teacher_taps, detached); the students and an online teacher here
        nets = {**({TEACHER: teacher} if teacher is not None and not offline else {}), **network}
        # tap the wrapped module of DistributedDataParallel / DataParallel so layer names stay the same
        self.taps = {name: FeatureTap(unwrap_module(nets[name]), layers[name]) for name in nets if layers.get(name)}

    def forward_networks(
        self, inputs: torch.Tensor, *args: Any, teacher_output: torch.Tensor | None = None, **kwargs: Any
    ) -> dict[str, torch.Tensor]:
        """Run the teacher (if used) and every student on ``inputs``; return the outputs by name.

        The offline teacher runs in eval mode without gradients (:meth:`teacher_forward`; its tapped features are
        what that returns), unless its ``teacher_output`` for these rows is given (e.g. from the teacher-output
        cache); the online teacher and the students run in train mode (features in :attr:`taps`).
        """
        for tap in self.taps.values():
            tap.clear()
        outputs: dict[str, torch.Tensor] = {}
        if self.teacher is not None:
            if self.teacher_mode == "offline":
                outputs[TEACHER] = (
                    teacher_output if teacher_output is not None else self.teacher_forward(inputs, *args, **kwargs)[0][0]
                )
            else:
                self.teacher.train()
                outputs[TEACHER] = self.inferer(inputs, self.teacher, *args, **kwargs)
        self.network.train()
        for name, student in self.network.items():
            outputs[name] = self.inferer(inputs, student, *args, **kwargs)
        return outputs


class MultiStudentStep(TrainingStep):
    """The iteration of :class:`MultiStudentTrainer` as hooks over the distillation engine.

    ``teacher_outputs`` runs the offline (frozen) teacher through ``engine.teacher_forward`` -- the hook
    :class:`~monai_kd.engines.TeacherCacheStep` serves from its cache; ``student_forward`` runs the online teacher
    (which needs gradients) and every student, logging ``pred_<name>``; ``student_loss`` is the
    :class:`MultiTermLoss` over all outputs and tapped features; ``after_step`` forgets the tapped features.
    """

    def teacher_outputs(self, ctx: StepContext) -> None:
        """The offline teacher's outputs and tapped features; nothing for an online teacher or none."""
        if ctx.engine.teacher is not None and ctx.engine.teacher_mode == "offline":
            super().teacher_outputs(ctx)

    def student_forward(self, ctx: StepContext) -> None:  # noqa: D102
        engine = ctx.engine
        offline = bool(ctx.teacher_outputs)
        teacher_output = ctx.teacher_outputs[0] if offline else None
        outputs = engine.forward_networks(ctx.inputs, *ctx.args, teacher_output=teacher_output, **ctx.kwargs)
        students = list(engine.network.keys())
        ctx.pred = outputs[students[0]]
        for name in students:
            ctx.output[PRED_PREFIX + name] = outputs[name]
        if TEACHER in outputs:
            ctx.output[PRED_PREFIX + TEACHER] = outputs[TEACHER].detach()
        ctx.extra["outputs"] = outputs
        ctx.student_features = {name: dict(tap.features) for name, tap in engine.taps.items()}
        if offline and ctx.teacher_features and ctx.teacher_features[0]:
            ctx.student_features[TEACHER] = dict(ctx.teacher_features[0])

    def student_loss(self, ctx: StepContext) -> torch.Tensor:  # noqa: D102
        return ctx.engine.loss_function(ctx.extra["outputs"], ctx.targets, ctx.student_features)

    def after_step(self, ctx: StepContext) -> None:  # noqa: D102
        for tap in ctx.engine.taps.values():
            tap.clear()


def _check_terms(loss: MultiTermLoss, students: list[str], teacher_mode: str) -> None:
    """Raise a clear error when a term names an unknown network or breaks the teacher mode."""
    known = set(students) | ({TEACHER} if teacher_mode != "none" else set())
    for term in loss.terms:
        for role, name in (("learner", term.learner), ("source", term.source)):
            if name == LABELS and role == "source":
                continue
            if name == TEACHER and teacher_mode == "none":
                raise ValueError(f'loss term "{term.name}" uses the teacher but teacher_mode="none".')
            if name not in known:
                raise ValueError(f'loss term "{term.name}": unknown {role} "{name}"; networks: {sorted(known)}.')
        if term.learner == TEACHER and teacher_mode == "offline":
            raise ValueError(f'loss term "{term.name}" trains the teacher but teacher_mode="offline" freezes it.')
    if teacher_mode == "online" and not any(t.learner == TEACHER and t.weight != 0 for t in loss.terms):
        raise ValueError('teacher_mode="online" needs a loss term with learner "teacher" (e.g. its task loss).')


def _check_optimizer(optimizer: torch.optim.Optimizer, params: list[nn.Parameter]) -> None:
    """Raise if ``optimizer`` misses some of the trainable parameters (one optimizer must update them all)."""
    covered = {id(p) for group in optimizer.param_groups for p in group["params"]}
    missing = sum(1 for p in params if id(p) not in covered)
    if missing:
        raise ValueError(
            f"the optimizer misses {missing} trainable parameter tensor(s) (students, online teacher or loss "
            "connectors); build it over monai_kd.engines.trainable_parameters(...) or pass the optimizer as a "
            'callable (in a bundle: "_mode_": "callable").'
        )


def _lookup(mapping: Mapping[str, Any], key: str | None, what: str) -> Any:
    if key not in mapping:
        raise KeyError(f"{what} '{key}' is not available; available: {sorted(mapping)}.")
    return mapping[key]
