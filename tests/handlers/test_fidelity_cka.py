from __future__ import annotations

import copy
import json

import pytest
import torch
from monai.bundle import ConfigParser
from monai.engines import SupervisedEvaluator
from monai.networks.nets import ResNet, UNet

from monai_kd.handlers.fidelity_cka import FidelityCKAHandler


def _resnet(width: int) -> ResNet:
    return ResNet("basic", [1, 1, 1, 1], [width] * 4, spatial_dims=2, n_input_channels=1, num_classes=2)


def _images(n: int, size: int = 12) -> list[dict]:
    """Deterministic images: sinusoidal patterns whose frequency changes from image to image."""
    yy, xx = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing="ij")
    return [
        {"image": torch.sin((i + 1) * 3.0 * xx + i * yy).unsqueeze(0), "label": torch.tensor(i % 2)} for i in range(n)
    ]


def test_identical_student_has_fidelity_one_and_unit_cka_diagonal(tmp_path):
    pytest.importorskip("matplotlib")  # optional dependency ("plots" extra) for the heatmap
    teacher = _resnet(4).eval()
    student = copy.deepcopy(teacher).train()
    loader = torch.utils.data.DataLoader(_images(8), batch_size=3)
    evaluator = SupervisedEvaluator("cpu", loader, student)
    layers = ["layer1", "layer3", "layer4"]
    handler = FidelityCKAHandler(student, teacher, tmp_path / "out", layers, layers, name="s1", metric_name="fid_s1")
    handler.attach(evaluator)
    evaluator.run()

    result = json.loads((tmp_path / "out" / "s1_fidelity_cka.json").read_text())
    assert result["fidelity"] == 1.0 and result["num_samples"] == 8
    assert result["teacher_layers"] == layers and result["student_layers"] == layers
    cka = torch.tensor(result["cka"])
    assert cka.shape == (3, 3) and torch.allclose(cka.diagonal(), torch.ones(3, dtype=cka.dtype))
    assert (tmp_path / "out" / result["heatmap"]).read_bytes()[:4] == b"\x89PNG"
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["s1_cka.png", "s1_fidelity_cka.json"]
    assert evaluator.state.metrics["fid_s1"] == 1.0
    assert student.training and not teacher.training  # the handler restores the modes it found
    assert all(not m._forward_hooks for m in student.modules())  # taps removed


def test_segmentation_student_and_sample_cap(tmp_path):
    # wiring only: a different (random) student, U-Net decoder layers, at most 5 samples
    teacher = UNet(2, 1, 2, channels=(8, 16, 32), strides=(2, 2), num_res_units=0)
    student = UNet(2, 1, 2, channels=(4, 8, 16), strides=(2, 2), num_res_units=0).train()
    loader = torch.utils.data.DataLoader(_images(8, 16), batch_size=3)
    handler = FidelityCKAHandler(
        student, teacher, tmp_path, ["model.0", "model.1.submodule.2"], ["model.1.submodule.2"], loader, name="s2", max_samples=5,
        heatmap=False,
    )
    result = handler.compute(loader)
    assert result["num_samples"] == 5 and 0.0 <= result["fidelity"] <= 1.0
    assert torch.tensor(result["cka"]).shape == (1, 2) and result["heatmap"] is None
    assert [p.name for p in tmp_path.iterdir()] == ["s2_fidelity_cka.json"]
    assert student.training  # mode restored


def test_constructible_from_bundle_and_errors(tmp_path):
    parser = ConfigParser(
        {
            "net": {"_target_": "monai.networks.nets.ResNet", "block": "basic", "layers": [1, 1, 1, 1],
                    "block_inplanes": [4, 4, 4, 4], "spatial_dims": 2, "n_input_channels": 1, "num_classes": 2},
            "handler": {"_target_": "monai_kd.handlers.fidelity_cka.FidelityCKAHandler", "student": "@net",
                        "teacher": "@net", "output_dir": str(tmp_path), "student_layers": ["layer4"],
                        "teacher_layers": ["layer4"], "name": "s1"},
        }
    )
    assert isinstance(parser.get_parsed_content("handler"), FidelityCKAHandler)
    with pytest.raises(ValueError, match="at least one"):
        FidelityCKAHandler(_resnet(4), _resnet(4), tmp_path, [], ["layer4"])
    with pytest.raises(ValueError, match="task"):
        FidelityCKAHandler(_resnet(4), _resnet(4), tmp_path, ["layer4"], ["layer4"], task="detection")
    with pytest.raises(KeyError, match="layer9"):
        FidelityCKAHandler(_resnet(4), _resnet(4), tmp_path, ["layer9"], ["layer4"]).compute(_images(2))
