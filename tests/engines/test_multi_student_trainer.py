from __future__ import annotations

import copy
import functools

import pytest
import torch
from monai.bundle import ConfigParser
from monai.engines.utils import IterationEvents
from monai.losses import DiceFocalLoss
from monai.networks.nets import ResNet, UNet

from monai_kd.engines.kdml_recipes import kdml_teacher_mode, kdml_terms
from monai_kd.engines.multi_student_trainer import LossTerm, MultiStudentTrainer, trainable_parameters
from monai_kd.losses.feature_kd import FeatureKDLoss
from monai_kd.losses.logit_kd import KDLoss
from monai_kd.losses.mutual_learning import MutualLearningLoss

# Table 1 of Niyaz et al. (file 002), written out by hand: which distillation terms each student receives.
# KD rows (table 1a): T->S1, T->S2. ML rows (table 1b): S1->S2, S2->S1. KD+ML (table 1c): both.
KD_TABLE = {"V1": ("s1_teacher_logit", "s2_teacher_logit"),
            "V2": ("s1_teacher_feature", "s2_teacher_feature"),
            "V3": ("s1_teacher_logit", "s2_teacher_feature")}  # predictions to S1, features to S2
ML_TABLE = {"V1": ("s2_s1_logit", "s1_s2_logit"),
            "V2": ("s2_s1_feature", "s1_s2_feature"),
            "V3": ("s2_s1_logit", "s1_s2_feature")}  # S1 -> S2 predictions, S2 -> S1 features
EXPECTED = {
    "kd_off": lambda v: {"s1_task", "s2_task", *KD_TABLE[v]},
    "kd_on": lambda v: {"s1_task", "s2_task", "teacher_task", *KD_TABLE[v]},
    "ml": lambda v: {"s1_task", "s2_task", *ML_TABLE[v]},
    "kd_ml": lambda v: {"s1_task", "s2_task", "teacher_task", *KD_TABLE[v], *ML_TABLE[v]},
}
ONLINE = {"kd_off": False, "kd_on": True, "ml": False, "kd_ml": True}


def _resnet(width: int, spatial_dims: int = 2) -> ResNet:
    return ResNet("basic", [1, 1, 1, 1], [width] * 4, spatial_dims=spatial_dims, n_input_channels=1, num_classes=2)


def _unet(width: int, spatial_dims: int) -> UNet:
    return UNet(spatial_dims, 1, 2, channels=(width, 2 * width, 4 * width), strides=(2, 2), num_res_units=0)


def _loader(spatial_dims: int, size: int, segmentation: bool = False, n: int = 4):
    # random tensors: these tests check wiring and shapes only, never a result
    g = torch.Generator().manual_seed(0)
    data = []
    for i in range(n):
        image = torch.randn(1, *([size] * spatial_dims), generator=g)
        label = (image > 0).long() if segmentation else torch.tensor(i % 2)
        data.append({"image": image, "label": label})
    return torch.utils.data.DataLoader(data, batch_size=n)


def _classification_terms(regime: str, variant: str) -> list[LossTerm]:
    return kdml_terms(
        regime,
        variant,
        task_loss=torch.nn.CrossEntropyLoss(),
        kd_loss=KDLoss(temperature=2.0),
        ml_loss=MutualLearningLoss(temperature=2.0),
        feature_loss_factory=functools.partial(FeatureKDLoss, student_channels=4, teacher_channels=8),
        peer_feature_loss_factory=FeatureKDLoss,
        student_layer="layer4",
        teacher_layer="layer4",
    )


def _run(students, teacher, terms, regime, loader, **kwargs):
    trainer = MultiStudentTrainer(
        device="cpu",
        max_epochs=1,
        train_data_loader=loader,
        students=students,
        optimizer=functools.partial(torch.optim.SGD, lr=0.1),
        loss_terms=terms,
        teacher=teacher,
        teacher_mode=kdml_teacher_mode(regime),
        **kwargs,
    )
    trainer.run()
    return trainer


def _check_teacher(teacher, before, online: bool):
    changed = any(not torch.equal(v, before[k]) for k, v in teacher.state_dict().items())
    if online:
        assert changed and all(p.grad is not None for p in teacher.parameters())
    else:
        assert not changed  # weights and BatchNorm statistics
        assert all(p.grad is None for p in teacher.parameters())


@pytest.mark.parametrize("variant", ["V1", "V2", "V3"])
@pytest.mark.parametrize("regime", ["kd_off", "kd_on", "ml", "kd_ml"])
def test_each_regime_and_variant_wires_the_paper_table(regime, variant):
    teacher, students = _resnet(8), {"s1": _resnet(4), "s2": _resnet(4)}
    teacher.train()  # offline mode must switch it to eval itself
    before = copy.deepcopy(teacher.state_dict())
    s_before = {k: copy.deepcopy(s.state_dict()) for k, s in students.items()}
    trainer = _run(students, teacher, _classification_terms(regime, variant), regime, _loader(2, 12))

    out = trainer.state.output[0]
    logged = {k[len("loss_"):]: v for k, v in out.items() if k.startswith("loss_")}
    assert set(logged) == EXPECTED[regime](variant)
    assert all(v > 0 for v in logged.values()), logged
    _check_teacher(teacher, before, ONLINE[regime])
    if regime == "kd_off":
        assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())
    for name, student in students.items():
        assert any(not torch.equal(v, s_before[name][k]) for k, v in student.state_dict().items())
    assert {"pred", "pred_s1", "pred_s2"} <= set(out) and ("pred_teacher" in out) == (regime != "ml")
    assert torch.equal(out["pred"], out["pred_s1"])


@pytest.mark.parametrize("spatial_dims,regime", [(2, "kd_ml"), (3, "kd_off")])
def test_segmentation_with_unet_and_dice_focal(spatial_dims, regime):
    teacher, students = _unet(8, spatial_dims), {"s1": _unet(4, spatial_dims), "s2": _unet(4, spatial_dims)}
    before = copy.deepcopy(teacher.state_dict())
    layer = "model.1.submodule.2"  # first decoder block of the U-Net, as in the paper
    terms = kdml_terms(
        regime,
        "V3",
        task_loss=DiceFocalLoss(to_onehot_y=True, softmax=True),
        kd_loss=KDLoss(temperature=2.0),
        feature_loss_factory=functools.partial(
            FeatureKDLoss, student_channels=4, teacher_channels=8, spatial_dims=spatial_dims
        ),
        peer_feature_loss_factory=FeatureKDLoss,
        student_layer=layer,
        teacher_layer=layer,
    )
    fired = []
    loader = _loader(spatial_dims, 16 if spatial_dims == 2 else 8, segmentation=True, n=2)
    trainer = MultiStudentTrainer(
        device="cpu",
        max_epochs=1,
        train_data_loader=loader,
        students=students,
        optimizer=functools.partial(torch.optim.Adam, lr=1e-2),
        loss_terms=terms,
        teacher=teacher,
        teacher_mode=kdml_teacher_mode(regime),
    )
    for event in IterationEvents:
        trainer.add_event_handler(event, lambda e, ev=event: fired.append(ev))
    trainer.run()
    assert fired == [IterationEvents.FORWARD_COMPLETED, IterationEvents.LOSS_COMPLETED,
                     IterationEvents.BACKWARD_COMPLETED, IterationEvents.MODEL_COMPLETED]
    out = trainer.state.output[0]
    logged = {k[len("loss_"):] for k, v in out.items() if k.startswith("loss_") and v > 0}
    assert logged == EXPECTED[regime]("V3")
    assert out["pred_s2"].shape == (2, *([16 if spatial_dims == 2 else 8] * spatial_dims))
    _check_teacher(teacher, before, ONLINE[regime])
    connector = terms[[t.name for t in terms].index("s2_teacher_feature")].loss.connector
    assert connector.weight.grad is not None  # the single optimizer also trains the connector


def test_sources_are_detached():
    students = {"s1": _resnet(4), "s2": _resnet(4)}
    s2_before = copy.deepcopy(students["s2"].state_dict())
    terms = [
        {"name": "s1_task", "learner": "s1", "kind": "task", "loss": torch.nn.CrossEntropyLoss()},
        {"name": "s1_s2_logit", "learner": "s1", "kind": "logit", "source": "s2", "loss": KDLoss()},
        LossTerm("s1_s2_feature", "s1", "feature", FeatureKDLoss(), "s2", "layer3", "layer3", weight=2.0),
    ]
    trainer = MultiStudentTrainer("cpu", 1, _loader(2, 12), students, functools.partial(torch.optim.SGD, lr=0.1), terms, teacher_mode="none")
    trainer.run()
    assert all(p.grad is None for p in students["s2"].parameters())
    s2_params = {k for k, _ in students["s2"].named_parameters()}
    assert all(torch.equal(v, s2_before[k]) for k, v in students["s2"].state_dict().items() if k in s2_params)
    assert all(p.grad is not None for p in students["s1"].parameters())


def test_constructible_from_bundle_config():
    config = {
        "net": {"_target_": "monai.networks.nets.ResNet", "block": "basic", "layers": [1, 1, 1, 1],
                "block_inplanes": [4, 4, 4, 4], "spatial_dims": 2, "n_input_channels": 1, "num_classes": 2},
        "students": {"s1": "@net", "s2": "$copy.deepcopy(@net)"},
        "teacher": "$copy.deepcopy(@net)",
        "loss_terms": [
            {"_target_": "monai_kd.engines.multi_student_trainer.LossTerm", "name": "s1_task", "learner": "s1",
             "kind": "task", "loss": {"_target_": "torch.nn.CrossEntropyLoss"}},
            {"name": "s2_task", "learner": "s2", "kind": "task", "loss": {"_target_": "torch.nn.CrossEntropyLoss"}},
            {"name": "s2_teacher_feature", "learner": "s2", "kind": "feature", "source": "teacher", "weight": 0.5,
             "loss": {"_target_": "monai_kd.losses.feature_kd.FeatureKDLoss", "student_layer": "layer2",
                      "teacher_layer": "layer2"}},
        ],
        "trainer": {
            "_target_": "monai_kd.engines.multi_student_trainer.MultiStudentTrainer",
            "device": "cpu", "max_epochs": 1, "train_data_loader": "$@loader", "students": "@students",
            "teacher": "@teacher", "teacher_mode": "offline", "loss_terms": "@loss_terms",
            "optimizer": {"_target_": "torch.optim.Adam", "params": "$monai_kd.engines.multi_student_trainer."
                          "trainable_parameters(@students, @loss_terms, @teacher, 'offline')", "lr": 1e-3},
        },
    }
    parser = ConfigParser(config, globals={"copy": "copy", "monai_kd": "monai_kd"})
    parser["loader"] = _loader(2, 12)
    trainer = parser.get_parsed_content("trainer")
    trainer.run()
    assert trainer.loss_function.terms[2].learner_layer == "layer2"  # read from the FeatureKDLoss
    assert {k for k in trainer.state.output[0] if k.startswith("loss_")} == {
        "loss_s1_task", "loss_s2_task", "loss_s2_teacher_feature"}


def test_recipe_constructible_from_bundle_config():
    parser = ConfigParser({
        "terms": {
            "_target_": "monai_kd.engines.kdml_recipes.kdml_terms", "regime": "kd_ml", "variant": "V3",
            "task_loss": {"_target_": "DiceFocalLoss", "to_onehot_y": True, "softmax": True},
            "kd_loss": {"_target_": "monai_kd.losses.logit_kd.KDLoss", "temperature": 2.0},
            "feature_loss_factory": {"_target_": "monai_kd.losses.feature_kd.FeatureKDLoss", "_mode_": "callable",
                                     "student_channels": 4, "teacher_channels": 8},
            "peer_feature_loss_factory": {"_target_": "monai_kd.losses.feature_kd.FeatureKDLoss", "_mode_": "callable"},
            "student_layer": "model.1.submodule.2", "teacher_layer": "model.1.submodule.2",
            "weights": {"s2_s1_logit": 0.25},
        },
        "teacher_mode": "$monai_kd.engines.kdml_recipes.kdml_teacher_mode('kd_ml')",
    }, globals={"monai_kd": "monai_kd"})
    terms = {t.name: t for t in parser.get_parsed_content("terms")}
    assert set(terms) == EXPECTED["kd_ml"]("V3") and parser.get_parsed_content("teacher_mode") == "online"
    assert terms["s2_s1_logit"].weight == 0.25 and terms["s1_task"].weight == 1.0
    assert terms["s2_teacher_feature"].loss is not terms["s1_s2_feature"].loss  # one connector per pair


def test_recipe_weights_and_errors():
    terms = kdml_terms("kd_off", "v1", torch.nn.CrossEntropyLoss(), KDLoss(), weights={"s1_teacher_logit": 0.0})
    assert {t.name: t.weight for t in terms}["s1_teacher_logit"] == 0.0
    trainer = _run({"s1": _resnet(4), "s2": _resnet(4)}, _resnet(4), terms, "kd_off", _loader(2, 12))
    assert "loss_s1_teacher_logit" not in trainer.state.output[0]  # weight 0: not computed
    with pytest.raises(ValueError, match="unknown regime"):
        kdml_terms("kd_both", "V1", torch.nn.CrossEntropyLoss(), KDLoss())
    with pytest.raises(ValueError, match="unknown variant"):
        kdml_terms("ml", "V4", torch.nn.CrossEntropyLoss(), KDLoss())
    with pytest.raises(ValueError, match="feature_loss_factory"):
        kdml_terms("ml", "V2", torch.nn.CrossEntropyLoss(), KDLoss())
    with pytest.raises(ValueError, match="unknown term name"):
        kdml_terms("ml", "V1", torch.nn.CrossEntropyLoss(), KDLoss(), weights={"s1_kd": 1.0})
    assert [kdml_teacher_mode(r) for r in ("kd_off", "kd_on", "ml", "kd_ml")] == ["offline", "online", "none", "online"]


def test_bad_configuration_is_rejected():
    ce = torch.nn.CrossEntropyLoss()
    students = {"s1": _resnet(4)}
    task = {"name": "s1_task", "learner": "s1", "kind": "task", "loss": ce}

    def make(terms, teacher=None, mode="none", optimizer=None, **kw):
        opt = optimizer or functools.partial(torch.optim.SGD, lr=0.1)
        return MultiStudentTrainer("cpu", 1, [], kw.pop("students", students), opt, terms, teacher=teacher, teacher_mode=mode, **kw)

    with pytest.raises(ValueError, match="needs a loss term with learner \"teacher\""):
        make([task], _resnet(4), "online")
    with pytest.raises(ValueError, match="freezes it"):
        make([task, {"name": "t", "learner": "teacher", "kind": "task", "loss": ce}], _resnet(4), "offline")
    with pytest.raises(ValueError, match="teacher_mode=\"none\""):
        make([task, {"name": "kd", "learner": "s1", "kind": "logit", "source": "teacher", "loss": KDLoss()}])
    with pytest.raises(ValueError, match="unknown source"):
        make([task, {"name": "ml", "learner": "s1", "kind": "logit", "source": "s3", "loss": KDLoss()}])
    with pytest.raises(ValueError, match="kind"):
        make([{**task, "kind": "attention"}])
    with pytest.raises(ValueError, match="source \"labels\""):
        make([{**task, "kind": "logit"}])
    with pytest.raises(ValueError, match="unique"):
        make([task, task])
    with pytest.raises(ValueError, match="unknown loss term keys"):
        make([{**task, "alpha": 1.0}])
    with pytest.raises(ValueError, match="needs a teacher"):
        make([task], mode="offline")
    with pytest.raises(ValueError, match="identifiers"):
        make([task], students={"teacher": _resnet(4)})
    with pytest.raises(ValueError, match="misses"):
        make([task], optimizer=torch.optim.SGD(list(students["s1"].parameters())[:2], lr=0.1))
    with pytest.raises(ValueError, match="accumulation_steps"):
        make([task], accumulation_steps=2)
    with pytest.raises(KeyError, match="layer9"):
        make([task, LossTerm("f", "s1", "feature", FeatureKDLoss(), "teacher", "layer9", "layer1")], _resnet(4), "offline")
    assert len(trainable_parameters(students, [task], _resnet(4), "offline")) == len(list(students["s1"].parameters()))
