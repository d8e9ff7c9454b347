from __future__ import annotations

import json

import torch
from ignite.engine import Engine, Events

from monai_kd.handlers import PredictionWriter


def _engine(batches):
    def step(engine, batch):
        return [{"pred": p, "label": y} for p, y in zip(batch["pred"], batch["label"])]  # decollated, as MONAI does

    return Engine(step), batches


def test_writes_probabilities_labels_and_subjects_per_sample(tmp_path):
    batches = [
        {"pred": torch.tensor([[0.9, 0.1], [0.2, 0.8]]), "label": torch.tensor([[0], [1]]), "subject": ["p1", "p1"]},
        {"pred": torch.tensor([[0.4, 0.6]]), "label": torch.tensor([[0.0, 1.0]]), "subject": ["p2"]},  # one-hot label
    ]
    engine, data = _engine(batches)
    path = tmp_path / "predictions.json"
    path.write_text(json.dumps({"teacher": {"probs": [], "labels": [], "subjects": []}}))
    PredictionWriter(path, "student").attach(engine)
    engine.run(data, max_epochs=1)
    content = json.loads(path.read_text())
    assert set(content) == {"teacher", "student"}  # other entries kept
    assert content["student"] == {
        "probs": [[0.9, 0.1], [0.2, 0.8], [0.4, 0.6]],
        "labels": [0, 1, 1],
        "subjects": ["p1", "p1", "p2"],
    }


def test_batches_without_subjects_record_none(tmp_path):
    engine, data = _engine([{"pred": torch.tensor([[0.3, 0.7]]), "label": torch.tensor([1])}])
    PredictionWriter(tmp_path / "p.json", "m").attach(engine)
    engine.run(data, max_epochs=1)
    assert json.loads((tmp_path / "p.json").read_text())["m"]["subjects"] == [None]


def test_segmentation_counts_foreground_pixels_per_sample(tmp_path):
    # one-hot (B=2, C=2, 2x2): sample 0 predicts 2 foreground pixels, 1 right; label has 2 foreground pixels
    pred = torch.zeros(2, 2, 2, 2)
    label = torch.zeros(2, 2, 2, 2)
    pred_fg = torch.tensor([[[1, 1], [0, 0]], [[0, 0], [0, 0]]])
    label_fg = torch.tensor([[[1, 0], [1, 0]], [[0, 0], [0, 1]]])
    pred[:, 1], pred[:, 0] = pred_fg, 1 - pred_fg
    label[:, 1], label[:, 0] = label_fg, 1 - label_fg
    engine, data = _engine([{"pred": pred, "label": label, "subject": ["a", "b"]}])
    PredictionWriter(tmp_path / "p.json", "s1", task="segmentation").attach(engine)
    engine.run(data, max_epochs=1)
    record = json.loads((tmp_path / "p.json").read_text())["s1"]
    assert record == {"tp": [1, 0], "fp": [1, 0], "fn": [1, 1], "subjects": ["a", "b"], "reduction": "pooled"}


def test_subjects_of_a_decollated_batch_are_read(tmp_path):
    """MONAI workflows decollate ``engine.state.batch`` into one dict per sample before handlers see it."""
    engine, data = _engine([{"pred": torch.tensor([[0.3, 0.7], [0.6, 0.4]]), "label": torch.tensor([1, 0]),
                             "subject": ["p1", "p2"]}])

    @engine.on(Events.ITERATION_COMPLETED)  # before the writer, as MONAI decollates first
    def decollate(engine):
        batch = engine.state.batch
        engine.state.batch = [{"subject": s} for s in batch["subject"]]

    PredictionWriter(tmp_path / "p.json", "m").attach(engine)
    engine.run(data, max_epochs=1)
    assert json.loads((tmp_path / "p.json").read_text())["m"]["subjects"] == ["p1", "p2"]
