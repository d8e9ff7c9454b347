"""The closing summary comes from the evaluated numbers; third-party logs are quiet unless asked for."""

from __future__ import annotations

import json
import logging
import shutil
import warnings

import pytest

from conftest import REPO
from monai_kd.model_card import write_model_card
from monai_kd.run_summary import quiet_third_party, summary_table


@pytest.fixture
def evaluated(tmp_path):
    root = tmp_path / "kd"
    (root / "configs").mkdir(parents=True)
    shutil.copy(REPO / "bundles" / "kd" / "configs" / "metadata.json", root / "configs" / "metadata.json")
    (root / "eval").mkdir()
    (root / "models").mkdir()
    (root / "models" / "model.pt").write_bytes(b"weights")
    labels = [0, 0, 1, 1, 0, 1, 1, 0]
    p1 = [0.2, 0.4, 0.9, 0.7, 0.6, 0.3, 0.8, 0.1]  # right on 6 of 8
    predictions = {"student_kd": {"probs": [[1 - p, p] for p in p1], "labels": labels, "subjects": list("aabbccdd")},
                   "teacher": {"probs": [[1 - y, y] for y in labels], "labels": labels, "subjects": list("aabbccdd")}}
    (root / "eval" / "predictions.json").write_text(json.dumps(predictions))
    (root / "eval" / "metrics.json").write_text(json.dumps({
        "student_kd": {"test_acc": 0.75, "parameters": 77450}, "teacher": {"test_acc": 1.0, "parameters": 11172162},
        "student_alone": {"test_acc": 0.5, "parameters": 77450}}))
    return root


def _row(text: str, model: str) -> str:
    return next(line for line in text.splitlines() if line.startswith(model + " "))


def test_summary_holds_the_cards_numbers_and_follows_a_new_evaluation(evaluated):
    card = write_model_card(evaluated, "student_kd", teachers=["teacher"])
    text = summary_table(evaluated, "evaluate")
    acc = card["models"]["student_kd"]["test"]["accuracy"]
    low, high = acc["ci95"]
    row = _row(text, "student_kd")
    assert "student" in row and "77,450" in row and f"0.750 [{low:.3f}, {high:.3f}]" in row
    assert "11,172,162" in _row(text, "teacher")
    assert "resampled by subject" in text and card["card_version"] in text
    assert "also evaluated (eval/metrics.json, no interval): student_alone" in text
    assert str(evaluated / "eval" / "model_card.md") in text and str(evaluated / "models" / "model.pt") in text
    # a changed evaluation changes the card and therefore the summary
    predictions = json.loads((evaluated / "eval" / "predictions.json").read_text())
    predictions["student_kd"]["probs"][4] = [0.9, 0.1]  # now right on 7 of 8
    (evaluated / "eval" / "predictions.json").write_text(json.dumps(predictions))
    write_model_card(evaluated, "student_kd", teachers=["teacher"])
    assert "0.875 [" in _row(summary_table(evaluated, "evaluate"), "student_kd")


def test_summary_without_card_and_after_training_only(evaluated):
    (evaluated / "eval" / "predictions.json").unlink()
    text = summary_table(evaluated, "evaluate")
    assert "0.750" in _row(text, "student_kd") and "[no model card: no intervals]" in text
    torch = pytest.importorskip("torch")
    torch.save({"conv.weight": torch.zeros(4, 1, 3, 3), "bn.running_mean": torch.zeros(4), "fc.bias": torch.zeros(2)},
               evaluated / "models" / "student.pt")
    text = summary_table(evaluated, "train")
    assert "38" in _row(text, "student")  # 36 + 2 learnable values; BatchNorm statistics are not parameters
    assert "monai-kd evaluate" in text and "test n" not in text


def test_third_party_logs_and_deprecations_are_quiet_unless_verbose(caplog):
    names = ("torch.onnx", "onnxscript")
    levels = {n: logging.getLogger(n).level for n in names}
    try:
        quiet_third_party(verbose=True)
        assert {n: logging.getLogger(n).level for n in names} == levels  # --verbose changes nothing
        quiet_third_party()
        assert not logging.getLogger("torch.onnx._internal.exporter").isEnabledFor(logging.WARNING)
        assert not logging.getLogger("onnxscript.rewriter").isEnabledFor(logging.INFO)
        with warnings.catch_warnings(record=True) as caught:
            warnings.filterwarnings("default")  # what a fresh process shows
            quiet_third_party()
            warnings.warn("old API", DeprecationWarning)
            warnings.warn("a real problem", UserWarning)
        assert [str(w.message) for w in caught] == ["a real problem"]
    finally:
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)
