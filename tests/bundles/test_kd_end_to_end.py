"""The README's main job, shortened: every stage on real PneumoniaMNIST, evaluation, export (slow)."""

from __future__ import annotations

import json

import pytest
import torch

from monai_kd import cli

from conftest import REPO


@pytest.mark.slow
def test_pipeline_learns_on_pneumonia_and_exports(tmp_path, data_dir):
    cli.pipeline(
        str(REPO / "bundles" / "kd"),
        bundle_root=str(tmp_path),
        dataset_dir=str(data_dir / "pneumoniamnist"),
        teacher_epochs=2,
        max_epochs=3,
    )
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    # three short epochs already separate the classes well above chance on the real test split
    for model in ("teacher", "student_alone", "student_kd"):
        assert metrics[model]["test_auc"] > 0.85, (model, metrics[model])
    assert metrics["teacher"]["parameters"] > 100 * metrics["student_kd"]["parameters"]
    scripted = torch.jit.load(str(tmp_path / "models" / "model.ts"))
    assert scripted(torch.rand(2, 1, 28, 28)).shape == (2, 2)
    assert (tmp_path / "models" / "model.onnx").is_file()
