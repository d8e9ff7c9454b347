from __future__ import annotations

import copy

import pytest
import torch
from monai.engines.utils import IterationEvents
from monai.networks.nets import ResNet

from monai_kd.engines import DistillationTrainer
from monai_kd.losses import DistillationLoss, FeatureKDLoss, MultiTeacherKDLoss


def _net(width: int, spatial_dims: int = 2) -> ResNet:
    return ResNet("basic", [1, 1, 1, 1], [width] * 4, spatial_dims=spatial_dims, n_input_channels=1, num_classes=2)


def _loader(spatial_dims: int = 2, n: int = 8):
    # random tensors: this checks wiring and shapes only, never a result
    g = torch.Generator().manual_seed(0)
    data = [{"image": torch.randn(1, *([12] * spatial_dims), generator=g), "label": torch.tensor(i % 2)} for i in range(n)]
    return torch.utils.data.DataLoader(data, batch_size=4)


def _trainer(student, teachers, loss, **kwargs):
    params = list(student.parameters()) + list(loss.parameters())
    return DistillationTrainer(
        device="cpu",
        max_epochs=1,
        train_data_loader=_loader(kwargs.pop("spatial_dims", 2)),
        network=student,
        optimizer=torch.optim.SGD(params, lr=0.1),
        loss_function=loss,
        teachers=teachers,
        **kwargs,
    )


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_step_updates_student_and_leaves_teachers_unchanged(spatial_dims):
    teachers = [_net(8, spatial_dims), _net(4, spatial_dims)]
    teachers[0].train()  # the trainer must switch it to eval mode itself
    before = [copy.deepcopy(t.state_dict()) for t in teachers]
    student = _net(4, spatial_dims)
    student_before = copy.deepcopy(student.state_dict())
    loss = DistillationLoss(task_loss=torch.nn.CrossEntropyLoss(), kd_loss=MultiTeacherKDLoss(temperature=2.0))
    trainer = _trainer(student, teachers, loss, spatial_dims=spatial_dims)
    fired = []
    for event in (IterationEvents.FORWARD_COMPLETED, IterationEvents.LOSS_COMPLETED, IterationEvents.MODEL_COMPLETED):
        trainer.add_event_handler(event, lambda e, ev=event: fired.append(ev))
    trainer.run()
    for t, b in zip(teachers, before):
        assert not t.training
        assert all(not p.requires_grad and p.grad is None for p in t.parameters())
        for k, v in t.state_dict().items():  # BatchNorm statistics included
            assert torch.equal(v, b[k]), k
    assert any(not torch.equal(v, student_before[k]) for k, v in student.state_dict().items())
    assert len(fired) == 3 * 2  # three events per iteration, two iterations
    out = trainer.state.output
    assert out[0]["teacher_pred"].shape == (2, 2)  # decollated: (K, C) per item
    assert {k for k in out[0] if k.startswith("loss_")} == {"loss_task", "loss_kd"}
    assert out[0]["teacher_weights"].shape == (2,)


def test_feature_terms_are_tapped_from_named_layers():
    teacher, student = _net(8), _net(4)
    term = FeatureKDLoss("layer2", "layer2", student_channels=4, teacher_channels=8)
    loss = DistillationLoss(task_loss=torch.nn.CrossEntropyLoss(), feature_losses=[term])
    trainer = _trainer(student, teacher, loss)
    assert trainer.student_tap.layers == ["layer2"] and trainer.teacher_taps[0].layers == ["layer2"]
    w0 = term.connector.weight.detach().clone()
    trainer.run()
    assert trainer.state.output[0]["loss_feature"] > 0
    assert not torch.equal(w0, term.connector.weight)  # connector trained with the student


def test_bad_configuration_is_rejected():
    loss = DistillationLoss(task_loss=torch.nn.CrossEntropyLoss())
    with pytest.raises(ValueError, match="at least one teacher"):
        _trainer(_net(4), [], loss)
    with pytest.raises(KeyError, match="layer9"):
        _trainer(_net(4), _net(8), loss, student_layers=["layer9"])
    with pytest.raises(ValueError, match="accumulation_steps"):
        _trainer(_net(4), _net(8), loss, accumulation_steps=2)


def test_teacher_class_count_mismatch_is_explained():
    teacher = ResNet("basic", [1, 1, 1, 1], [4] * 4, spatial_dims=2, n_input_channels=1, num_classes=3)
    loss = DistillationLoss(kd_loss=MultiTeacherKDLoss())
    trainer = _trainer(_net(4), teacher, loss)
    with pytest.raises(ValueError, match="num_classes"):
        trainer.run()
