"""The parts of a training iteration every monai_kd trainer shares.

MONAI's ``SupervisedTrainer._iteration`` keeps batch preparation and the optimisation step inline; the
distillation trainers need their own forward passes (teachers, several students, unlabelled batches) but
the same step around them. These two functions are that step, so each trainer's ``_iteration`` only says
what is computed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import torch
from monai.engines import SupervisedTrainer
from monai.engines.utils import IterationEvents
from monai.utils import convert_to_dst_type, convert_to_tensor
from monai.utils.enums import CommonKeys as Keys


def prepare_inputs(engine: SupervisedTrainer, batchdata: Any) -> tuple[Any, Any, tuple, dict]:
    """Move a batch to the engine's device with its ``prepare_batch``; return ``(inputs, targets, args, kwargs)``.

    Raises:
        ValueError: ``batchdata`` is ``None``.
    """
    if batchdata is None:
        raise ValueError("Must provide batch data for current iteration.")
    batch = engine.prepare_batch(batchdata, engine.state.device, engine.non_blocking, **engine.to_kwargs)
    if len(batch) == 2:
        return batch[0], batch[1], (), {}
    return batch[0], batch[1], batch[2], batch[3]


def optimisation_step(
    engine: SupervisedTrainer,
    compute_loss: Callable[[], torch.Tensor],
    after_backward: Callable[[], None] | None = None,
) -> torch.Tensor:
    """Zero the gradients, compute the loss (under autocast with AMP), back-propagate and step the optimizer.

    ``compute_loss`` runs the forward passes, stores predictions in ``engine.state.output`` and fires
    ``FORWARD_COMPLETED``; this function stores the loss under ``Keys.LOSS`` and fires ``LOSS_COMPLETED``,
    ``BACKWARD_COMPLETED`` and ``MODEL_COMPLETED`` in MONAI's order, so MONAI handlers behave as with
    ``SupervisedTrainer``.

    Args:
        engine: the trainer (its ``optimizer``, ``amp``, ``scaler`` and ``optim_set_to_none`` are used).
        compute_loss: callable returning the scalar loss of this iteration.
        after_backward: optional callable run after ``BACKWARD_COMPLETED``, before the optimizer step (with AMP
            the gradients are unscaled first so it sees their true values).

    Returns:
        the loss tensor.
    """
    engine.optimizer.zero_grad(set_to_none=engine.optim_set_to_none)
    use_amp = bool(engine.amp and engine.scaler is not None)
    with torch.autocast("cuda", enabled=use_amp, **(engine.amp_kwargs if use_amp else {})):
        loss = compute_loss().mean()
    engine.state.output[Keys.LOSS] = loss
    engine.fire_event(IterationEvents.LOSS_COMPLETED)
    if use_amp:
        engine.scaler.scale(loss).backward()
        engine.fire_event(IterationEvents.BACKWARD_COMPLETED)
        if after_backward is not None:
            engine.scaler.unscale_(engine.optimizer)
            after_backward()
        engine.scaler.step(engine.optimizer)
        engine.scaler.update()
    else:
        loss.backward()
        engine.fire_event(IterationEvents.BACKWARD_COMPLETED)
        if after_backward is not None:
            after_backward()
        engine.optimizer.step()
    engine.fire_event(IterationEvents.MODEL_COMPLETED)
    return loss


class BatchCycler:
    """Draw batches from a second loader alongside the engine's own, restarting it whenever it is exhausted.

    Used by trainers that pair every batch of ``train_data_loader`` with a batch of another loader (unlabelled
    target data) whose length may differ. The iterator persists across epochs.

    Args:
        loader: any iterable of batches (e.g. a ``DataLoader``), or ``None``.
    """

    def __init__(self, loader: Iterable | None) -> None:
        self.loader = loader
        self.restarts = 0
        self._iterator: Iterator | None = None

    def next(self) -> Any | None:
        """Next batch; ``None`` if there is no loader or it yields nothing even right after a restart."""
        if self.loader is None:
            return None
        if self._iterator is None:
            self._iterator = iter(self.loader)
        try:
            return next(self._iterator)
        except StopIteration:
            self._iterator = iter(self.loader)
            self.restarts += 1
        try:
            return next(self._iterator)
        except StopIteration:  # an empty loader
            self._iterator = None
            return None


def cat_batches(batches: Sequence[torch.Tensor]) -> torch.Tensor:
    """Concatenate batches along dim 0 as a plain tensor.

    MONAI ``MetaTensor`` batches carry per-item metadata; the concatenation of two of them cannot be sliced back
    into its parts, so the network runs on plain tensors and :func:`like_input` restores the metadata.
    """
    return torch.cat([convert_to_tensor(b, track_meta=False) for b in batches])


def like_input(pred: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
    """``pred`` with the metadata of ``inputs`` when it is a ``MetaTensor`` (as a plain forward pass would give)."""
    return convert_to_dst_type(pred, inputs, dtype=pred.dtype)[0]
