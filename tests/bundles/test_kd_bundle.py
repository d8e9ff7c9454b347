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
    # run on BreastMNIST by --dataset_dir: the card names BreastMNIST's classes, not the bundle's PneumoniaMNIST ones
    assert card["outputs"]["pred"]["channel_def"] == {"0": "malignant", "1": "normal, benign"}


def test_evaluate_reports_nll_and_ece_as_the_in_process_scores(trained, data_dir):
    """``evaluate.json`` on the validation split (what the evidence script selects by) gives the in-process scores."""
    import numpy as np
    from monai.bundle import ConfigParser

    from monai_kd.data import medmnist_datalist
    from monai_kd.evidence.evaluate import classification_scores, predict_logits
    from monai_kd.networks import load_pretrained

    configs = [CONFIG, str(BUNDLE / "configs" / "evaluate.json")]
    _run("run", trained, data_dir / "breastmnist", config=configs, eval_split="val")
    metrics = json.loads((trained / "eval" / "val_metrics.json").read_text())
    assert set(metrics) == {"teacher", "student_alone", "student_kd"}
    parser = ConfigParser()
    parser.read_config(CONFIG)
    net = load_pretrained(parser.get_parsed_content("network_def"), trained / "models" / "model.pt")
    items = medmnist_datalist(data_dir / "breastmnist", "val")
    x = torch.as_tensor(np.stack([i["image"] for i in items]))
    expected = classification_scores(predict_logits(net, x), np.array([i["label"] for i in items]), ece=True)
    got = metrics["student_kd"]
    assert got["test_acc"] == pytest.approx(expected["accuracy"], abs=1e-6)
    assert got["test_auc"] == pytest.approx(expected["auc"], abs=1e-6)
    assert got["test_nll"] == pytest.approx(expected["nll"], abs=1e-5)
    assert got["test_ece"] == pytest.approx(expected["ece"], abs=1e-5)
    assert len(json.loads((trained / "eval" / "val_predictions.json").read_text())["student_kd"]["labels"]) == 78


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


def test_evidence_script_records_come_from_evaluate_json(trained, data_dir):
    """``scripts/kd_evidence.py`` scores through ``evaluate.json``: the record keys of ``docs/results.json``."""
    from conftest import load_script

    ev = load_script("kd_evidence")
    ckpts = {k: str(trained / "models" / f) for k, f in (("teacher_ckpt", "teacher.pt"),
                                                          ("student_alone_ckpt", "student_alone.pt"),
                                                          ("student_ckpt", "model.pt"))}
    scores = ev._evaluate(trained, "breastmnist", 0, **ckpts)
    recorded = json.loads((BUNDLE / "docs" / "results.json").read_text())["runs"][0]
    keys = [k for k in recorded if k not in ("dataset", "model", "seed")]
    assert set(scores) == {"teacher", "student_alone", "student_kd"}
    assert all(list(s) == keys for s in scores.values())  # same fields, same order as the records on file
    test = json.loads((trained / "eval" / "metrics.json").read_text())["student_kd"]
    val = json.loads((trained / "eval" / "val_metrics.json").read_text())["student_kd"]
    assert scores["student_kd"]["nll"] == test["test_nll"] and scores["student_kd"]["val_nll"] == val["test_nll"]
    assert scores["student_kd"]["val_auc"] == val["test_auc"] and 0.0 < scores["student_kd"]["val_ece"] < 1.0
