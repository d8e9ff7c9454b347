"""Log teacher weights, pseudo-label acceptance and the DANN coefficient during distillation training."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch
from monai.utils import optional_import

if TYPE_CHECKING:
    from ignite.engine import Engine, Events
    from torch.utils.tensorboard import SummaryWriter
else:
    Engine, _ = optional_import("ignite.engine", name="Engine")
    Events, _ = optional_import("ignite.engine", name="Events")
    SummaryWriter, _ = optional_import("torch.utils.tensorboard", name="SummaryWriter")


class DistillationStatsHandler:
    """Every ``interval`` iterations, log the distillation statistics found in ``engine.state.output``.

    * per-teacher weights (``weight_keys``, default ``teacher_weights`` and ``teacher_weights_unlabeled`` written
      by :class:`monai_kd.engines.distillation_trainer.DistillationTrainer` and
      :class:`monai_kd.engines.semi_supervised_trainer.SemiSupervisedDistillationTrainer`): the mean weight of
      each teacher over the batch;
    * scalars (``scalar_keys``, default ``pseudo_label_rate`` and ``dann_coefficient``), averaged over the batch.

    The output may be MONAI's decollated list of per-item dicts or a single batch dict. Keys that are absent
    are skipped, so the handler suits every trainer of this package. Values go to the python logger
    ``logger_name`` (level INFO) and, when ``summary_writer`` or ``log_dir`` is given, to TensorBoard as scalars
    ``<tag_prefix><key>`` and ``<tag_prefix><key>/teacher_<k>`` at the engine's global iteration. The latest
    values are also kept in ``last_stats``.

    Args:
        interval: log every ``interval`` iterations.
        logger_name: name of the python logger.
        summary_writer: a ``torch.utils.tensorboard.SummaryWriter`` to write scalars to.
        log_dir: directory for a new ``SummaryWriter`` when ``summary_writer`` is not given.
        tag_prefix: prefix of the TensorBoard tags.
        weight_keys: output keys holding per-instance teacher weights ``(K,)`` per item.
        scalar_keys: output keys holding scalars.
    """

    def __init__(
        self,
        interval: int = 1,
        logger_name: str = "DistillationStats",
        summary_writer: Any | None = None,
        log_dir: str | None = None,
        tag_prefix: str = "",
        weight_keys: Sequence[str] = ("teacher_weights", "teacher_weights_unlabeled"),
        scalar_keys: Sequence[str] = ("pseudo_label_rate", "dann_coefficient"),
    ) -> None:
        if interval < 1:
            raise ValueError(f"interval must be >= 1, got {interval}.")
        self.interval = interval
        self.logger = logging.getLogger(logger_name)
        self._owns_writer = summary_writer is None and log_dir is not None
        self.writer = SummaryWriter(log_dir=log_dir) if self._owns_writer else summary_writer
        self.tag_prefix = tag_prefix
        self.weight_keys = list(weight_keys)
        self.scalar_keys = list(scalar_keys)
        self.last_stats: dict[str, float | list[float]] = {}

    def attach(self, engine: Engine) -> None:
        """Log every ``interval`` completed iterations; flush TensorBoard at the end of every epoch."""
        engine.add_event_handler(Events.ITERATION_COMPLETED(every=self.interval), self)
        if self.writer is not None:
            engine.add_event_handler(Events.EPOCH_COMPLETED, lambda e: self.writer.flush())

    def __call__(self, engine: Engine) -> None:
        """Collect the statistics of the current output and log them."""
        output = engine.state.output
        items = output if isinstance(output, list) else [output]
        items = [item for item in items if isinstance(item, dict)]
        stats: dict[str, float | list[float]] = {}
        for key in self.weight_keys:
            values = [torch.as_tensor(item[key]) for item in items if item.get(key) is not None]
            if values:
                k = values[0].shape[-1]
                stats[key] = torch.cat([v.detach().float().reshape(-1, k) for v in values]).mean(dim=0).tolist()
        for key in self.scalar_keys:
            values = [torch.as_tensor(item[key]).float().reshape(-1) for item in items if item.get(key) is not None]
            if values:
                stats[key] = float(torch.cat(values).mean())
        self.last_stats = stats
        if not stats:
            return
        step = engine.state.iteration
        text = " ".join(
            f"{key}=[{', '.join(f'{v:.4f}' for v in value)}]" if isinstance(value, list) else f"{key}={value:.4f}"
            for key, value in stats.items()
        )
        self.logger.info(f"epoch {engine.state.epoch} iteration {step}: {text}")
        if self.writer is not None:
            for key, value in stats.items():
                if isinstance(value, list):
                    for k, v in enumerate(value):
                        self.writer.add_scalar(f"{self.tag_prefix}{key}/teacher_{k}", v, step)
                else:
                    self.writer.add_scalar(f"{self.tag_prefix}{key}", value, step)

    def close(self) -> None:
        """Close the ``SummaryWriter`` if this handler created it (from ``log_dir``)."""
        if self._owns_writer and self.writer is not None:
            self.writer.close()
