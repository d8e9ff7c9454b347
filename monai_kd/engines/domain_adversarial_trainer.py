"""Domain-adversarial (DANN) training of a classifier on labelled source and unlabelled target data."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from monai_kd.engines.distillation_engine import DistillationEngine, StepContext, TrainingStep
from monai_kd.engines.steps import BatchCycler, cat_batches, like_input
from monai_kd.networks.gradient_reversal import dann_coefficient
from monai_kd.networks.wrappers import unwrap_module

__all__ = ["DomainAdversarialStep", "DomainAdversarialTrainer"]

DANN_COEFFICIENT = "dann_coefficient"
LOSS_TASK = "loss_task"
LOSS_DOMAIN = "loss_domain"
DOMAIN_ACCURACY = "domain_accuracy"


class DomainAdversarialTrainer(DistillationEngine):
    """Train a classifier with DANN (Ganin & Lempitsky 2015): labelled source data + unlabelled target data.

    ``network`` must expose ``domain_logits()`` (the domain logits of its last forward pass) and a settable
    ``coefficient`` for its gradient-reversal layer, as
    :class:`monai_kd.networks.domain_adversarial.DomainAdversarialNetwork` does. Each iteration:

    1. a labelled source batch comes from ``train_data_loader`` (through ``prepare_batch``) and an unlabelled
       target batch from ``target_data_loader`` (its ``image``; restarted whenever it is exhausted, so it may be
       shorter or longer than the source loader);
    2. the reversal coefficient is set to ``dann_coefficient(p, gamma)`` with
       ``p = (iteration - 1) / (max_epochs * epoch_length)``;
    3. the network runs on source and target images (one concatenated pass when their shapes agree, so
       BatchNorm sees both domains; two passes otherwise);
    4. ``loss = loss_function(pred_source, label) + domain_weight * CE(domain_logits, domain)`` with domain 0
       for source rows and 1 for target rows, then backward and optimizer step.

    MONAI's ``FORWARD_COMPLETED``, ``LOSS_COMPLETED``, ``BACKWARD_COMPLETED`` and ``MODEL_COMPLETED`` events fire
    as in ``SupervisedTrainer``. ``engine.state.output`` holds the source ``image``, ``label``, ``pred`` and the
    total ``loss``, plus the floats ``loss_task``, ``loss_domain``, ``dann_coefficient`` and ``domain_accuracy``
    (accuracy of the domain head; near 0.5 once features are domain-invariant). ``domain_weight=0`` trains the
    plain classifier on source data (ablation): target batches are then not drawn at all, so no target image
    reaches the network (not even its BatchNorm statistics), and ``loss_domain`` is 0 with no
    ``domain_accuracy``. Use the default ``SimpleInferer``: the domain logits must come
    from one forward pass over the whole images. Extra network arguments from ``prepare_batch`` are passed
    unchanged.

    Args:
        device: device for the network and batches.
        max_epochs: number of epochs.
        train_data_loader: loader of labelled source-domain batches.
        target_data_loader: loader of unlabelled target-domain batches (dicts with ``image``, or tensors).
        network: the wrapped classifier (e.g. ``DomainAdversarialNetwork``).
        optimizer: optimizer over ``network.parameters()`` (classifier and domain head).
        loss_function: task loss on source labels, e.g. ``torch.nn.CrossEntropyLoss``.
        domain_weight: weight of the domain-classification loss.
        gamma: steepness of the reversal-coefficient schedule.
        kwargs: any other ``monai.engines.SupervisedTrainer`` argument (``epoch_length``, ``prepare_batch``,
            ``postprocessing``, ``key_train_metric``, ``train_handlers``, ``amp``, ...).
    """

    def __init__(
        self,
        device: str | torch.device,
        max_epochs: int,
        train_data_loader: Any,
        target_data_loader: Iterable,
        network: nn.Module,
        optimizer: torch.optim.Optimizer,
        loss_function: nn.Module,
        domain_weight: float = 1.0,
        gamma: float = 10.0,
        **kwargs: Any,
    ) -> None:
        if target_data_loader is None:
            raise ValueError("DomainAdversarialTrainer needs a target_data_loader (unlabelled target-domain data).")
        inner = unwrap_module(network)
        if not (callable(getattr(inner, "domain_logits", None)) and hasattr(inner, "coefficient")):
            raise TypeError(
                f"{type(inner).__name__} has no domain_logits()/coefficient; wrap the classifier in "
                "monai_kd.networks.domain_adversarial.DomainAdversarialNetwork."
            )
        step = DomainAdversarialStep(target_data_loader, domain_weight, gamma)
        super().__init__(
            device=device,
            max_epochs=max_epochs,
            train_data_loader=train_data_loader,
            network=network,
            optimizer=optimizer,
            loss_function=loss_function,
            step=step,
            **kwargs,
        )
        self.target_batches = step.target_batches

    @property
    def domain_weight(self) -> float:
        """Weight of the domain-classification loss (the step's)."""
        return self.step.domain_weight

    @property
    def gamma(self) -> float:
        """Steepness of the reversal-coefficient schedule (the step's)."""
        return self.step.gamma


class DomainAdversarialStep(TrainingStep):
    """DANN as hooks over the distillation engine (no teachers): see :class:`DomainAdversarialTrainer`.

    ``prepare`` sets the reversal coefficient and draws the target batch; ``student_forward`` runs source and
    target images (one concatenated pass when their shapes agree); ``student_loss`` is the task loss plus
    ``domain_weight`` times the domain cross-entropy.

    Args: as the same-named arguments of :class:`DomainAdversarialTrainer`.
    """

    def __init__(self, target_data_loader: Iterable, domain_weight: float = 1.0, gamma: float = 10.0) -> None:
        self.target_batches = BatchCycler(target_data_loader)
        self.domain_weight = domain_weight
        self.gamma = gamma

    def prepare(self, ctx: StepContext) -> None:  # noqa: D102
        engine = ctx.engine
        net = unwrap_module(engine.network)
        progress = (engine.state.iteration - 1) / max(engine.state.max_epochs * engine.state.epoch_length, 1)
        net.coefficient = dann_coefficient(progress, self.gamma)
        ctx.output[DANN_COEFFICIENT] = net.coefficient
        ctx.extra["target"] = None
        if self.domain_weight == 0:  # source-only ablation: the target domain is never seen
            return
        target_batch = self.target_batches.next()
        if target_batch is None:
            raise ValueError("target_data_loader yielded no batch.")
        target = engine.prepare_batch(target_batch, engine.state.device, engine.non_blocking, **engine.to_kwargs)
        ctx.extra["target"] = target[0] if isinstance(target, (tuple, list)) else target

    def student_forward(self, ctx: StepContext) -> None:  # noqa: D102
        engine, inputs, target = ctx.engine, ctx.inputs, ctx.extra["target"]
        net = unwrap_module(engine.network)
        if target is None:
            ctx.pred = engine.inferer(inputs, engine.network, *ctx.args, **ctx.kwargs)
        elif target.shape[1:] == inputs.shape[1:]:
            pred = engine.inferer(cat_batches([inputs, target]), engine.network, *ctx.args, **ctx.kwargs)
            ctx.pred, ctx.extra["domain_logits"] = like_input(pred[: inputs.shape[0]], inputs), net.domain_logits()
        else:
            ctx.pred = engine.inferer(inputs, engine.network, *ctx.args, **ctx.kwargs)
            source_domain = net.domain_logits()
            engine.inferer(target, engine.network, *ctx.args, **ctx.kwargs)
            ctx.extra["domain_logits"] = torch.cat([source_domain, net.domain_logits()])

    def student_loss(self, ctx: StepContext) -> torch.Tensor:  # noqa: D102
        task = ctx.engine.loss_function(ctx.pred, ctx.targets).mean()
        ctx.output[LOSS_TASK] = float(task.detach())
        if ctx.extra["target"] is None:
            ctx.output[LOSS_DOMAIN] = 0.0
            return task
        domain_logits = ctx.extra["domain_logits"]
        domains = torch.zeros(domain_logits.shape[0], dtype=torch.long, device=domain_logits.device)
        domains[ctx.inputs.shape[0] :] = 1
        domain = F.cross_entropy(domain_logits.float(), domains)
        ctx.output[LOSS_DOMAIN] = float(domain.detach())
        ctx.output[DOMAIN_ACCURACY] = float((domain_logits.argmax(dim=1) == domains).float().mean())
        return task + self.domain_weight * domain
