# Copyright (c) MONAI KD contributors.
# Licensed under the Apache License, Version 2.0.
"""Every training stage of every bundle resumable after a crash, without a line in the bundles' configs.

:func:`resumable_training` is what ``monai-kd train`` / ``monai-kd run`` run a bundle inside: every MONAI trainer
that starts in the block gets, before its first epoch, :func:`attach_resume`:

- :func:`~monai_kd.handlers.finite_guard.nan_safe_best_metric` on every validator (a NaN key metric is no best);
- a :class:`~monai_kd.handlers.BatchShapeCheck` (2D images for a 3D network, or other channels: one line);
- a :class:`~monai_kd.handlers.NonFiniteGuard` (NaN / Inf stop the stage, naming epoch, iteration and culprit);
- a :class:`~monai_kd.handlers.TrainingCheckpoint` at ``<save_dir>/resume/<final_filename>`` (the stage is named
  after the final checkpoint its ``CheckpointSaver`` writes: ``teacher.pt`` -> stage ``teacher``, ``model.pt`` ->
  ``student``);
- the ``CheckpointSaver``'s files written atomically (:class:`~monai_kd.handlers.AtomicSaveHandler`), and no final
  checkpoint written when the stage fails (MONAI saves one on any exception; a later stage would take a
  half-trained or diverged network for a finished one).

A trainer without a ``CheckpointSaver`` final file has no stable name and is left alone (``DistillationChain``
attaches its own checkpoint per link). Outside the CLI, add the handlers to a trainer's ``train_handlers``
yourself, or call :func:`attach_resume` before ``trainer.run()``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from monai.engines import Trainer
from monai.handlers import CheckpointSaver, StatsHandler
from monai.utils import optional_import

from monai_kd.handlers.batch_check import BatchShapeCheck
from monai_kd.handlers.finite_guard import NonFiniteGuard, nan_safe_best_metric
from monai_kd.handlers.pretrained_loader import PretrainedLoader
from monai_kd.handlers.training_checkpoint import AtomicSaveHandler, TrainingCheckpoint, attached_handlers, final_files

Events, _ = optional_import("ignite.engine", name="Events")

__all__ = ["attach_resume", "resumable_training"]

RESUME_DIR = "resume"
#: stage names of final files that do not say what they are (a bundle's ``model.pt`` is its distilled student)
STAGE_NAMES = {"model": "student"}


def attach_resume(engine: Any, resume: bool = True) -> TrainingCheckpoint | None:
    """Make ``engine``'s stage resumable and guarded; return its checkpoint handler (``None``: nothing to name it by).

    Args:
        engine: a MONAI trainer whose handlers are attached (call before ``run()``).
        resume: continue from the stage's checkpoint when there is one (``False``: train from scratch).
    """
    existing = getattr(engine, "_monai_kd_training_checkpoint", None)
    if existing is not None:
        return existing
    finals = final_files(engine)
    if not finals:
        return None
    for handler in attached_handlers(engine):
        if isinstance(handler, CheckpointSaver):
            for attr in ("_final_checkpoint", "_key_metric_checkpoint", "_interval_checkpoint"):
                checkpoint = getattr(handler, attr, None)
                if checkpoint is not None:
                    checkpoint.save_handler = AtomicSaveHandler(handler.save_dir, getattr(checkpoint.save_handler, "filename", None))
            if engine.has_event_handler(handler.exception_raised, Events.EXCEPTION_RAISED):
                engine.remove_event_handler(handler.exception_raised, Events.EXCEPTION_RAISED)
        elif isinstance(handler, StatsHandler) and engine.has_event_handler(handler.exception_raised, Events.EXCEPTION_RAISED):
            # it logs a traceback above the CLI's one-line answer to bad input; an unexpected error still shows one
            engine.remove_event_handler(handler.exception_raised, Events.EXCEPTION_RAISED)
    # ignite swallows an exception when the EXCEPTION_RAISED handlers it has do not raise (an emptied list too)
    engine.add_event_handler(Events.EXCEPTION_RAISED, _reraise)
    final = finals[0]
    path = final.parent / RESUME_DIR / final.name
    teacher_files = [
        f for h in attached_handlers(engine) if isinstance(h, PretrainedLoader)
        for f in ([h.checkpoint] if isinstance(h.checkpoint, (str, os.PathLike)) else h.checkpoint)
    ]
    for handler in attached_handlers(engine):  # a NaN val_auc (single-class split) is never a new best
        if hasattr(getattr(handler, "validator", None), "metric_cmp_fn"):
            nan_safe_best_metric(handler.validator)
    stage = STAGE_NAMES.get(final.stem, final.stem)
    BatchShapeCheck(stage=stage).attach(engine)
    NonFiniteGuard(stage=stage, checkpoint=path, teacher_files=teacher_files).attach(engine)  # before the checkpoint
    checkpoint = TrainingCheckpoint(path, stage=stage, resume=resume)
    checkpoint.attach(engine)
    return checkpoint


def _reraise(engine: Any, error: BaseException) -> None:
    raise error


@contextmanager
def resumable_training(resume: bool = True) -> Iterator[None]:
    """Within the block, every MONAI ``Trainer`` run gets :func:`attach_resume` first.

    Args:
        resume: continue each stage from its checkpoint, and skip finished stages (``False``: retrain them all).
    """
    original = Trainer.run

    def run(self: Trainer, *args: Any, **kwargs: Any) -> Any:
        attach_resume(self, resume=resume)
        return original(self, *args, **kwargs)

    Trainer.run = run  # type: ignore[method-assign]
    try:
        yield
    finally:
        Trainer.run = original  # type: ignore[method-assign]
