from __future__ import annotations

import json

import pytest
import torch
from ignite.engine import Engine

from monai_kd.handlers import MetricsJSONWriter, WeightAveraging
from monai_kd.handlers.weight_averaging import recompute_batch_norm


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


def test_swa_start_fraction_starts_after_that_fraction_of_the_epochs():
    net, avg = torch.nn.Linear(1, 1), torch.nn.Linear(1, 1)
    engine = _engine_setting_weights(net, [10.0, 1.0, 2.0, 6.0])
    handler = WeightAveraging(net, avg, mode="swa", start_epoch=1, start_fraction=0.5)
    handler.attach(engine)
    engine.run([0], max_epochs=4)
    assert handler.start_epoch == 3  # int(4 * 0.5) + 1, as the bundles' former "$int(@max_epochs * f) + 1"
    assert avg.weight.item() == pytest.approx(4.0)  # mean of epochs 3 and 4: 2 and 6
    with pytest.raises(ValueError, match="start_fraction"):
        WeightAveraging(net, avg, start_fraction=1.5)


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


def _bn_net(weight: float) -> torch.nn.Sequential:
    """y = BatchNorm(w * x): one weight, one BatchNorm layer without affine parameters."""
    net = torch.nn.Sequential(torch.nn.Linear(1, 1, bias=False), torch.nn.BatchNorm1d(1, affine=False, momentum=None))
    with torch.no_grad():
        net[0].weight.fill_(weight)
    return net


def test_swa_recomputes_batch_norm_statistics_of_the_averaged_network():
    # Hand case from review: weights 1 then 3 over two epochs, input [1, 2, 3]. Per-epoch running variances are
    # 1 and 9 (unbiased), their mean 5; the averaged network (w = 2) has activations [2, 4, 6], variance 4, mean 4,
    # so its eval outputs must be [-1, 0, 1] (averaging the statistics would give +-2/sqrt(5) = +-0.894).
    x = torch.tensor([[1.0], [2.0], [3.0]])
    net, avg = _bn_net(1.0), _bn_net(0.0)

    def step(engine, batch):
        with torch.no_grad():
            net[0].weight.fill_([1.0, 3.0][engine.state.epoch - 1])
        net.train()
        net(batch)  # BatchNorm running statistics of this epoch's weights

    engine = Engine(step)
    WeightAveraging(net, avg, mode="swa", start_epoch=1).attach(engine)
    engine.run([x], max_epochs=2)
    assert avg[0].weight.item() == pytest.approx(2.0)
    assert avg[1].running_mean.item() == pytest.approx(4.0)
    assert avg[1].running_var.item() == pytest.approx(4.0)
    avg.eval()
    assert avg(x).flatten().tolist() == pytest.approx([-1.0, 0.0, 1.0], abs=1e-4)
    # the trained network (momentum None) holds the cumulative mean of its two epochs, 5: what averaging would give
    assert avg.training is False and net[1].running_var.item() == pytest.approx(5.0)


def test_batch_norm_recomputed_from_given_loaders_with_keys_and_momentum_restored():
    net = _bn_net(2.0)
    net[1].momentum = 0.1
    loaders = [[{"image": torch.tensor([[1.0], [3.0]])}], [{"image_weak": torch.tensor([[5.0], [7.0]])}]]
    assert recompute_batch_norm(net, loaders, image_key=["image", "image_weak"]) == 2
    # cumulative average of the two batches' statistics: means 4 and 12, unbiased variances 4*2 and 4*2
    assert net[1].running_mean.item() == pytest.approx(8.0)
    assert net[1].running_var.item() == pytest.approx(8.0)
    assert net[1].momentum == 0.1
    with pytest.raises(ValueError, match="no batch"):
        recompute_batch_norm(net, [[]])
    with pytest.raises(KeyError, match="image"):
        recompute_batch_norm(net, [[{"img": torch.zeros(2, 1)}]])
    assert recompute_batch_norm(torch.nn.Linear(1, 1), [[torch.zeros(2, 1)]]) == 0  # no BatchNorm: nothing to do
