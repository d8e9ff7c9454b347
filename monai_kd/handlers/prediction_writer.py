"""Write an evaluator's per-sample predictions, labels and subjects to JSON, for intervals and model cards."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
from monai.utils import optional_import

from monai_kd.handlers.output_transforms import from_engine_stacked
from monai_kd.io.atomic import atomic_paths

if TYPE_CHECKING:
    from ignite.engine import Engine, Events
else:
    Engine, _ = optional_import("ignite.engine", name="Engine")
    Events, _ = optional_import("ignite.engine", name="Events")

__all__ = ["PredictionWriter"]


class PredictionWriter:
    """Collect per-sample class probabilities, labels and subjects of an evaluation run; write them on completion.

    Aggregate metrics (``metrics.json``) cannot give a confidence interval; the model card
    (:mod:`monai_kd.model_card`) resamples these per-sample records by subject. Each iteration appends the
    batch's predictions and labels (``output_transform`` of the decollated output, default ``pred`` and ``label``
    stacked) and the batch's ``subject_key`` entries (``None`` for every sample when the batch has none: then each
    sample counts as its own subject). On ``COMPLETED`` the records are stored under ``name`` in the JSON file
    ``filepath`` (other names kept, written atomically), as ``{"probs": [[...]], "labels": [...], "subjects": [...]}``.

    With ``task="segmentation"`` each sample's foreground pixel counts are stored instead, as
    ``{"tp": [...], "fp": [...], "fn": [...], "subjects": [...], "reduction": "pooled"}``: the prediction and the label
    (one-hot ``(B, C, *spatial)`` with ``C > 1``, foreground = any class but 0; or one channel, foreground > 0.5) are
    compared pixel by pixel. Dice of the summed counts is what MONAI's ``ConfusionMatrix`` (``f1 score``, background
    excluded) reports for two classes.

    Args:
        filepath: JSON file to create or update, e.g. ``eval/predictions.json``.
        name: key of this run, e.g. ``"student_kd"``.
        output_transform: maps ``engine.state.output`` to ``(probabilities (B, C), labels (B,) or (B, 1))`` (or, for
            segmentation, ``(predictions, labels)`` of shape ``(B, C, *spatial)``).
        subject_key: batch key naming each sample's subject (person).
        task: ``"classification"`` or ``"segmentation"``.
    """

    def __init__(
        self,
        filepath: str | os.PathLike,
        name: str,
        output_transform: Callable[[Any], tuple] | None = None,
        subject_key: str = "subject",
        task: str = "classification",
    ) -> None:
        if task not in ("classification", "segmentation"):
            raise ValueError(f"PredictionWriter: task must be 'classification' or 'segmentation', got '{task}'.")
        self.task = task
        self.filepath = os.fspath(filepath)
        self.name = name
        self.output_transform = output_transform or from_engine_stacked(["pred", "label"])
        self.subject_key = subject_key
        self._probs: list[np.ndarray] = []
        self._labels: list[np.ndarray] = []
        self._subjects: list[Any] = []

    def attach(self, engine: Engine) -> None:
        """Collect on every iteration, reset on start, write on completion."""
        engine.add_event_handler(Events.STARTED, self._reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._collect)
        engine.add_event_handler(Events.COMPLETED, self)

    def detach(self, engine: Engine) -> None:
        """Remove the handlers :meth:`attach` added (an evaluator reused for several models gets one writer each)."""
        for event, handler in ((Events.STARTED, self._reset), (Events.ITERATION_COMPLETED, self._collect),
                               (Events.COMPLETED, self)):
            if engine.has_event_handler(handler, event):
                engine.remove_event_handler(handler, event)

    def _reset(self, engine: Engine) -> None:
        self._probs, self._labels, self._subjects = [], [], []

    def _collect(self, engine: Engine) -> None:
        probs, labels = (np.asarray(v.detach().cpu() if hasattr(v, "detach") else v) for v in self.output_transform(engine.state.output))
        if self.task == "segmentation":
            pred, true = _foreground(probs), _foreground(labels)
            counts = np.stack([(pred & true).sum(axis=1), (pred & ~true).sum(axis=1), (~pred & true).sum(axis=1)], axis=1)
            self._append(engine, counts.astype(np.float64), np.zeros(len(counts), dtype=np.int64))
            return
        probs = probs.reshape(probs.shape[0], -1)
        labels = labels.reshape(labels.shape[0], -1)
        if labels.shape[1] == probs.shape[1] and probs.shape[1] > 1:  # one-hot labels
            labels = labels.argmax(axis=1)
        self._append(engine, probs.astype(np.float64), labels.reshape(-1).astype(np.int64))

    def _append(self, engine: Engine, probs: np.ndarray, labels: np.ndarray) -> None:
        batch = engine.state.batch
        if isinstance(batch, dict):
            subjects = batch.get(self.subject_key)
        elif isinstance(batch, (list, tuple)) and batch and all(isinstance(b, dict) for b in batch):
            subjects = [b.get(self.subject_key) for b in batch]  # MONAI workflows decollate the batch
            subjects = None if all(s is None for s in subjects) else subjects
        else:
            subjects = None
        subjects = [None] * len(labels) if subjects is None else [None if s is None else str(s) for s in subjects]
        if len(subjects) != len(labels):
            raise ValueError(f"PredictionWriter: {len(subjects)} '{self.subject_key}' entries for {len(labels)} samples.")
        self._probs.append(probs)
        self._labels.append(labels)
        self._subjects += subjects

    def __call__(self, engine: Engine) -> None:
        """Merge this run's records into the file."""
        content: dict = {}
        if os.path.isfile(self.filepath):
            with open(self.filepath) as f:
                content = json.load(f)
        if self.task == "segmentation":
            counts = np.concatenate(self._probs) if self._probs else np.zeros((0, 3))
            content[self.name] = {
                "tp": counts[:, 0].astype(int).tolist(),
                "fp": counts[:, 1].astype(int).tolist(),
                "fn": counts[:, 2].astype(int).tolist(),
                "subjects": self._subjects,
                "reduction": "pooled",
            }
        else:
            content[self.name] = {
                "probs": np.concatenate(self._probs).round(6).tolist() if self._probs else [],
                "labels": np.concatenate(self._labels).tolist() if self._labels else [],
                "subjects": self._subjects,
            }
        with atomic_paths(self.filepath) as (tmp,), open(tmp, "w") as f:
            json.dump(content, f)


def _foreground(x: np.ndarray) -> np.ndarray:
    """Boolean foreground ``(B, pixels)`` of a one-hot / probability ``(B, C, ...)`` map (C > 1) or one channel."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim >= 3 and x.shape[1] > 1:
        return (x.argmax(axis=1) > 0).reshape(x.shape[0], -1)
    return (x > 0.5).reshape(x.shape[0], -1)
