"""After evaluation, measure a student's fidelity to its teacher and the CKA between their layers."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

import torch
from monai.data import MetaTensor
from monai.engines.utils import default_prepare_batch
from monai.inferers import Inferer, SimpleInferer
from monai.utils import optional_import
from torch import nn

from monai_kd.io.atomic import atomic_paths
from monai_kd.metrics.cka import cka_matrix, save_cka_heatmap
from monai_kd.metrics.fidelity import FidelityMetric
from monai_kd.networks.feature_tap import FeatureTap
from monai_kd.networks.wrappers import unwrap_module

if TYPE_CHECKING:
    from ignite.engine import Engine, Events
else:
    Engine, _ = optional_import("ignite.engine", name="Engine")
    Events, _ = optional_import("ignite.engine", name="Events")


class FidelityCKAHandler:
    """On ``COMPLETED`` of an evaluator, compare ``student`` with ``teacher`` over a loader and save the result.

    One pass over ``data_loader`` (default: the engine's own loader) with both networks in eval mode and no
    gradients gives the fidelity (:class:`monai_kd.metrics.FidelityMetric`: top-1 agreement for classification,
    Dice of the argmax masks for segmentation) and the linear CKA matrix (:func:`monai_kd.metrics.cka_matrix`)
    between ``teacher_layers`` (rows) and ``student_layers`` (columns), tapped by name with
    :class:`monai_kd.networks.FeatureTap`. Written into ``output_dir`` (atomically):

    - ``<name>_fidelity_cka.json``: ``{"name", "fidelity", "num_samples", "teacher_layers", "student_layers",
      "cka", "heatmap"}`` with ``cka`` the matrix as nested lists;
    - ``<name>_cka.png``: the heatmap (unless ``heatmap=False``; needs matplotlib).

    CKA needs all samples' features at once, so at most ``max_samples`` samples are used (features are kept
    flattened in float32 on the CPU). The networks' train/eval modes are restored afterwards, and the taps removed.

    Args:
        student: the student network.
        teacher: the teacher network.
        output_dir: folder for the JSON and PNG files.
        student_layers: student layers (``named_modules`` names) for the CKA columns.
        teacher_layers: teacher layers for the CKA rows.
        data_loader: loader to measure on; default the attached engine's ``data_loader``.
        name: prefix of the output files and title of the heatmap, e.g. ``"s1"``.
        max_samples: cap on the number of samples (``None``: the whole loader).
        prepare_batch: ``prepare_batch(batchdata, device, non_blocking)`` returning the inputs first; default the
            engine's ``prepare_batch`` (MONAI's ``default_prepare_batch`` without an engine).
        inferer: how to run each network; default ``SimpleInferer`` (feature taps need a whole-input forward).
        task: ``"classification"`` / ``"segmentation"`` for the fidelity; default by output rank.
        metric_name: if given, the fidelity is also stored in ``engine.state.metrics[metric_name]``.
        device: device for the pass; default the engine's ``state.device``, else CPU.
        heatmap: also write the PNG heatmap (``"heatmap"`` is ``null`` in the JSON otherwise).
    """

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module,
        output_dir: str | os.PathLike,
        student_layers: Sequence[str],
        teacher_layers: Sequence[str],
        data_loader: Iterable | None = None,
        name: str = "student",
        max_samples: int | None = 512,
        prepare_batch: Callable | None = None,
        inferer: Inferer | None = None,
        task: str | None = None,
        metric_name: str | None = None,
        device: str | torch.device | None = None,
        heatmap: bool = True,
    ) -> None:
        if not student_layers or not teacher_layers:
            raise ValueError("FidelityCKAHandler needs at least one student layer and one teacher layer.")
        if max_samples is not None and max_samples < 2:
            raise ValueError(f"max_samples must be >= 2 (CKA compares samples), got {max_samples}.")
        self.student = student
        self.teacher = teacher
        self.output_dir = os.fspath(output_dir)
        self.student_layers = list(student_layers)
        self.teacher_layers = list(teacher_layers)
        self.data_loader = data_loader
        self.name = name
        self.max_samples = max_samples
        self.prepare_batch = prepare_batch
        self.inferer = SimpleInferer() if inferer is None else inferer
        self.task = task
        self.metric_name = metric_name
        self.device = device
        self.heatmap = heatmap
        self.last_result: dict[str, Any] = {}
        FidelityMetric(task)  # validate ``task`` now rather than after a whole evaluation

    def attach(self, engine: Engine) -> None:
        """Measure and write the files when ``engine`` completes."""
        engine.add_event_handler(Events.COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        """Run the measurement over the loader and write the JSON and PNG files."""
        loader = self.data_loader if self.data_loader is not None else getattr(engine, "data_loader", None)
        if loader is None:
            raise ValueError("FidelityCKAHandler has no data_loader and the engine has none either.")
        device = self.device or getattr(engine.state, "device", None) or "cpu"
        prepare_batch = self.prepare_batch or getattr(engine, "prepare_batch", default_prepare_batch)
        result = self.compute(loader, device, prepare_batch)
        if self.metric_name:
            engine.state.metrics[self.metric_name] = result["fidelity"]

    def compute(
        self, loader: Iterable, device: str | torch.device = "cpu", prepare_batch: Callable = default_prepare_batch
    ) -> dict[str, Any]:
        """Measure fidelity and CKA over ``loader``, write the files and return the JSON content."""
        modes = (self.student.training, self.teacher.training)
        self.student.eval()
        self.teacher.eval()
        fidelity = FidelityMetric(self.task)
        feats_s: dict[str, list[torch.Tensor]] = {layer: [] for layer in self.student_layers}
        feats_t: dict[str, list[torch.Tensor]] = {layer: [] for layer in self.teacher_layers}
        seen = 0
        try:
            with (
                FeatureTap(unwrap_module(self.student), self.student_layers, detach=True) as s_tap,
                FeatureTap(unwrap_module(self.teacher), self.teacher_layers, detach=True) as t_tap,
                torch.no_grad(),
            ):
                for batchdata in loader:
                    inputs = prepare_batch(batchdata, device, False)[0]
                    # plain tensor: slicing a batched MetaTensor can fail on per-item metadata
                    inputs = inputs.as_tensor() if isinstance(inputs, MetaTensor) else inputs
                    if self.max_samples is not None:
                        inputs = inputs[: self.max_samples - seen]
                    fidelity(y_pred=self.inferer(inputs, self.student), y=self.inferer(inputs, self.teacher))
                    for tap, store in ((s_tap, feats_s), (t_tap, feats_t)):
                        for layer in store:
                            store[layer].append(tap.features[layer].reshape(inputs.shape[0], -1).float().cpu())
                    seen += inputs.shape[0]
                    if self.max_samples is not None and seen >= self.max_samples:
                        break
        finally:
            self.student.train(modes[0])
            self.teacher.train(modes[1])
        if seen < 2:
            raise ValueError(f"FidelityCKAHandler needs at least 2 samples, the loader gave {seen}.")
        matrix = cka_matrix(
            {layer: torch.cat(v) for layer, v in feats_t.items()}, {layer: torch.cat(v) for layer, v in feats_s.items()}
        )
        png = os.path.join(self.output_dir, f"{self.name}_cka.png")
        if self.heatmap:
            title = f"linear CKA: teacher vs {self.name}"
            save_cka_heatmap(matrix, self.teacher_layers, self.student_layers, png, title=title)
        result = {
            "name": self.name,
            "fidelity": float(fidelity.aggregate()),
            "num_samples": seen,
            "teacher_layers": self.teacher_layers,
            "student_layers": self.student_layers,
            "cka": [[None if math.isnan(v) else v for v in row] for row in matrix.tolist()],  # NaN is not valid JSON
            "heatmap": os.path.basename(png) if self.heatmap else None,
        }
        with atomic_paths(os.path.join(self.output_dir, f"{self.name}_fidelity_cka.json")) as (tmp,):
            _dump_json(result, tmp)
        self.last_result = result
        return result


def _dump_json(content: dict, path: str) -> None:
    with open(path, "w") as f:
        json.dump(content, f, indent=2)
