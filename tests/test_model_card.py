"""Model cards come from the evaluated numbers, and a model file that does not match its card is refused."""

from __future__ import annotations

import json
import shutil

import pytest

from conftest import REPO
from monai_kd.model_card import split_sizes, verify_model_file, write_model_card


@pytest.fixture
def evaluated(tmp_path):
    """A bundle folder as an evaluation leaves it: metadata, metrics, per-sample predictions and a model file."""
    root = tmp_path / "kd"
    (root / "configs").mkdir(parents=True)
    shutil.copy(REPO / "bundles" / "kd" / "configs" / "metadata.json", root / "configs" / "metadata.json")
    (root / "eval").mkdir()
    (root / "models").mkdir()
    (root / "models" / "model.pt").write_bytes(b"weights v1")
    # four people, two images each; the student is right on 6 of 8 images
    labels = [0, 0, 1, 1, 0, 1, 1, 0]
    p1 = [0.2, 0.4, 0.9, 0.7, 0.6, 0.3, 0.8, 0.1]  # wrong on images 4 and 5
    predictions = {
        "student_kd": {"probs": [[1 - p, p] for p in p1], "labels": labels, "subjects": list("aabbccdd")},
        "teacher": {"probs": [[1 - y, y] for y in labels], "labels": labels, "subjects": list("aabbccdd")},
    }
    metrics = {"student_kd": {"test_acc": 0.75, "parameters": 100}, "teacher": {"test_acc": 1.0, "parameters": 1000}}
    (root / "eval" / "predictions.json").write_text(json.dumps(predictions))
    (root / "eval" / "metrics.json").write_text(json.dumps(metrics))
    return root


def test_card_holds_the_evaluated_numbers_with_subject_intervals(evaluated):
    card = write_model_card(evaluated, "student_kd", teachers=["teacher"], splits={"test": {"images": 8, "subjects": 4}})
    test = card["models"]["student_kd"]["test"]
    assert test["accuracy"]["value"] == pytest.approx(0.75)
    assert test["subjects"] == 4 and test["resampled_by"] == "subject"
    low, high = test["accuracy"]["ci95"]
    assert 0.25 <= low <= 0.75 <= high <= 1.0  # per-person accuracies are 1, 1, 0, 1
    assert card["size"]["teacher_to_student"] == [10.0]
    assert card["exports"][0]["file"] == "models/model.pt"
    assert json.loads((evaluated / "eval" / "model_card.json").read_text())["models"]["teacher"]["test"]["auc"]["value"] == 1.0
    md = (evaluated / "eval" / "model_card.md").read_text()
    assert "0.750 [" in md and "do not edit by hand" in md


def test_a_changed_evaluation_changes_the_card(evaluated):
    first = write_model_card(evaluated, "student_kd")
    predictions = json.loads((evaluated / "eval" / "predictions.json").read_text())
    predictions["student_kd"]["probs"][4] = [0.9, 0.1]  # now right on image 4
    (evaluated / "eval" / "predictions.json").write_text(json.dumps(predictions))
    second = write_model_card(evaluated, "student_kd")
    assert first["models"]["student_kd"]["test"]["accuracy"]["value"] == pytest.approx(0.75)
    assert second["models"]["student_kd"]["test"]["accuracy"]["value"] == pytest.approx(0.875)


def test_a_tampered_model_file_is_refused(evaluated):
    write_model_card(evaluated, "student_kd")
    card_file, model = evaluated / "eval" / "model_card.json", evaluated / "models" / "model.pt"
    assert verify_model_file(card_file, model)["bundle"] == "kd"
    model.write_bytes(b"weights v2")
    with pytest.raises(ValueError, match="does not match its model card"):
        verify_model_file(card_file, model)
    other = evaluated / "models" / "model.onnx"
    other.write_bytes(b"x")
    with pytest.raises(ValueError, match="records no model file named model.onnx"):
        verify_model_file(card_file, other)


def test_missing_evaluation_and_unknown_model_are_named(evaluated):
    with pytest.raises(KeyError, match="no evaluation of 'student_x'"):
        write_model_card(evaluated, "student_x")
    (evaluated / "eval" / "predictions.json").unlink()
    with pytest.raises(FileNotFoundError, match="predictions file not found"):
        write_model_card(evaluated, "student_kd")


def test_split_sizes_count_subjects_where_known():
    sizes = split_sizes({"train": [{"subject": "a"}, {"subject": "a"}, {"subject": "b"}], "test": [{}, {}]})
    assert sizes == {"train": {"images": 3, "subjects": 2}, "test": {"images": 2, "subjects": None}}


def test_export_refresh_records_new_checksums(evaluated):
    from monai_kd.model_card import refresh_exports

    write_model_card(evaluated, "student_kd")
    (evaluated / "models" / "model.onnx").write_bytes(b"exported after the evaluation")
    card = refresh_exports(evaluated)
    assert [e["file"] for e in card["exports"]] == ["models/model.pt", "models/model.onnx"]
    assert verify_model_file(evaluated / "eval" / "model_card.json", evaluated / "models" / "model.onnx")
    assert refresh_exports(evaluated / "elsewhere") is None  # no card: nothing to refresh


def test_segmentation_card_pools_counts_and_resamples_patients(evaluated, tmp_path):
    from monai_kd.model_card import card_version, render_markdown

    # two patients, two slices each; pooled Dice = 2*30 / (2*30 + 10 + 10) = 0.75 (what ConfusionMatrix f1 reports)
    record = {"tp": [10, 0, 20, 0], "fp": [5, 0, 5, 0], "fn": [5, 0, 5, 0], "subjects": ["p1", "p1", "p2", "p2"],
              "reduction": "pooled"}
    (evaluated / "eval" / "predictions.json").write_text(json.dumps({"s1": record, "teacher": record}))
    (evaluated / "eval" / "metrics.json").write_text(json.dumps({"s1": {"dice": 0.75, "parameters": 52},
                                                                  "teacher": {"dice": 0.8, "parameters": 1600}}))
    data = tmp_path / "brats"
    data.mkdir()
    (data / "SOURCE.txt").write_text("BraTS sample\nLicense: CC BY-NC-SA 3.0 (NON-COMMERCIAL).\nCite: Menze.\n\nmore\n")
    card = write_model_card(evaluated, "s1", teachers=["teacher"], data_dir=data, latency_file=tmp_path / "none.json")
    dice = card["models"]["s1"]["test"]["dice"]
    assert dice["value"] == pytest.approx(0.75)
    low, high = dice["ci95"]  # per-patient pooled Dice: p1 = 20/30, p2 = 40/50
    assert low == pytest.approx(2 / 3) and high == pytest.approx(0.8)
    assert card["models"]["s1"]["test"]["subjects"] == 2
    assert "only 2 subjects" in card["models"]["s1"]["test"]["warning"]  # two patients: no reliable interval
    assert "CC BY-NC-SA 3.0 (NON-COMMERCIAL). Cite: Menze." in card["licence"]["training_data"]
    assert card["latency"].startswith("not measured")
    assert card["card_version"] == card_version(card) and card["card_version"].startswith("0.1.0+card.")
    md = render_markdown(card)
    assert "| s1 | student | 52 | 4 | 2 | 0.750 [0.667, 0.800] |" in md and "NON-COMMERCIAL" in md


def test_mean_dice_records_and_latency_from_the_benchmark(evaluated, tmp_path):
    from monai_kd.model_card import write_segmentation_records

    items = [{"subject": "AV-WIDE/1"}, {"subject": "AV-WIDE/2"}]
    write_segmentation_records({"student": {"dice_per_image": [0.6, 0.8]}}, items, evaluated / "eval" / "predictions.json")
    (evaluated / "eval" / "metrics.json").write_text(json.dumps({"student": {"dice": 0.7, "parameters": 52}}))
    bench = {"machine": "cpu", "busy": False, "records": [
        {"bundle": "kd", "model": "student", "runtime": "eager", "threads": 1, "batch": 1, "median_s": 0.002},
        {"bundle": "kd", "model": "student", "runtime": "eager", "threads": 2, "batch": 1, "median_s": 0.001},
        {"bundle": "other", "model": "student", "runtime": "eager", "threads": 1, "batch": 1, "median_s": 9.0}]}
    (tmp_path / "bench.json").write_text(json.dumps(bench))
    card = write_model_card(evaluated, "student", latency_file=tmp_path / "bench.json")
    assert card["models"]["student"]["test"]["dice"]["value"] == pytest.approx(0.7)
    assert card["latency"]["median_ms"] == {"student": {"eager": 2.0}}
    with pytest.raises(ValueError, match="2 per-image Dice values of 'x' for 3 items"):
        write_segmentation_records({"x": {"dice_per_image": [0.1, 0.2]}}, items + items[:1], tmp_path / "p.json")


def test_configuration_metadata_replaces_the_default_form():
    from monai_kd.model_card import configuration_metadata

    meta = {"task": "seg", "input_contract": {"modality": ["OP"]},
            "configurations": {"classification": {"task": "cls", "input_contract": {"modality": ["MR"]}}}}
    assert configuration_metadata(meta)["task"] == "seg" and "configurations" not in configuration_metadata(meta)
    assert configuration_metadata(meta, "classification")["input_contract"] == {"modality": ["MR"]}
    with pytest.raises(KeyError, match="no configuration 'x'"):
        configuration_metadata(meta, "x")


def test_card_for_model_checks_the_card_beside_the_model(evaluated):
    from monai_kd.model_card import card_for_model

    model = evaluated / "models" / "model.pt"
    assert card_for_model(model) is None  # no card yet
    write_model_card(evaluated, "student_kd")
    assert card_for_model(model)["card_version"].startswith("0.1.0+card.")
    other = evaluated / "models" / "student_alone.pt"
    other.write_bytes(b"not in the card")
    assert card_for_model(other) is None  # the card does not describe it
    model.write_bytes(b"tampered")
    with pytest.raises(ValueError, match="does not match its model card"):
        card_for_model(model)


def test_card_names_the_classes_and_channels_of_the_run(evaluated):
    """A run on other data (BreastMNIST) or with colour input gets a card that says so, not the bundle's defaults."""
    default = write_model_card(evaluated, "student_kd")
    assert default["outputs"]["pred"]["channel_def"] == {"0": "normal", "1": "pneumonia"}
    assert "'pneumonia'" in default["decision_rule"]["text"]
    card = write_model_card(evaluated, "student_kd", in_channels=3, class_names=["malignant", "normal, benign"])
    assert card["outputs"]["pred"]["channel_def"] == {"0": "malignant", "1": "normal, benign"}
    assert "predict 'normal, benign' when" in card["decision_rule"]["text"]
    assert card["input_contract"]["channels"] == 3 and card["input_contract"]["network_input"]["image"]["num_channels"] == 3
    assert "Classes: 0 = malignant, 1 = normal, benign." in (evaluated / "eval" / "model_card.md").read_text()
