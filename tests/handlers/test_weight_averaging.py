from __future__ import annotations

import json

import pytest
import torch
from ignite.engine import Engine

from monai_kd.handlers import MetricsJSONWriter, WeightAveraging


def _engine_setting_weights(net: torch.nn.Linear, values: list[float], iters_per_epoch: int = 1) -> Engine:
    def step(engine, _):
        with torch.no_grad():
            idx = (engine.state.epoch - 1) * iters_per_epoch + (engine.state.iteration - 1) % iters_per_epoch
            net.weight.fill_(values[idx])
            net.bias.fill_(values[idx])

    return Engine(step)


def test_swa_is_the_mean_of_epochs_from_start():
    net, avg = torch.nn.Linear(1, 1), torch.nn.Linear(1, 1)
    values = [10.0, 1.0, 2.0, 6.0]
    engine = _engine_setting_weights(net, values)
    WeightAveraging(net, avg, mode="swa", start_epoch=2).attach(engine)
    engine.run([0], max_epochs=4)
    assert avg.weight.item() == pytest.approx(3.0)  # mean of 1, 2, 6; epoch 1 excluded


def test_ema_follows_formula_and_tracks_before_start():
    net, avg = torch.nn.Linear(1, 1), torch.nn.Linear(1, 1)
    engine = _engine_setting_weights(net, [4.0, 0.0, 8.0])
    WeightAveraging(net, avg, mode="ema", decay=0.5, start_epoch=2).attach(engine)
    engine.run([0], max_epochs=1)
    assert avg.weight.item() == pytest.approx(4.0)  # before start_epoch the average just copies
    engine.run([0], max_epochs=3)
    assert avg.weight.item() == pytest.approx(0.5 * 0.0 + 0.5 * 8.0)


def test_architecture_mismatch_and_bad_mode():
    with pytest.raises(ValueError, match="same architecture"):
        WeightAveraging(torch.nn.Linear(1, 1), torch.nn.Linear(2, 1))
    with pytest.raises(ValueError, match="mode"):
        WeightAveraging(torch.nn.Linear(1, 1), torch.nn.Linear(1, 1), mode="mean")


def test_metrics_writer_merges_entries_atomically(tmp_path):
    path = tmp_path / "eval" / "metrics.json"
    for name, value in (("teacher", 0.9), ("student_kd", 0.8)):
        engine = Engine(lambda e, b: None)
        engine.state.metrics = {"test_auc": value}
        MetricsJSONWriter(path, name, extra={"parameters": 7}).attach(engine)
        engine.run([0], max_epochs=1)
        engine.state.metrics = {"test_auc": value}
        MetricsJSONWriter(path, name, extra={"parameters": 7})(engine)
    content = json.loads(path.read_text())
    assert content == {"teacher": {"test_auc": 0.9, "parameters": 7}, "student_kd": {"test_auc": 0.8, "parameters": 7}}
    assert [p.name for p in path.parent.iterdir()] == ["metrics.json"]
