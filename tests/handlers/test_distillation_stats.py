from __future__ import annotations

import logging

import pytest
import torch
from ignite.engine import Engine, Events

from monai_kd.handlers.distillation_stats import DistillationStatsHandler


def _engine(outputs: list) -> Engine:
    return Engine(lambda engine, batch: outputs[engine.state.iteration - 1])


def _decollated(weights: list[list[float]], rate: float) -> list[dict]:
    # what MONAI's decollation makes of {"teacher_weights": (B, K), "pseudo_label_rate": float}
    return [{"teacher_weights": torch.tensor(w), "pseudo_label_rate": rate, "loss": 1.0} for w in weights]


def test_logs_means_every_interval_from_decollated_and_dict_outputs(caplog):
    outputs = [
        _decollated([[0.2, 0.8], [0.4, 0.6]], 0.25),
        {"teacher_weights": torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.5, 0.5]]), "dann_coefficient": 0.5},
        _decollated([[0.1, 0.9]], 0.75),
        {"loss": torch.tensor(1.0)},  # nothing to report
    ]
    handler = DistillationStatsHandler(interval=1, logger_name="kd_stats_test")
    engine = _engine(outputs)
    handler.attach(engine)
    seen = []
    engine.add_event_handler(Events.ITERATION_COMPLETED, lambda e: seen.append(dict(handler.last_stats)))
    with caplog.at_level(logging.INFO, logger="kd_stats_test"):
        engine.run([0] * 4, max_epochs=1)
    assert seen[0]["teacher_weights"] == pytest.approx([0.3, 0.7]) and seen[0]["pseudo_label_rate"] == 0.25
    assert seen[1] == {"teacher_weights": pytest.approx([0.5, 0.5]), "dann_coefficient": 0.5}
    assert seen[3] == {}
    messages = [r.getMessage() for r in caplog.records if r.name == "kd_stats_test"]
    assert len(messages) == 3
    assert "teacher_weights=[0.3000, 0.7000]" in messages[0] and "pseudo_label_rate=0.2500" in messages[0]


def test_interval_and_tensorboard_scalars(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    outputs = [_decollated([[0.25, 0.75]], 0.1 * i) for i in range(1, 7)]
    handler = DistillationStatsHandler(interval=3, log_dir=str(tmp_path), tag_prefix="train/")
    engine = _engine(outputs)
    handler.attach(engine)
    engine.run([0] * 6, max_epochs=1)
    handler.close()
    events = EventAccumulator(str(tmp_path))
    events.Reload()
    assert set(events.Tags()["scalars"]) == {
        "train/teacher_weights/teacher_0",
        "train/teacher_weights/teacher_1",
        "train/pseudo_label_rate",
    }
    rates = events.Scalars("train/pseudo_label_rate")
    assert [s.step for s in rates] == [3, 6]
    assert [s.value for s in rates] == pytest.approx([0.3, 0.6])
    assert events.Scalars("train/teacher_weights/teacher_1")[0].value == pytest.approx(0.75)


def test_given_summary_writer_is_used_and_bad_interval_rejected():
    class Writer:
        def __init__(self):
            self.scalars = []

        def add_scalar(self, tag, value, step):
            self.scalars.append((tag, value, step))

        def flush(self):
            pass

    writer = Writer()
    engine = _engine([{"dann_coefficient": 0.25}])
    DistillationStatsHandler(summary_writer=writer).attach(engine)
    engine.run([0], max_epochs=1)
    assert writer.scalars == [("dann_coefficient", 0.25, 1)]
    with pytest.raises(ValueError, match="interval"):
        DistillationStatsHandler(interval=0)
