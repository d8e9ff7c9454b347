"""MMKD's bilevel step: isolation of the virtual step, the meta network's only signal, and a hand-worked case."""

from __future__ import annotations

import copy

import pytest
import torch
from monai.networks.nets import ResNet

from monai_kd.engines import DistillationTrainer, MetaWeightedStep, StepContext, connector_parameters
from monai_kd.losses import DistillationLoss, FeatureKDLoss, MultiTeacherKDLoss
from monai_kd.networks import MetaWeightNetwork


def _resnet(width: int, classes: int = 2) -> ResNet:
    return ResNet("basic", [1, 1, 1, 1], [width] * 4, spatial_dims=2, n_input_channels=1, num_classes=classes)


def _loader(n: int = 8, batch_size: int = 4, seed: int = 0):
    # random tensors: wiring only, never a result
    g = torch.Generator().manual_seed(seed)
    data = [{"image": torch.randn(1, 12, 12, generator=g), "label": torch.tensor(i % 2)} for i in range(n)]
    return torch.utils.data.DataLoader(data, batch_size=batch_size)


def _mmkd_loss(features: bool) -> DistillationLoss:
    """Output-layer branch, plus the intermediate-layer branch with connectors when ``features``."""
    kw = dict(teacher_layers=["layer4", "layer4"], teacher_channels=[8, 6], student_layer="layer4", student_channels=4)
    kd = MultiTeacherKDLoss(
        temperature=2.0,
        weighting=MetaWeightNetwork(2, 2, hidden=8, use_features=features, **(kw if features else {})),
        weighting_signal="kd",
    )
    if not features:
        return DistillationLoss(task_loss=torch.nn.CrossEntropyLoss(), kd_loss=kd)
    terms = [
        FeatureKDLoss("layer4", "layer4", teacher_index=k, student_channels=4, teacher_channels=c, reduction="none")
        for k, c in enumerate((8, 6))
    ]
    return DistillationLoss(
        task_loss=torch.nn.CrossEntropyLoss(), kd_loss=kd, feature_losses=terms,
        feature_weighting=MetaWeightNetwork(2, 2, hidden=8, use_features=True, **kw),
    )


def _trainer(features: bool = True, meta_lr: float = 0.1, **step_kwargs) -> DistillationTrainer:
    torch.manual_seed(0)
    student, loss = _resnet(4), _mmkd_loss(features)
    step = MetaWeightedStep(
        _loader(4, 2, seed=1), lambda params: torch.optim.SGD(params, lr=meta_lr), **step_kwargs
    )
    return DistillationTrainer(
        "cpu", 1, _loader(), student,
        torch.optim.SGD(list(student.parameters()) + connector_parameters(loss), lr=0.1),
        loss, [_resnet(8), _resnet(6)], step=step,
    )


@pytest.mark.parametrize("features", [False, True], ids=["logits", "logits+features"])
def test_weights_are_non_negative_and_sum_to_one(features):
    net = MetaWeightNetwork(3, 4, use_features=features, teacher_layers=["a", "b", "c"], teacher_channels=[5, 6, 7],
                            student_layer="s", student_channels=3)
    t, s = torch.randn(3, 6, 4, 5, 5) * 10, torch.randn(6, 4, 5, 5)  # dense outputs too
    feats = [{"a": torch.randn(6, 5, 2, 2)}, {"b": torch.randn(6, 6, 3, 3)}, {"c": torch.randn(6, 7)}]
    w = net(t, features=feats, student_logits=s, student_features={"s": torch.randn(6, 3, 4, 4)})
    assert w.shape == (6, 3) and (w >= 0).all() and torch.allclose(w.sum(dim=1), torch.ones(6))
    with pytest.raises(ValueError, match="student_logits"):
        net(t, features=feats)


def test_virtual_step_leaves_the_real_student_untouched():
    """Weights, BatchNorm statistics, gradients and the real pass's tapped features are unchanged by the meta update."""
    trainer = _trainer(features=True)
    step, student = trainer.step, trainer.network
    batch = next(iter(_loader()))
    inputs, targets = batch["image"], batch["label"]
    ctx = StepContext(trainer, inputs, targets)
    step.teacher_outputs(ctx)
    student.train()
    step.student_forward(ctx)  # the real pass records its features first
    real_features = {k: v.detach().clone() for k, v in ctx.student_features.items()}
    state = copy.deepcopy(student.state_dict())
    meta_before = [p.detach().clone() for p in step.meta_parameters]
    quiz = next(iter(_loader(4, 4, seed=5)))
    step.meta_update(ctx, quiz["image"], quiz["label"])
    for k, v in student.state_dict().items():  # BatchNorm running stats and num_batches_tracked included
        assert torch.equal(v, state[k]), k
    assert all(p.grad is None for p in student.parameters())
    assert set(ctx.student_features) == {"layer4"} and trainer.student_tap.features == {}
    assert all(torch.equal(ctx.student_features[k].detach(), real_features[k]) for k in real_features)
    assert any(not torch.equal(a, b) for a, b in zip(meta_before, step.meta_parameters))  # the meta step did run


def test_meta_network_learns_from_the_quiz_loss_only():
    # its parameters may not be in the student's optimizer
    student, loss = _resnet(4), _mmkd_loss(False)
    with pytest.raises(ValueError, match="quiz loss only"):
        DistillationTrainer("cpu", 1, _loader(), student, torch.optim.SGD(list(student.parameters()) + list(loss.parameters()), lr=0.1),
                            loss, [_resnet(8), _resnet(6)], step=MetaWeightedStep(_loader(), lambda p: torch.optim.SGD(p, lr=1.0)))
    # a quiz loss with zero gradient leaves it unchanged although the training losses are not zero
    trainer = _trainer(features=True, meta_loss=lambda pred, y: 0.0 * pred.sum())
    before = [p.detach().clone() for p in trainer.step.meta_parameters]
    student_before = copy.deepcopy(trainer.network.state_dict())
    trainer.run()
    assert all(torch.equal(a, b) for a, b in zip(before, trainer.step.meta_parameters))
    assert any(not torch.equal(v, student_before[k]) for k, v in trainer.network.state_dict().items())
    assert trainer.state.output[0]["loss_kd"] > 0 and trainer.state.output[0]["loss_feature"] > 0
    # with the quiz loss its gradient is exactly the quiz loss's: the real step adds nothing to it
    trainer = _trainer(features=True)
    seen = []

    def _check(engine):
        seen.append(all(p.grad is not None for p in engine.step.meta_parameters))
        seen.append([p.grad.clone() for p in engine.step.meta_parameters])

    from monai.engines.utils import IterationEvents

    trainer.add_event_handler(IterationEvents.FORWARD_COMPLETED, _check)
    trainer.add_event_handler(IterationEvents.MODEL_COMPLETED, _check)
    trainer.run()
    assert seen[0] and all(torch.equal(a, b) for a, b in zip(seen[1], seen[3]))  # unchanged by the real backward
    out = trainer.state.output[0]
    assert out["loss_quiz"] > 0 and out["meta_weights"].shape == (2,) and out["feature_weights"].shape == (2,)


def test_signal_must_reach_the_meta_network():
    student = _resnet(4)
    kd = MultiTeacherKDLoss(weighting=MetaWeightNetwork(2, 2), weighting_signal="label")
    loss = DistillationLoss(task_loss=torch.nn.CrossEntropyLoss(), kd_loss=kd)
    with pytest.raises(ValueError, match='weighting_signal="kd"'):
        DistillationTrainer("cpu", 1, _loader(), student, torch.optim.SGD(student.parameters(), lr=0.1), loss,
                            [_resnet(8), _resnet(6)], step=MetaWeightedStep(_loader(), lambda p: torch.optim.SGD(p, lr=1.0)))
    with pytest.raises(ValueError, match="no MetaWeightNetwork"):
        DistillationTrainer("cpu", 1, _loader(), student, torch.optim.SGD(student.parameters(), lr=0.1),
                            DistillationLoss(kd_loss=MultiTeacherKDLoss()), [_resnet(8)],
                            step=MetaWeightedStep(_loader(), lambda p: torch.optim.SGD(p, lr=1.0)))


class _Fixed(torch.nn.Module):
    """A linear 'network' with fixed weights: x (B, 2) -> logits (B, 2)."""

    def __init__(self, weight) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(2, 2, bias=False)
        with torch.no_grad():
            self.linear.weight.copy_(torch.tensor(weight, dtype=torch.float32))

    def forward(self, x):
        return self.linear(x)


def test_hand_case_meta_weights_move_to_the_right_teacher():
    """Teacher 1 right, teacher 2 wrong, the student agrees with teacher 2: the meta weights move to teacher 1.

    Class c is the one-hot input e_c (plus noise). Teacher 1 maps e_c to logits 4 * e_c (right), teacher 2 to
    4 * e_(1-c) (wrong); the student starts as teacher 2's copy at half the scale. Pure KD (no label term): the only
    label signal is the quiz loss, so a weighting that learnt from the KD term would keep trusting teacher 2.
    """
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)

    def data(n):
        labels = torch.arange(n) % 2
        x = torch.nn.functional.one_hot(labels, 2).float() + 0.1 * torch.randn(n, 2, generator=g)
        return [{"image": xi, "label": yi} for xi, yi in zip(x, labels)]

    right, wrong = _Fixed([[4.0, 0.0], [0.0, 4.0]]), _Fixed([[0.0, 4.0], [4.0, 0.0]])
    student = _Fixed([[0.0, 2.0], [2.0, 0.0]])
    student.linear.weight.requires_grad_(True)
    meta = MetaWeightNetwork(2, 2, hidden=8)
    kd = MultiTeacherKDLoss(temperature=1.0, weighting=meta, weighting_signal="kd")
    loss = DistillationLoss(kd_loss=kd)
    step = MetaWeightedStep(
        torch.utils.data.DataLoader(data(16), batch_size=8), lambda p: torch.optim.Adam(p, lr=0.05), virtual_lr=1.0
    )
    trainer = DistillationTrainer(
        "cpu", 15, torch.utils.data.DataLoader(data(16), batch_size=8), student,
        torch.optim.SGD(student.parameters(), lr=1.0), loss, [right, wrong], step=step,
    )
    probe = torch.stack([d["image"] for d in data(8)])

    def weights():
        with torch.no_grad():
            t = torch.stack([right(probe), wrong(probe)])
            return meta(t, student_logits=student(probe)).mean(dim=0)

    w0 = weights()
    trainer.run()
    w1 = weights()
    assert torch.allclose(w0, torch.full((2,), 0.5))  # starts uniform
    assert float(w1[0]) > 0.8, (w0, w1)  # moved to the right teacher
    correct = (student(probe).argmax(1) == torch.arange(8) % 2).float().mean()
    assert float(correct) == 1.0  # and the student, taught by the fused teachers alone, now classifies correctly
