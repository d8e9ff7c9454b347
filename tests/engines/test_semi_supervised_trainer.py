from __future__ import annotations

import copy
import logging

import pytest
import torch
from monai.bundle import ConfigParser
from monai.data import DataLoader, Dataset, MetaTensor
from monai.engines.utils import IterationEvents
from monai.networks.nets import ResNet
from monai.transforms import Compose, CopyItemsd, EnsureTyped, RandFlipd, RandGaussianNoised

from monai_kd.engines.distillation_trainer import DistillationTrainer
from monai_kd.engines.semi_supervised_trainer import SemiSupervisedDistillationTrainer
from monai_kd.handlers.distillation_stats import DistillationStatsHandler
from monai_kd.losses.distillation import DistillationLoss
from monai_kd.losses.fixmatch import FixMatchLoss
from monai_kd.losses.multi_teacher import MultiTeacherKDLoss
from monai_kd.networks.learned_gate import LearnedGateWeighting

SIZE = 8


def _net(width: int, spatial_dims: int = 2) -> ResNet:
    return ResNet("basic", [1, 1, 1, 1], [width] * 4, spatial_dims=spatial_dims, n_input_channels=1, num_classes=2)


# random tensors: these check wiring and shapes only, never a result
def _labelled(spatial_dims: int = 2, n: int = 8) -> DataLoader:
    g = torch.Generator().manual_seed(0)
    data = [
        {"image": torch.randn(1, *[SIZE] * spatial_dims, generator=g), "label": torch.tensor(i % 2)} for i in range(n)
    ]
    return DataLoader(Dataset(data, EnsureTyped(keys="image")), batch_size=4)  # MetaTensor images, as in a bundle


def _unlabelled(spatial_dims: int = 2, n: int = 3) -> DataLoader:
    """Two views per image made by MONAI transforms, as a bundle would: weak = flip, strong = flip + noise."""
    g = torch.Generator().manual_seed(1)
    data = [{"image": torch.randn(1, *[SIZE] * spatial_dims, generator=g)} for _ in range(n)]
    transform = Compose(
        [
            CopyItemsd(keys="image", times=2, names=["image_weak", "image_strong"]),
            RandFlipd(keys=["image_weak", "image_strong"], prob=0.5, spatial_axis=0),
            RandGaussianNoised(keys="image_strong", prob=1.0, std=0.5),
        ]
    )
    return DataLoader(Dataset(data, transform), batch_size=3)


def _trainer(unlabelled, spatial_dims: int = 2, weighting=None, **kwargs) -> SemiSupervisedDistillationTrainer:
    torch.manual_seed(0)
    kd = MultiTeacherKDLoss(temperature=2.0, weighting=weighting)
    loss = DistillationLoss(task_loss=torch.nn.CrossEntropyLoss(), kd_loss=kd, kd_weight=0.5)
    student = _net(4, spatial_dims)
    return SemiSupervisedDistillationTrainer(
        device="cpu",
        max_epochs=1,
        train_data_loader=_labelled(spatial_dims),
        network=student,
        optimizer=torch.optim.SGD(list(student.parameters()) + list(loss.parameters()), lr=0.1),
        loss_function=loss,
        teachers=[_net(4, spatial_dims), _net(8, spatial_dims)],
        unlabeled_data_loader=unlabelled,
        **kwargs,
    )


def _record_outputs(trainer) -> list:
    outputs = []
    trainer.add_event_handler(IterationEvents.MODEL_COMPLETED, lambda e: outputs.append(e.state.output))
    return outputs


@pytest.mark.parametrize("unlabelled", [None, []], ids=["none", "empty"])
def test_without_unlabelled_data_it_is_a_distillation_step_logged_once(unlabelled, caplog):
    trainer = _trainer(unlabelled)
    outputs = _record_outputs(trainer)
    with caplog.at_level(logging.WARNING):
        trainer.run()
    assert len(outputs) == 2
    assert sum("no unlabelled batches" in r.getMessage() for r in caplog.records) == 1
    reference_keys = {"image", "label", "pred", "teacher_pred", "loss", "loss_task", "loss_kd", "teacher_weights"}
    assert set(outputs[-1][0]) == reference_keys  # exactly DistillationTrainer's output
    assert isinstance(trainer, DistillationTrainer)


def test_exhausted_unlabelled_loader_restarts_and_teachers_stay_frozen():
    trainer = _trainer(_unlabelled(n=3), fixmatch_loss=FixMatchLoss(threshold=0.0))  # one unlabelled batch
    before = [copy.deepcopy(t.state_dict()) for t in trainer.teachers]
    student_before = copy.deepcopy(trainer.network.state_dict())
    outputs = _record_outputs(trainer)
    stats = DistillationStatsHandler()
    stats.attach(trainer)
    trainer.run()  # 2 labelled batches, 1 unlabelled batch
    assert set(stats.last_stats) == {"teacher_weights", "teacher_weights_unlabeled", "pseudo_label_rate"}
    assert trainer.unlabeled_batches.restarts == 1
    for out in outputs:
        assert len(out) == 4  # decollated over the labelled batch only
        item = out[0]
        assert item["pseudo_label_rate"] == 1.0  # threshold 0 accepts every pseudo-label
        assert {"loss_task", "loss_kd", "loss_kd_unlabeled", "loss_fixmatch"} <= set(item)
        assert item["teacher_weights"].shape == (2,) and item["teacher_weights_unlabeled"].shape == (2,)
        assert item["teacher_pred"].shape == (2, 2)
        assert isinstance(item["pred"], MetaTensor)  # the labelled rows keep the input's metadata
    for teacher, state in zip(trainer.teachers, before):
        assert not teacher.training and all(not p.requires_grad and p.grad is None for p in teacher.parameters())
        assert all(torch.equal(v, state[k]) for k, v in teacher.state_dict().items())  # BatchNorm stats too
    assert any(not torch.equal(v, student_before[k]) for k, v in trainer.network.state_dict().items())


def test_3d_with_learned_gate_and_student_pseudo_labels():
    gate = LearnedGateWeighting(num_teachers=2, num_classes=2, hidden=4, use_student=True)
    gate_before = copy.deepcopy(gate.state_dict())
    trainer = _trainer(
        _unlabelled(3), spatial_dims=3, weighting=gate, pseudo_label_source="student", fixmatch_weight=2.0
    )
    fired = []
    for event in (
        IterationEvents.FORWARD_COMPLETED,
        IterationEvents.LOSS_COMPLETED,
        IterationEvents.BACKWARD_COMPLETED,
    ):
        trainer.add_event_handler(event, lambda e, ev=event: fired.append(ev))
    trainer.run()
    assert len(fired) == 3 * 2
    item = trainer.state.output[0]
    assert 0.0 <= item["pseudo_label_rate"] <= 1.0
    assert torch.allclose(item["teacher_weights_unlabeled"].sum(), torch.tensor(1.0))
    assert any(not torch.equal(v, gate_before[k]) for k, v in gate.state_dict().items())  # gate trained


def test_ablation_switches_and_bad_configuration():
    trainer = _trainer(_unlabelled(), fixmatch_weight=0.0)
    trainer.loss_function.kd_weight = 0.0
    trainer.run()
    item = trainer.state.output[0]
    assert "loss_fixmatch" not in item and "loss_kd_unlabeled" not in item and "teacher_weights" not in item
    with pytest.raises(ValueError, match="pseudo_label_source"):
        _trainer(None, pseudo_label_source="labels")
    bad = _trainer(DataLoader([{"image_weak": torch.zeros(1, 4, 4), "image_strong": torch.zeros(1, 4, 4)}]))
    with pytest.raises(ValueError, match="must agree"):
        bad.run()


def test_constructible_from_bundle_config():
    config = {
        "student": {"_target_": "DenseNet121", "spatial_dims": 2, "in_channels": 1, "out_channels": 2},
        "teacher": {"_target_": "DenseNet121", "spatial_dims": 2, "in_channels": 1, "out_channels": 2},
        "loss": {
            "_target_": "monai_kd.losses.distillation.DistillationLoss",
            "task_loss": {"_target_": "torch.nn.CrossEntropyLoss"},
            "kd_loss": {
                "_target_": "monai_kd.losses.multi_teacher.MultiTeacherKDLoss",
                "weighting": {
                    "_target_": "monai_kd.networks.learned_gate.LearnedGateWeighting",
                    "num_teachers": 1,
                    "num_classes": 2,
                },
            },
        },
        "trainer": {
            "_target_": "monai_kd.engines.semi_supervised_trainer.SemiSupervisedDistillationTrainer",
            "device": "cpu",
            "max_epochs": 1,
            "train_data_loader": "$labelled",
            "unlabeled_data_loader": "$unlabelled",
            "network": "@student",
            "teachers": ["@teacher"],
            "optimizer": {
                "_target_": "torch.optim.Adam",
                "params": "$list(@student.parameters()) + list(@loss.parameters())",
            },
            "loss_function": "@loss",
            "fixmatch_loss": {"_target_": "monai_kd.losses.fixmatch.FixMatchLoss", "threshold": 0.9},
            "fixmatch_weight": 0.5,
            "pseudo_label_source": "student",
            "train_handlers": [
                {"_target_": "monai_kd.handlers.distillation_stats.DistillationStatsHandler", "interval": 5}
            ],
        },
    }
    parser = ConfigParser(config, globals={"labelled": _labelled(), "unlabelled": _unlabelled()})
    trainer = parser.get_parsed_content("trainer")
    assert trainer.fixmatch_loss.threshold == 0.9 and trainer.pseudo_label_source == "student"


@pytest.mark.parametrize("weighting", [None, LearnedGateWeighting(num_teachers=2, num_classes=2)], ids=["uniform", "gate"])
def test_teacher_class_count_mismatch_is_named_before_the_weighting(weighting):
    trainer = _trainer(_unlabelled(), weighting=weighting)
    trainer.teachers[1] = ResNet("basic", [1, 1, 1, 1], [4] * 4, spatial_dims=2, n_input_channels=1, num_classes=3)
    with pytest.raises(ValueError, match=r"teacher 1 \(ResNet\) predicts 3 classes but the student predicts 2"):
        trainer.run()
