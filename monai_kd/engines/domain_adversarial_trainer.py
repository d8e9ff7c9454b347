"""Domain-adversarial (DANN) training of a classifier on labelled source and unlabelled target data."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
import torch.nn.functional as F
from monai.engines import SupervisedTrainer
from monai.engines.utils import IterationEvents
from monai.utils.enums import CommonKeys as Keys
from torch import nn

from monai_kd.engines.steps import BatchCycler, cat_batches, like_input, optimisation_step, prepare_inputs
from monai_kd.networks.gradient_reversal import dann_coefficient
from monai_kd.networks.wrappers import unwrap_module

__all__ = ["DomainAdversarialTrainer"]

DANN_COEFFICIENT = "dann_coefficient"
LOSS_TASK = "loss_task"
LOSS_DOMAIN = "loss_domain"
DOMAIN_ACCURACY = "domain_accuracy"


class DomainAdversarialTrainer(SupervisedTrainer):
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
        if kwargs.get("accumulation_steps", 1) != 1:
            raise ValueError("DomainAdversarialTrainer does not support accumulation_steps > 1.")
        if target_data_loader is None:
            raise ValueError("DomainAdversarialTrainer needs a target_data_loader (unlabelled target-domain data).")
        inner = unwrap_module(network)
        if not (callable(getattr(inner, "domain_logits", None)) and hasattr(inner, "coefficient")):
            raise TypeError(
                f"{type(inner).__name__} has no domain_logits()/coefficient; wrap the classifier in "
                "monai_kd.networks.domain_adversarial.DomainAdversarialNetwork."
            )
        super().__init__(
            device=device,
            max_epochs=max_epochs,
            train_data_loader=train_data_loader,
            network=network,
            optimizer=optimizer,
            loss_function=loss_function,
            **kwargs,
        )
        self.target_batches = BatchCycler(target_data_loader)
        self.domain_weight = domain_weight
        self.gamma = gamma

    def _iteration(  # type: ignore[override]
        self, engine: DomainAdversarialTrainer, batchdata: dict[str, torch.Tensor]
    ) -> dict:
        """One DANN step: source + target forward, task + domain loss, backward, optimizer step."""
        inputs, targets, args, kwargs = prepare_inputs(engine, batchdata)
        net = unwrap_module(engine.network)
        progress = (engine.state.iteration - 1) / max(engine.state.max_epochs * engine.state.epoch_length, 1)
        net.coefficient = dann_coefficient(progress, engine.gamma)
        engine.state.output = {Keys.IMAGE: inputs, Keys.LABEL: targets, DANN_COEFFICIENT: net.coefficient}
        engine.network.train()
        if engine.domain_weight == 0:  # source-only ablation: the target domain is never seen

            def source_only_loss() -> torch.Tensor:
                pred = engine.inferer(inputs, engine.network, *args, **kwargs)
                engine.state.output[Keys.PRED] = pred
                engine.fire_event(IterationEvents.FORWARD_COMPLETED)
                task = engine.loss_function(pred, targets).mean()
                engine.state.output[LOSS_TASK] = float(task.detach())
                engine.state.output[LOSS_DOMAIN] = 0.0
                return task

            optimisation_step(engine, source_only_loss)
            return engine.state.output

        target_batch = engine.target_batches.next()
        if target_batch is None:
            raise ValueError("target_data_loader yielded no batch.")
        target_inputs = engine.prepare_batch(target_batch, engine.state.device, engine.non_blocking, **engine.to_kwargs)
        target_inputs = target_inputs[0] if isinstance(target_inputs, (tuple, list)) else target_inputs

        def compute_loss() -> torch.Tensor:
            n_source = inputs.shape[0]
            if target_inputs.shape[1:] == inputs.shape[1:]:
                pred = engine.inferer(cat_batches([inputs, target_inputs]), engine.network, *args, **kwargs)
                pred, domain_logits = like_input(pred[:n_source], inputs), net.domain_logits()
            else:
                pred = engine.inferer(inputs, engine.network, *args, **kwargs)
                source_domain = net.domain_logits()
                engine.inferer(target_inputs, engine.network, *args, **kwargs)
                domain_logits = torch.cat([source_domain, net.domain_logits()])
            engine.state.output[Keys.PRED] = pred
            engine.fire_event(IterationEvents.FORWARD_COMPLETED)
            domains = torch.zeros(domain_logits.shape[0], dtype=torch.long, device=domain_logits.device)
            domains[n_source:] = 1
            task = engine.loss_function(pred, targets).mean()
            domain = F.cross_entropy(domain_logits.float(), domains)
            engine.state.output[LOSS_TASK] = float(task.detach())
            engine.state.output[LOSS_DOMAIN] = float(domain.detach())
            engine.state.output[DOMAIN_ACCURACY] = float((domain_logits.argmax(dim=1) == domains).float().mean())
            return task + engine.domain_weight * domain

        optimisation_step(engine, compute_loss)
        return engine.state.output
