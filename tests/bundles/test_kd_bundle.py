"""The baseline KD bundle run in-process on real data with tiny overrides, plus its error paths."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import pytest
import torch
from monai.bundle import run

from conftest import REPO

BUNDLE = REPO / "bundles" / "kd"
CONFIG = str(BUNDLE / "configs" / "train.json")
META = str(BUNDLE / "configs" / "metadata.json")


def _run(stage: str, root, dataset_dir, config=CONFIG, **override):
    run(stage, config_file=config, meta_file=META, bundle_root=str(root), dataset_dir=str(dataset_dir), **override)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, data_dir):
    """All three stages on BreastMNIST, one short epoch each (wiring, not accuracy)."""
    root = tmp_path_factory.mktemp("kd")
    _run("run", root, data_dir / "breastmnist", teacher_epochs=1, max_epochs=2, batch_size=64)
    return root


def test_train_writes_every_checkpoint(trained):
    names = sorted(p.name for p in (trained / "models").iterdir())
    assert names == ["model.pt", "student_alone.pt", "teacher.pt"]
    state = torch.load(trained / "models" / "model.pt", weights_only=True)
    assert "fc.weight" in state and state["fc.weight"].shape == (2, 64)


def test_evaluate_reports_all_models_on_test_split(trained, data_dir):
    configs = [CONFIG, str(BUNDLE / "configs" / "evaluate.json")]
    _run("run", trained, data_dir / "breastmnist", config=configs)
    metrics = json.loads((trained / "eval" / "metrics.json").read_text())
    assert set(metrics) == {"teacher", "student_alone", "student_kd"}
    for entry in metrics.values():
        assert 0.0 <= entry["test_auc"] <= 1.0 and 0.0 <= entry["test_acc"] <= 1.0
    assert metrics["teacher"]["parameters"] >= 5 * metrics["student_kd"]["parameters"]
    # the model card is written by the evaluation, from its own per-sample predictions
    card = json.loads((trained / "eval" / "model_card.json").read_text())
    assert set(card["models"]) == {"student_kd", "teacher", "student_alone"}
    test = card["models"]["student_kd"]["test"]
    assert test["samples"] == 156  # BreastMNIST test split
    assert test["accuracy"]["value"] == pytest.approx(metrics["student_kd"]["test_acc"], abs=1e-6)
    assert test["auc"]["value"] == pytest.approx(metrics["student_kd"]["test_auc"], abs=1e-4)
    low, high = test["auc"]["ci95"]
    assert low <= test["auc"]["value"] <= high
    assert card["training_data"]["splits"]["train"]["images"] == 546
    assert card["input_contract"]["network_input"]["image"]["num_channels"] == 1
    assert card["input_contract"]["modality"] == ["DX", "CR"] and card["input_contract"]["dimensionality"] == [2]
    assert "CC BY 4.0" in card["licence"]["training_data"] and "breastmnist" in card["training_data"]["folder"]
    assert card["decision_rule"]["threshold"] == 0.5 and card["card_version"].startswith("0.1.0+card.")
    assert "student_kd" in (trained / "eval" / "model_card.md").read_text()


def test_inference_on_png_files(trained, pneumonia_pngs):
    run(
        "run",
        config_file=str(BUNDLE / "configs" / "inference.json"),
        meta_file=META,
        bundle_root=str(trained),
        dataset_dir=str(pneumonia_pngs),
    )
    with open(trained / "eval" / "predictions.csv") as f:
        rows = list(csv.reader(f))
    assert len(rows) == 8
    probs = [[float(v) for v in row[1:]] for row in rows]
    assert all(abs(sum(p) - 1.0) < 1e-4 for p in probs)


def test_student_stage_alone_without_teacher_checkpoint_names_the_file(tmp_path, data_dir):
    with pytest.raises(Exception) as info:
        _run("run_student", tmp_path, data_dir / "breastmnist", max_epochs=1)
    assert "teacher.pt" in _chain(info.value)


def test_missing_dataset_dir_is_named(tmp_path):
    with pytest.raises(Exception) as info:
        _run("run_teacher", tmp_path, tmp_path / "no_such_dir", teacher_epochs=1)
    assert "no_such_dir" in _chain(info.value)


def test_cli_reports_one_line_error(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "monai_kd.cli", "train", str(BUNDLE), "--stage", "student",
         "--bundle_root", str(tmp_path), "--dataset_dir", str(tmp_path / "missing")],
        capture_output=True, text=True, cwd=REPO,
    )
    assert proc.returncode == 2
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("monai-kd: error:") and "missing" in last
    assert "Traceback" not in proc.stderr


def _chain(error: BaseException) -> str:
    text = []
    while error is not None:
        text.append(str(error))
        error = error.__cause__ or error.__context__
    return " | ".join(text)
