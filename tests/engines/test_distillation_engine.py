"""The shared engine: hook order, isolation of extra student passes, per-teacher taps, a custom step."""

from __future__ import annotations

import pytest
import torch
from monai.engines.utils import IterationEvents
from monai.networks.nets import DenseNet121, ResNet

from monai_kd.engines import DistillationEngine, DistillationTrainer, StepContext, TrainingStep
from monai_kd.losses import DistillationLoss, MultiTeacherKDLoss


def _net(width: int) -> ResNet:
    return ResNet("basic", [1, 1, 1, 1], [width] * 4, spatial_dims=2, n_input_channels=1, num_classes=2)


def _loader(n: int = 8, batch_size: int = 4, size: int = 12):
    # random tensors: wiring only, never a result
    g = torch.Generator().manual_seed(0)
    data = [{"image": torch.randn(1, size, size, generator=g), "label": torch.tensor(i % 2)} for i in range(n)]
    return torch.utils.data.DataLoader(data, batch_size=batch_size)


class _Recorder(TrainingStep):
    """Logs every hook, runs an extra student pass after backward and checks the real pass's record survives."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.kept: list[bool] = []

    def prepare(self, ctx: StepContext) -> None:
        self.calls.append("prepare")

    def teacher_outputs(self, ctx: StepContext) -> None:
        self.calls.append("teacher_outputs")
        super().teacher_outputs(ctx)

    def before_step(self, ctx: StepContext) -> None:
        self.calls.append("before_step")

    def student_forward(self, ctx: StepContext) -> None:
        self.calls.append("student_forward")
        super().student_forward(ctx)

    def student_loss(self, ctx: StepContext) -> torch.Tensor:
        self.calls.append("student_loss")
        return super().student_loss(ctx)

    def after_backward(self, ctx: StepContext) -> None:
        self.calls.append("after_backward")
        assert all(p.grad is not None for p in ctx.engine.network.parameters() if p.requires_grad)
        real = dict(ctx.student_features)
        with ctx.engine.capture_student() as extra, torch.no_grad():
            ctx.engine.network(torch.zeros_like(ctx.inputs))
        self.kept.append(
            set(extra) == {"layer2"}
            and all(ctx.student_features[k] is real[k] for k in real)
            and not torch.equal(extra["layer2"], real["layer2"])
        )

    def after_step(self, ctx: StepContext) -> None:
        self.calls.append("after_step")


def test_hooks_run_in_order_and_an_extra_pass_does_not_overwrite_the_real_features():
    step = _Recorder()
    student = _net(4)
    loss = DistillationLoss(task_loss=torch.nn.CrossEntropyLoss(), kd_loss=MultiTeacherKDLoss())
    trainer = DistillationTrainer(
        "cpu", 1, _loader(), student, torch.optim.SGD(student.parameters(), lr=0.1), loss, [_net(8)],
        student_layers=["layer2"], step=step,
    )
    events = []
    trainer.add_event_handler(IterationEvents.FORWARD_COMPLETED, lambda e: step.calls.append("FORWARD_COMPLETED"))
    trainer.add_event_handler(IterationEvents.MODEL_COMPLETED, lambda e: events.append(e.state.output))
    trainer.run()
    one = [
        "prepare", "teacher_outputs", "before_step", "student_forward", "FORWARD_COMPLETED", "student_loss",
        "after_backward", "after_step",
    ]
    assert step.calls == one * 2
    assert step.kept == [True, True]
    assert trainer.student_tap.features == {}  # the capture blocks restore the (empty) standing record


def test_heterogeneous_teachers_are_tapped_per_teacher():
    """A ResNet and a DenseNet teacher have different layer names: each is tapped at its own layer."""
    teachers = [_net(8), DenseNet121(spatial_dims=2, in_channels=1, out_channels=2)]
    student = _net(4)
    trainer = DistillationTrainer(
        "cpu", 1, _loader(4, size=32), student, torch.optim.SGD(student.parameters(), lr=0.1),
        DistillationLoss(task_loss=torch.nn.CrossEntropyLoss()), teachers,
        teacher_layers=[["layer4"], ["features.denseblock4"]],
    )
    seen = []

    class _Probe(TrainingStep):
        def before_step(self, ctx):
            seen.append([sorted(f) for f in ctx.teacher_features])

    trainer.step = _Probe()
    trainer.run()
    assert seen == [[["layer4"], ["features.denseblock4"]]]
    with pytest.raises(ValueError, match="2 lists for 1 teachers"):
        DistillationTrainer("cpu", 1, _loader(4), student, torch.optim.SGD(student.parameters(), lr=0.1),
                            DistillationLoss(task_loss=torch.nn.CrossEntropyLoss()), [_net(8)],
                            teacher_layers=[["layer4"], ["layer3"]])


def test_engine_without_teachers_is_a_supervised_trainer_and_rejects_bad_steps():
    student = _net(4)
    before = [p.detach().clone() for p in student.parameters()]
    engine = DistillationEngine(
        "cpu", 1, _loader(4), student, torch.optim.SGD(student.parameters(), lr=0.1),
        loss_function=torch.nn.CrossEntropyLoss(),
        step=type("Plain", (TrainingStep,), {"student_loss": lambda self, ctx: ctx.engine.loss_function(ctx.pred, ctx.targets)})(),
    )
    engine.run()
    assert "teacher_pred" not in engine.state.output[0]
    assert any(not torch.equal(a, b) for a, b in zip(before, student.parameters()))
    with pytest.raises(TypeError, match="TrainingStep"):
        DistillationEngine("cpu", 1, _loader(4), student, None, torch.nn.CrossEntropyLoss(), step=object())
