"""Int8 students: ONNX Runtime static quantisation against fp32 on real images, the QAT config switch, infer-dicom.

The fast student is trained for one short epoch on real PneumoniaMNIST images (a working classifier, not a result).
No timing is asserted: latency belongs to ``scripts/bench_latency.py``.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import REPO
from monai.bundle import ConfigParser, run

from monai_kd.data import medmnist_datalist
from monai_kd.networks import FastStudent, load_pretrained
from monai_kd.quantization import (
    OnnxNetwork,
    calibration_images,
    export_onnx,
    fake_quantized,
    has_fake_quant,
    quantize_onnx,
    strip_fake_quant,
)

BUNDLE = REPO / "bundles" / "kd"
FAST = [str(BUNDLE / "configs" / f) for f in ("train.json", "student_fast.json")]
QAT = [*FAST, str(BUNDLE / "configs" / "student_qat.json")]
META = str(BUNDLE / "configs" / "metadata.json")


def _images(data_dir, split: str) -> tuple[np.ndarray, np.ndarray]:
    items = medmnist_datalist(data_dir / "pneumoniamnist", split)
    return np.stack([i["image"] for i in items]).astype(np.float32), np.array([int(i["label"]) for i in items])


@pytest.fixture(scope="module")
def fast_onnx(tmp_path_factory, data_dir):
    """The fast student trained alone for one epoch on PneumoniaMNIST, exported to fp32 and int8 ONNX."""
    root = tmp_path_factory.mktemp("fast")
    run("run_student_alone", config_file=FAST, meta_file=META, bundle_root=str(root),
        dataset_dir=str(data_dir / "pneumoniamnist"), max_epochs=1, seed=0)
    net = load_pretrained(FastStudent(), root / "models" / "student_alone.pt").eval()
    fp32 = export_onnx(net, (1, 28, 28), root / "model.onnx")
    train, _ = _images(data_dir, "train")
    int8 = quantize_onnx(fp32, root / "model_int8.onnx", calibration_images(train, 256, seed=0))
    return net, fp32, int8


def test_int8_agrees_with_fp32_on_real_images(fast_onnx, data_dir):
    net, fp32, int8 = fast_onnx
    x, y = _images(data_dir, "test")
    with torch.no_grad():
        p_torch = net(torch.from_numpy(x)).softmax(1)
    p_fp32 = OnnxNetwork(fp32, threads=1)(torch.from_numpy(x)).softmax(1)
    p_int8 = OnnxNetwork(int8, threads=1)(torch.from_numpy(x)).softmax(1)
    assert torch.allclose(p_fp32, p_torch, atol=1e-4)  # the export itself is exact
    assert (p_torch.argmax(1) == torch.from_numpy(y)).float().mean() > 0.75  # a working classifier
    # int8 rounding moves probabilities a little and flips only borderline predictions
    assert (p_int8.argmax(1) == p_fp32.argmax(1)).float().mean() >= 0.97
    assert (p_int8 - p_fp32).abs().mean() < 0.03
    # the int8 file holds int8 weights: it is the quantised model, not a copy of the fp32 one
    import onnx

    inits = onnx.load(int8).graph.initializer
    assert any(t.data_type == onnx.TensorProto.INT8 for t in inits)
    assert not any(t.data_type == onnx.TensorProto.INT8 for t in onnx.load(fp32).graph.initializer)


def test_static_quantisation_needs_calibration_and_a_known_mode(fast_onnx, tmp_path):
    _, fp32, _ = fast_onnx
    with pytest.raises(ValueError, match="calibration images"):
        quantize_onnx(fp32, tmp_path / "q.onnx")
    with pytest.raises(ValueError, match="static.*dynamic"):
        quantize_onnx(fp32, tmp_path / "q.onnx", mode="float16")


def _parsed(files: list[str], **override) -> ConfigParser:
    parser = ConfigParser()
    parser.read_config(files)
    parser.update({"device": "$torch.device('cpu')", **override})
    return parser


def test_qat_switch_changes_the_trained_graph(tmp_path, data_dir):
    assert not has_fake_quant(_parsed(FAST).get_parsed_content("network"))
    assert not has_fake_quant(_parsed(QAT, qat=False).get_parsed_content("network"))
    parser = _parsed(QAT)
    for key in ("network", "train#network_avg", "student_alone#network", "student_alone#network_avg"):
        assert has_fake_quant(parser.get_parsed_content(key)), key
    # distil the fake-quantised student from a teacher for a few iterations (wiring: the teacher is untrained)
    teacher_ckpt = tmp_path / "teacher.pt"
    torch.manual_seed(0)
    torch.save(parser.get_parsed_content("teacher_def").state_dict(), teacher_ckpt)
    run("run_student", config_file=QAT, meta_file=META, bundle_root=str(tmp_path), teacher_ckpt=str(teacher_ckpt),
        dataset_dir=str(data_dir / "breastmnist"), max_epochs=2, batch_size=128, device="cpu")
    state = torch.load(tmp_path / "models" / "model.pt", weights_only=True)
    assert any(k.endswith("weight_fake_quant.scale") for k in state)  # the averaged QAT student was saved
    trained = load_pretrained(fake_quantized(FastStudent(), True, (1, 28, 28)), tmp_path / "models" / "model.pt")
    float_net = strip_fake_quant(trained, FastStudent())
    x = torch.from_numpy(_images(data_dir, "test")[0][:64])
    with torch.no_grad():
        q = trained.eval()(x)
        trained.apply(torch.ao.quantization.disable_fake_quant)
        unrounded, f = trained(x), float_net(x)
    # the float network carries the QAT weights: it is the trained graph without the int8 rounding
    assert torch.allclose(f, unrounded, atol=1e-4) and not torch.allclose(q, unrounded, atol=1e-4)


def test_infer_dicom_runs_the_int8_model(fast_onnx, data_dir, tmp_path):
    pytest.importorskip("highdicom")
    import sys

    sys.path.insert(0, str(REPO / "tests" / "io"))
    from dicom_testdata import pydicom_file

    from monai_kd.dicom_inference import infer_dicom

    _, fp32, int8 = fast_onnx
    ct_dir = data_dir / "totalsegmentator-examples" / "example_ct_dicom"
    summaries = {}
    for name, model in (("fp32", fp32), ("int8", int8)):
        for source, label in ((str(ct_dir), "ct"), (pydicom_file("CT_small.dcm"), "small")):
            # plumbing only: the chest X-ray classifier on CT series, so the input contract is forced
            written = infer_dicom(str(BUNDLE), source, str(tmp_path / name / label), ckpt_file=str(model), force=True)
            assert written[0].endswith(".sr.dcm") and written[1].endswith(".classification.json")
            summaries[name, label] = json.loads(open(written[1]).read())
    for label in ("ct", "small"):
        a, b = summaries["fp32", label]["probabilities"], summaries["int8", label]["probabilities"]
        assert set(a) == {"normal", "pneumonia"} and sum(b.values()) == pytest.approx(1.0, abs=1e-5)
        assert b == pytest.approx(a, abs=0.1)


def _export_fast_int8(bundle, net, data_dir, tmp_path):
    """``monai-kd export BUNDLE --int8 --overlay configs/student_fast.json`` of ``net``'s weights; the output folder."""
    from monai_kd import cli

    ckpt = tmp_path / "model.pt"
    torch.save(net.state_dict(), ckpt)
    out = tmp_path / "export"
    cli.export(str(bundle), ckpt_file=str(ckpt), output_dir=str(out), int8=True,
               overlay=str(bundle / "configs" / "student_fast.json"), dataset_dir=str(data_dir / "pneumoniamnist"))
    assert sorted(p.name for p in out.iterdir()) == ["model.onnx", "model.ts", "model_int8.onnx"]
    return out


def test_export_cli_writes_an_int8_model(fast_onnx, data_dir, tmp_path):
    from monai_kd import cli

    net, fp32, _ = fast_onnx
    out = _export_fast_int8(BUNDLE, net, data_dir, tmp_path)
    ckpt = tmp_path / "model.pt"
    x = torch.from_numpy(_images(data_dir, "test")[0])
    p_fp32 = OnnxNetwork(out / "model.onnx", threads=1)(x).softmax(1)
    p_int8 = OnnxNetwork(out / "model_int8.onnx", threads=1)(x).softmax(1)
    assert torch.allclose(p_fp32, OnnxNetwork(fp32, threads=1)(x).softmax(1), atol=1e-4)  # the same student
    assert (p_int8.argmax(1) == p_fp32.argmax(1)).float().mean() >= 0.97
    with pytest.raises(Exception, match="overlay config"):
        cli.export(str(BUNDLE), ckpt_file=str(ckpt), output_dir=str(out), overlay="missing.json")


FAST_OVERLAYS = [("kd", "inference.json", "student_fast.json"), ("kdml_cls", "inference.json", "student_fast.json"),
                 ("mmkd", "inference.json", "student_fast.json"), ("weckd", "inference.json", "student_fast.json"),
                 ("emtkd", "inference_classification.json", "student_fast_classification.json")]


@pytest.mark.parametrize("bundle, inference, overlay", FAST_OVERLAYS)
def test_every_fast_overlay_builds_over_the_inference_config(bundle, inference, overlay):
    """``monai-kd export BUNDLE --overlay configs/student_fast*.json`` builds ``network_def`` from the inference config
    and the overlay only: an overlay referring to a key only ``train.json`` defines (mmkd's and emtkd's
    ``@spatial_dims``) made the export fail with "network_def cannot be found"."""
    from monai.bundle import ConfigParser

    configs = REPO / "bundles" / bundle / "configs"
    parser = ConfigParser()
    parser.read_config([str(configs / inference), str(configs / overlay)])
    net = parser.get_parsed_content("network_def")
    assert type(net).__name__ == "FastStudent" and sum(p.numel() for p in net.parameters()) == 13_330


def test_export_cli_writes_the_mmkd_fast_student_in_int8(data_dir, tmp_path):
    from monai_kd.networks import FastStudent

    net = FastStudent(spatial_dims=2, in_channels=1, num_classes=2).eval()
    out = _export_fast_int8(REPO / "bundles" / "mmkd", net, data_dir, tmp_path)
    x = torch.from_numpy(_images(data_dir, "test")[0][:64])
    with torch.no_grad():
        assert torch.allclose(OnnxNetwork(out / "model.onnx", threads=1)(x), net(x), atol=1e-4)  # the same student
