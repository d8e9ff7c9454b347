"""TrainingCheckpoint, NonFiniteGuard and BatchShapeCheck on a real (tiny) distillation run: BreastMNIST images."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from ignite.engine import Engine, Events
from monai.engines.utils import default_metric_cmp_fn
from monai.handlers import LrScheduleHandler
from monai.networks.nets import ResNet
from monai.transforms import Compose, EnsureTyped, RandAffined

from monai_kd.engines import DistillationTrainer
from monai_kd.handlers import (
    BatchShapeCheck,
    BatchShapeError,
    NonFiniteError,
    NonFiniteGuard,
    ResumeError,
    TrainingCheckpoint,
    WeightAveraging,
)
from monai_kd.handlers.finite_guard import nan_safe_best_metric
from monai_kd.losses import DistillationLoss, MultiTeacherKDLoss


def _net(width: int) -> ResNet:
    return ResNet("basic", [1, 1, 1, 1], [width] * 4, spatial_dims=2, n_input_channels=1, num_classes=2)


@pytest.fixture(scope="module")
def breast(data_dir):
    archive = np.load(data_dir / "breastmnist" / "breastmnist.npz")
    images, labels = archive["train_images"][:48], archive["train_labels"][:48].reshape(-1)
    return [{"image": (img[None] / 255.0).astype(np.float32), "label": np.int64(lab)} for img, lab in zip(images, labels)]


def _trainer(items, tmp_path, max_epochs=3, teacher=None, resume=True, extra=()):
    from monai.data import DataLoader, Dataset

    torch.manual_seed(0)
    teacher = teacher if teacher is not None else _net(8)
    student, averaged = _net(4), _net(4)
    loss = DistillationLoss(task_loss=torch.nn.CrossEntropyLoss(), kd_loss=MultiTeacherKDLoss(temperature=2.0))
    optimizer = torch.optim.AdamW(student.parameters(), lr=2e-3)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max_epochs)
    transform = Compose([EnsureTyped(keys=["image", "label"]), RandAffined(keys="image", prob=0.5, rotate_range=0.2)])
    loader = DataLoader(Dataset(items, transform), batch_size=16, shuffle=True)
    checkpoint = TrainingCheckpoint(tmp_path / "resume" / "student.pt", stage="student", resume=resume)
    handlers = [
        WeightAveraging(student, averaged, mode="swa", start_epoch=2),
        LrScheduleHandler(scheduler, print_lr=False),
        *extra,
        NonFiniteGuard(stage="student", checkpoint=checkpoint.path),
        checkpoint,
    ]
    trainer = DistillationTrainer(
        device="cpu", max_epochs=max_epochs, train_data_loader=loader, network=student, optimizer=optimizer,
        loss_function=loss, teachers=teacher, train_handlers=handlers,
    )
    return trainer, averaged, checkpoint


class _Crash(Exception):
    pass


def test_resumed_distillation_equals_the_uninterrupted_one(breast, tmp_path):
    reference, ref_avg, _ = _trainer(breast, tmp_path / "a")
    reference.run()

    crashed, _, _ = _trainer(breast, tmp_path / "b")

    @crashed.on(Events.ITERATION_COMPLETED)
    def crash(engine):  # in the middle of epoch 3 (3 iterations per epoch)
        if engine.state.epoch == 3 and engine.state.iteration == 7:
            raise _Crash()

    with pytest.raises(_Crash):
        crashed.run()
    assert torch.load(tmp_path / "b" / "resume" / "student.pt", weights_only=True)["epoch"] == 2

    resumed, res_avg, checkpoint = _trainer(breast, tmp_path / "b")  # a new process would build everything anew
    resumed.run()
    assert checkpoint.resumed_from == 2 and resumed.state.iteration == 9
    for (name, a), b in zip(ref_avg.state_dict().items(), res_avg.state_dict().values()):
        assert torch.equal(a, b), name  # optimizer, scheduler, averaging and random states were all restored

    again, _, checkpoint = _trainer(breast, tmp_path / "b")
    again.run()
    assert checkpoint.skipped  # a finished stage is not trained again


def test_resume_false_starts_over_and_other_runs_are_refused(breast, tmp_path):
    first, _, _ = _trainer(breast, tmp_path, max_epochs=1)
    first.run()
    longer, _, _ = _trainer(breast, tmp_path, max_epochs=2)
    with pytest.raises(ResumeError, match=r"run of 1 epochs, this run asks for 2; pass --resume false"):
        longer.run()
    fresh, _, checkpoint = _trainer(breast, tmp_path, max_epochs=2, resume=False)
    fresh.run()
    assert checkpoint.resumed_from is None and fresh.state.epoch == 2


def test_a_nan_teacher_weight_is_reported_as_the_teachers_fault(breast, tmp_path):
    teacher = _net(8)
    with torch.no_grad():
        teacher.fc.weight[0, 0] = float("nan")
    trainer, _, _ = _trainer(breast, tmp_path, teacher=teacher)
    with pytest.raises(NonFiniteError, match=r"stage 'student', before epoch 1: teacher 0 has 1 NaN .*fc.weight"
                                             r".*the teacher's fault.*no epoch of this stage had completed"):
        trainer.run()
    assert not (tmp_path / "resume" / "student.pt").exists()


def test_a_diverging_student_stops_at_the_iteration_and_keeps_the_last_checkpoint(breast, tmp_path):
    trainer, _, _ = _trainer(breast, tmp_path)

    @trainer.on(Events.ITERATION_COMPLETED)
    def explode(engine):  # what --learning_rate 1e30 does to the weights, in the second epoch
        if engine.state.iteration == 4:
            with torch.no_grad():
                engine.network.conv1.weight.mul_(float("inf"))

    with pytest.raises(NonFiniteError, match=r"stage 'student', epoch 2, iteration 5: the student's output is NaN.*"
                                             r"last good checkpoint is kept"):
        trainer.run()
    assert torch.load(tmp_path / "resume" / "student.pt", weights_only=True)["epoch"] == 1


def test_a_non_finite_loss_names_its_term():
    engine = Engine(lambda e, b: None)
    engine.state.epoch, engine.state.iteration = 2, 7
    engine.state.output = {"loss": torch.tensor(float("nan")), "loss_task": 0.41, "loss_kd": float("nan")}
    with pytest.raises(NonFiniteError, match=r"stage 'teacher', epoch 2, iteration 7: the loss is nan in the term\(s\) kd \(.*training stopped"):
        NonFiniteGuard(stage="teacher").check_loss(engine)
    engine.state.output = {"loss": torch.tensor(0.3), "loss_task": 0.3}
    NonFiniteGuard(stage="teacher").check_loss(engine)  # finite: nothing


def test_nan_key_metric_is_never_a_best():
    class Evaluator:
        metric_cmp_fn = staticmethod(default_metric_cmp_fn)

        class state:  # noqa: N801 - stands for an ignite State
            best_metric, best_metric_epoch = -1, -1

    evaluator = Evaluator()
    nan_safe_best_metric(evaluator)
    assert evaluator.state.best_metric == -math.inf and evaluator.state.best_metric_epoch == 0
    assert not evaluator.metric_cmp_fn(float("nan"), -math.inf)  # val_auc of a single-class split
    assert evaluator.metric_cmp_fn(0.61, -math.inf) and not evaluator.metric_cmp_fn(0.5, 0.61)


def test_3d_volumes_for_a_2d_network_are_refused_in_one_line(data_dir, tmp_path):
    archive = np.load(data_dir / "adrenalmnist3d" / "adrenalmnist3d.npz")
    items = [{"image": (v[None] / 255.0).astype(np.float32), "label": np.int64(y)}
             for v, y in zip(archive["train_images"][:8], archive["train_labels"][:8].reshape(-1))]
    trainer, _, _ = _trainer(items, tmp_path, extra=[BatchShapeCheck(stage="student")])
    with pytest.raises(BatchShapeError, match=r"stage 'student'.* 3D images of shape \(1, 28, 28, 28\).*network is 2D"):
        trainer.run()
