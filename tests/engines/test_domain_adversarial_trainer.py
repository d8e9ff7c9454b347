from __future__ import annotations

import copy

import pytest
import torch
from monai.bundle import ConfigParser
from monai.data import DataLoader, Dataset, MetaTensor
from monai.engines.utils import IterationEvents
from monai.networks.nets import DenseNet, ResNet
from monai.transforms import EnsureTyped

from monai_kd.engines.domain_adversarial_trainer import DomainAdversarialTrainer
from monai_kd.engines.steps import BatchCycler
from monai_kd.handlers.distillation_stats import DistillationStatsHandler
from monai_kd.networks.domain_adversarial import DomainAdversarialNetwork
from monai_kd.networks.gradient_reversal import dann_coefficient


def _resnet(spatial_dims: int) -> ResNet:
    return ResNet("basic", [1, 1, 1, 1], [4, 4, 8, 8], spatial_dims=spatial_dims, n_input_channels=1, num_classes=2)


def _densenet(spatial_dims: int) -> DenseNet:
    return DenseNet(spatial_dims, 1, 2, init_features=4, growth_rate=4, block_config=(1, 1), bn_size=2)


def _loader(spatial_dims: int, n: int, size: int = 8, labelled: bool = True, batch_size: int = 4):
    # random tensors: this checks wiring and shapes only, never a result
    g = torch.Generator().manual_seed(n)
    data = [{"image": torch.randn(1, *([size] * spatial_dims), generator=g)} for _ in range(n)]
    if labelled:
        for i, item in enumerate(data):
            item["label"] = torch.tensor(i % 2)
    return DataLoader(Dataset(data, EnsureTyped(keys="image")), batch_size=batch_size)  # MetaTensor images


@pytest.mark.parametrize(
    "spatial_dims, make, layer, target_size",
    [(2, _resnet, "layer4", 8), (2, _densenet, "features", 12), (3, _resnet, "layer4", 8)],
)
def test_coefficient_rises_and_domain_head_trains(spatial_dims, make, layer, target_size):
    torch.manual_seed(0)
    net = DomainAdversarialNetwork(make(spatial_dims), layer, hidden=8)
    head_before = copy.deepcopy(net.domain_head.state_dict())
    trainer = DomainAdversarialTrainer(
        device="cpu",
        max_epochs=2,
        train_data_loader=_loader(spatial_dims, 8),  # 2 iterations per epoch
        target_data_loader=_loader(spatial_dims, 6, size=target_size, labelled=False),  # batches of 4, 2: restarts
        network=net,
        optimizer=torch.optim.SGD(net.parameters(), lr=0.1),
        loss_function=torch.nn.CrossEntropyLoss(),
    )
    seen, fired = [], []
    for event in (IterationEvents.FORWARD_COMPLETED, IterationEvents.LOSS_COMPLETED, IterationEvents.MODEL_COMPLETED):
        trainer.add_event_handler(event, lambda e, ev=event: fired.append(ev))

    @trainer.on(IterationEvents.BACKWARD_COMPLETED)
    def _grads(engine):
        head_grads = [p.grad for p in net.domain_head.parameters()]
        assert all(g is not None and g.abs().sum() > 0 for g in head_grads)

    @trainer.on(IterationEvents.MODEL_COMPLETED)
    def _record(engine):
        seen.append(engine.state.output[0]["dann_coefficient"])  # decollated: replicated per item

    stats = DistillationStatsHandler()
    stats.attach(trainer)
    trainer.run()
    assert stats.last_stats == {"dann_coefficient": pytest.approx(seen[-1])}
    assert seen == pytest.approx([dann_coefficient(p / 4) for p in range(4)])
    assert seen[0] == 0.0 and all(b > a for a, b in zip(seen, seen[1:]))
    assert len(fired) == 3 * 4
    assert any(not torch.equal(v, head_before[k]) for k, v in net.domain_head.state_dict().items())
    assert trainer.target_batches.restarts >= 1
    out = trainer.state.output
    assert len(out) == 4 and out[0]["pred"].shape == (2,)  # the source batch only
    assert isinstance(out[0]["pred"], MetaTensor)
    assert {"loss_task", "loss_domain", "domain_accuracy"} <= set(out[0])


def test_domain_gradient_reaches_the_features_only_through_the_reversal():
    torch.manual_seed(0)
    net = DomainAdversarialNetwork(_resnet(2), "layer4", hidden=8, coefficient=0.0)
    x = torch.randn(2, 1, 8, 8)
    net(x)
    net.domain_logits().sum().backward()
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in net.classifier.parameters())
    net.zero_grad()
    net.coefficient = 1.0
    net(x)
    net.domain_logits().sum().backward()
    assert net.classifier.layer4[0].conv1.weight.grad.abs().sum() > 0
    assert net.grl.coefficient == 1.0


def test_wrapper_serves_like_the_plain_network_and_saves_it():
    plain = _resnet(2).eval()
    net = DomainAdversarialNetwork(copy.deepcopy(plain), "layer4", hidden=8).eval()
    x = torch.randn(2, 1, 8, 8)
    assert torch.equal(net(x), plain(x))
    assert net.domain_logits().shape == (2, 2)
    assert net.unwrap() is net.classifier
    reloaded = _resnet(2)
    reloaded.load_state_dict(net.classifier.state_dict())  # the teacher checkpoint: no domain-head keys
    assert torch.equal(reloaded.eval()(x), plain(x))
    copy.deepcopy(net.train())(x)  # deep-copyable after a forward pass (no stale hooks or graphs)


def test_configuration_errors():
    with pytest.raises(KeyError, match="layer9"):
        DomainAdversarialNetwork(_resnet(2), "layer9")
    with pytest.raises(ValueError, match="feature_channels"):
        DomainAdversarialNetwork(_resnet(2), "avgpool")
    with pytest.raises(RuntimeError, match="forward"):
        DomainAdversarialNetwork(_resnet(2), "layer4").domain_logits()
    with pytest.raises(TypeError, match="DomainAdversarialNetwork"):
        DomainAdversarialTrainer("cpu", 1, _loader(2, 4), _loader(2, 4), _resnet(2), None, torch.nn.CrossEntropyLoss())
    empty = DomainAdversarialTrainer(
        "cpu", 1, _loader(2, 4), [], DomainAdversarialNetwork(_resnet(2), "layer4"), None, torch.nn.CrossEntropyLoss()
    )
    with pytest.raises(ValueError, match="no batch"):
        empty.run()


def test_batch_cycler():
    cycler = BatchCycler([1, 2])
    assert [cycler.next() for _ in range(5)] == [1, 2, 1, 2, 1] and cycler.restarts == 2
    assert BatchCycler(None).next() is None and BatchCycler([]).next() is None


def test_constructible_from_bundle_config():
    config = {
        "network": {
            "_target_": "monai_kd.networks.domain_adversarial.DomainAdversarialNetwork",
            "network": {"_target_": "DenseNet121", "spatial_dims": 2, "in_channels": 1, "out_channels": 2},
            "feature_layer": "features",
        },
        "trainer": {
            "_target_": "monai_kd.engines.domain_adversarial_trainer.DomainAdversarialTrainer",
            "device": "cpu",
            "max_epochs": 1,
            "train_data_loader": "$source",
            "target_data_loader": "$target",
            "network": "@network",
            "optimizer": {"_target_": "torch.optim.Adam", "params": "$@network.parameters()"},
            "loss_function": {"_target_": "torch.nn.CrossEntropyLoss"},
            "domain_weight": 0.5,
            "gamma": 5.0,
        },
    }
    parser = ConfigParser(config, globals={"source": _loader(2, 4), "target": _loader(2, 4, labelled=False)})
    trainer = parser.get_parsed_content("trainer")
    assert trainer.domain_weight == 0.5 and trainer.network.domain_head[0].in_features == 1024


def test_zero_domain_weight_never_shows_the_target_domain_to_the_network():
    """The source-only ablation: no target batch is drawn, so BatchNorm statistics are the source's alone."""
    torch.manual_seed(0)
    net = DomainAdversarialNetwork(_resnet(2), "layer4", hidden=8)
    plain = copy.deepcopy(net.classifier)
    source = _loader(2, 8)

    class _Untouchable:
        def __iter__(self):
            raise AssertionError("the target loader must not be iterated with domain_weight=0")

    trainer = DomainAdversarialTrainer(
        device="cpu",
        max_epochs=1,
        train_data_loader=source,
        target_data_loader=_Untouchable(),
        network=net,
        optimizer=torch.optim.SGD(net.parameters(), lr=0.0),
        loss_function=torch.nn.CrossEntropyLoss(),
        domain_weight=0.0,
    )
    outputs = []
    trainer.add_event_handler(IterationEvents.MODEL_COMPLETED, lambda e: outputs.append(e.state.output))
    trainer.run()
    items = [item for output in outputs for item in output]  # MONAI decollates the output into per-item dicts
    assert items and all(item["loss_domain"] == 0.0 and "domain_accuracy" not in item for item in items)
    plain.train()
    with torch.no_grad():
        for batch in source:  # the same batches through the plain network: same BatchNorm running statistics
            plain(batch["image"].as_tensor())
    assert torch.allclose(net.classifier.bn1.running_mean, plain.bn1.running_mean)
    assert torch.allclose(net.classifier.bn1.running_var, plain.bn1.running_var)
