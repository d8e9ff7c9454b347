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
