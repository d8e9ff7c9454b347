"""MMKD's bilevel step (virtual student step, meta step on a quiz batch, real step) as a distillation-engine hook."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
import torch
from torch import nn
from torch.func import functional_call

from monai_kd.engines.distillation_engine import LOSS_TERM_PREFIX, DistillationEngine, StepContext, TrainingStep
from monai_kd.engines.steps import BatchCycler
from monai_kd.networks.meta_weight import MetaWeightNetwork
from monai_kd.networks.wrappers import unwrap_module

__all__ = ["MetaWeightedStep", "connector_parameters"]

META_WEIGHTS = "meta_weights"
FEATURE_WEIGHTS = "feature_weights"


class MetaWeightedStep(TrainingStep):
    """Meta-learned teacher weights (MMKD, Zhang et al.): a bilevel step on a held-out quiz split.

    Every ``meta_interval`` iterations, before the real step (hook ``before_step``):

    1. **virtual step**: the student's parameters ``theta`` are copied functionally, the distillation loss of the
       training batch (teacher weights from the meta-weight network(s) ``phi``, kept in the graph) is computed with
       :func:`torch.func.functional_call`, and ``theta' = theta - virtual_lr * grad_theta`` (one SGD step,
       ``create_graph=True``). BatchNorm buffers are cloned for the virtual passes and tapped features are recorded
       in their own dict, so the real student's weights, BatchNorm statistics and tapped features are untouched.
    2. **meta step**: the virtually updated student classifies a quiz batch (``quiz_data_loader``, disjoint from the
       training data); ``meta_loss`` (cross-entropy) of it is differentiated w.r.t. ``phi`` only
       (``torch.autograd.grad``: no gradient reaches the student or the connectors) and ``meta_optimizer`` steps.

    Then the real step runs as in :class:`monai_kd.engines.DistillationTrainer`, with the updated ``phi`` frozen
    during its loss: the meta-weight network learns from the quiz loss only, the student from the training loss.

    The meta-weight networks are the loss's teacher weightings that are :class:`MetaWeightNetwork` instances
    (``kd_loss.weighting`` for the output-layer branch, ``feature_weighting`` for the intermediate-layer branch),
    or ``meta_networks`` when given. Their parameters must not be in the student's optimizer. The KD term must be
    built with ``weighting_signal="kd"`` so the weights stay in the virtual step's graph (the quiz loss, not the
    label term of :class:`monai_kd.losses.MultiTeacherKDLoss`, is their signal).

    Choices where the paper is vague (config switches): the virtual step is plain SGD with ``virtual_lr``
    (default: the student optimizer's current learning rate), as in Meta-Weight-Net; the student runs in train mode
    in both functional passes (batch statistics, cloned running buffers); the student is called directly (not
    through the engine's inferer) in the functional passes, so use a whole-input ``SimpleInferer``.

    ``engine.state.output`` gains ``loss_quiz`` (quiz loss of the virtual student, float), ``meta_weights`` (the
    KD weights of the real step, ``(B, K)``, as ``teacher_weights``) and ``feature_weights`` when the
    intermediate-layer branch is weighted.

    Args:
        quiz_data_loader: loader of labelled quiz batches (a held-out role of the training split, see
            :func:`monai_kd.data.held_out_role`); restarted when exhausted.
        meta_optimizer: optimizer over the meta-weight networks' parameters, or a callable taking that parameter
            list (in a bundle: ``{"_target_": "torch.optim.Adam", "_mode_": "callable", "lr": 1e-3}``).
        meta_loss: loss of the quiz batch; default ``torch.nn.CrossEntropyLoss()``.
        virtual_lr: learning rate of the virtual SGD step; ``None`` uses the student optimizer's first group's.
        meta_interval: run the virtual and meta steps every this many iterations (1 = every iteration).
        meta_networks: the meta-weight networks; default: found in the loss (see above).
    """

    def __init__(
        self,
        quiz_data_loader: Iterable,
        meta_optimizer: torch.optim.Optimizer | Callable[[list[nn.Parameter]], torch.optim.Optimizer],
        meta_loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
        virtual_lr: float | None = None,
        meta_interval: int = 1,
        meta_networks: Sequence[nn.Module] | None = None,
    ) -> None:
        if quiz_data_loader is None:
            raise ValueError("MetaWeightedStep needs a quiz_data_loader (held-out labelled quiz data).")
        if meta_interval < 1:
            raise ValueError(f"meta_interval must be >= 1, got {meta_interval}.")
        if virtual_lr is not None and not virtual_lr > 0:
            raise ValueError(f"virtual_lr must be > 0, got {virtual_lr}.")
        self.quiz_batches = BatchCycler(quiz_data_loader)
        self.meta_optimizer = meta_optimizer
        self.meta_loss = torch.nn.CrossEntropyLoss() if meta_loss is None else meta_loss
        self.virtual_lr = virtual_lr
        self.meta_interval = meta_interval
        self.meta_networks = list(meta_networks) if meta_networks is not None else None

    def attach(self, engine: DistillationEngine) -> None:
        """Find the meta-weight networks, check the student optimizer leaves them alone, build the meta optimizer."""
        loss = engine.loss_function
        if self.meta_networks is None:
            kd_loss = getattr(loss, "kd_loss", None)
            candidates = [getattr(kd_loss, "weighting", None), getattr(loss, "feature_weighting", None)]
            self.meta_networks = [m for m in candidates if isinstance(m, MetaWeightNetwork)]
        if not self.meta_networks:
            raise ValueError(
                "MetaWeightedStep found no MetaWeightNetwork in the loss (kd_loss.weighting or feature_weighting)."
            )
        kd_loss = getattr(loss, "kd_loss", None)
        if (
            kd_loss is not None
            and any(m is getattr(kd_loss, "weighting", None) for m in self.meta_networks)
            and getattr(kd_loss, "weighting_signal", "kd") != "kd"
        ):
            raise ValueError(
                'MetaWeightedStep needs MultiTeacherKDLoss(weighting_signal="kd"): the meta-weight network learns from '
                f'the quiz loss through the KD term it weights, got weighting_signal="{kd_loss.weighting_signal}".'
            )
        params = [p for m in self.meta_networks for p in m.parameters() if p.requires_grad]
        meta_ids = {id(p) for p in params}
        student_ids = {id(p) for group in engine.optimizer.param_groups for p in group["params"]}
        if meta_ids & student_ids:
            raise ValueError(
                "the student optimizer holds meta-weight network parameters: they must learn from the quiz loss only; "
                "build the student optimizer over the student and monai_kd.engines.connector_parameters(loss)."
            )
        for module in self.meta_networks:
            module.to(engine.state.device)
        if not isinstance(self.meta_optimizer, torch.optim.Optimizer):
            self.meta_optimizer = self.meta_optimizer(params)
        self.meta_parameters = params

    def before_step(self, ctx: StepContext) -> None:
        """The virtual step and the meta step (every ``meta_interval`` iterations)."""
        engine = ctx.engine
        if (engine.state.iteration - 1) % self.meta_interval:
            return
        quiz = self.quiz_batches.next()
        if quiz is None:
            raise ValueError("quiz_data_loader yielded no batch.")
        quiz_inputs, quiz_targets = engine.prepare_batch(quiz, engine.state.device, engine.non_blocking, **engine.to_kwargs)[:2]
        quiz_loss = self.meta_update(ctx, quiz_inputs, quiz_targets)
        ctx.output[LOSS_TERM_PREFIX + "quiz"] = float(quiz_loss.detach())

    def meta_update(self, ctx: StepContext, quiz_inputs: torch.Tensor, quiz_targets: torch.Tensor) -> torch.Tensor:
        """Virtual student step on the training batch, then one meta-optimizer step on the quiz loss; return it."""
        engine = ctx.engine
        student = unwrap_module(engine.network)
        student.train()
        params = {name: p for name, p in student.named_parameters() if p.requires_grad}
        # cloned buffers: the virtual passes update copies of the BatchNorm statistics, never the student's
        buffers = {name: b.clone() for name, b in student.named_buffers()}
        with engine.capture_student() as features:
            pred = functional_call(student, (params, buffers), (ctx.inputs, *ctx.args), ctx.kwargs)
        virtual_loss = engine.loss_function(
            pred, ctx.targets, ctx.teacher_outputs, dict(features), ctx.teacher_features
        ).mean()
        grads = torch.autograd.grad(virtual_loss, list(params.values()), create_graph=True, allow_unused=True)
        lr = self.virtual_lr if self.virtual_lr is not None else float(engine.optimizer.param_groups[0]["lr"])
        updated = {n: p if g is None else p - lr * g for (n, p), g in zip(params.items(), grads)}
        with engine.capture_student():
            quiz_pred = functional_call(student, (updated, buffers), (quiz_inputs, *ctx.args), ctx.kwargs)
        quiz_loss = self.meta_loss(quiz_pred, quiz_targets.reshape(quiz_pred.shape[0], *quiz_pred.shape[2:]).long()).mean()
        meta_grads = torch.autograd.grad(quiz_loss, self.meta_parameters, allow_unused=True)
        self.meta_optimizer.zero_grad(set_to_none=True)
        distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
        for p, g in zip(self.meta_parameters, meta_grads):
            p.grad = torch.zeros_like(p) if g is None else g.detach()
            if distributed:  # one meta-weight network for all ranks, as DDP keeps one student
                torch.distributed.all_reduce(p.grad)
                p.grad /= torch.distributed.get_world_size()
        self.meta_optimizer.step()
        return quiz_loss

    def student_loss(self, ctx: StepContext) -> torch.Tensor:
        """The real step's loss with the meta-weight networks frozen (their weights enter as constants)."""
        flags = [(p, p.requires_grad) for p in self.meta_parameters]
        for p, _ in flags:
            p.requires_grad_(False)
        try:
            loss = super().student_loss(ctx)
        finally:
            for p, flag in flags:
                p.requires_grad_(flag)
        kd_weights = getattr(getattr(ctx.engine.loss_function, "kd_loss", None), "last_weights", None)
        if kd_weights is not None:
            ctx.output[META_WEIGHTS] = kd_weights
        feature_weights = getattr(ctx.engine.loss_function, "last_feature_weights", None)
        if feature_weights is not None:
            ctx.output[FEATURE_WEIGHTS] = feature_weights
        return loss

    @property
    def meta_parameter_count(self) -> int:
        """Number of trainable meta-weight network parameters."""
        return sum(p.numel() for p in self.meta_parameters)


def connector_parameters(loss: nn.Module) -> list[nn.Parameter]:
    """The loss's trainable parameters that are not meta-weight networks' (feature connectors, a learned gate).

    Build the student optimizer over ``student.parameters()`` plus these when a :class:`MetaWeightedStep` trains
    the meta-weight networks, e.g. in a bundle
    ``"params": "$list(@network.parameters()) + monai_kd.engines.connector_parameters(@train#loss)"``.
    """
    meta = {id(p) for m in loss.modules() if isinstance(m, MetaWeightNetwork) for p in m.parameters()}
    return [p for p in loss.parameters() if p.requires_grad and id(p) not in meta]
