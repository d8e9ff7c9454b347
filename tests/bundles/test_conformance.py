"""MONAI bundle conformance, run for every folder in bundles/ (later bundles are checked automatically)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser, ConfigWorkflow, verify_net_in_out

from monai_kd import cli
from monai_kd.bundle_utils import input_shape, verify_metadata

from conftest import BUNDLES, REPO

REQUIRED_FILES = [
    "configs/train.json",
    "configs/inference.json",
    "configs/evaluate.json",
    "configs/metadata.json",
    "configs/logging.conf",
    "configs/multi_gpu_train.json",
    "docs/README.md",
    "LICENSE",
]

pytestmark = pytest.mark.parametrize("bundle", BUNDLES, ids=[b.name for b in BUNDLES])


def _configs(bundle: Path, name: str) -> dict:
    return {
        "config_file": str(bundle / "configs" / name),
        "meta_file": str(bundle / "configs" / "metadata.json"),
        "logging_file": str(bundle / "configs" / "logging.conf"),
    }


def _student_checkpoint(bundle: Path, tmp_path: Path) -> tuple[torch.nn.Module, Path]:
    """Instantiate the bundle's inference network and save its (initial) weights as a checkpoint."""
    parser = ConfigParser()
    parser.read_config(str(bundle / "configs" / "inference.json"))
    parser["bundle_root"] = str(bundle)
    net = parser.get_parsed_content("network_def").eval()
    ckpt = tmp_path / "model.pt"
    torch.save(net.state_dict(), ckpt)  # the CheckpointSaver format for one object
    return net, ckpt


def test_bundle_has_required_files(bundle):
    missing = [f for f in REQUIRED_FILES if not (bundle / f).is_file()]
    assert not missing, f"{bundle.name} lacks {missing}"


def test_metadata_verifies_against_shipped_schema(bundle):
    verify_metadata(bundle)


def test_metadata_schema_rejects_incomplete_metadata(bundle, tmp_path):
    meta = json.loads((bundle / "configs" / "metadata.json").read_text())
    del meta["network_data_format"]
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "metadata.json").write_text(json.dumps(meta))
    with pytest.raises(Exception, match="network_data_format"):
        verify_metadata(tmp_path)


def test_train_workflow_properties(bundle, tmp_path, data_dir, monkeypatch):
    monkeypatch.chdir(REPO)  # default dataset_dir values are relative to the repository root
    workflow = ConfigWorkflow(workflow_type="train", bundle_root=str(tmp_path), **_configs(bundle, "train.json"))
    workflow.initialize()
    assert workflow.check_properties() == []
    assert isinstance(workflow.max_epochs, int) and workflow.max_epochs > 0


def test_infer_workflow_properties(bundle, tmp_path, pneumonia_pngs):
    workflow = ConfigWorkflow(
        workflow_type="infer", bundle_root=str(tmp_path), dataset_dir=str(pneumonia_pngs), **_configs(bundle, "inference.json")
    )
    workflow.initialize()
    assert workflow.check_properties() == []
    assert workflow.network_def is not None and workflow.inferer is not None


def test_net_in_out(bundle):
    verify_net_in_out(net_id="network_def", n=1, p=1, any=1, extra_forward_args={}, **_configs(bundle, "inference.json"))


def test_torchscript_and_onnx_exports_match_eager(bundle, tmp_path):
    net, ckpt = _student_checkpoint(bundle, tmp_path)
    cli.export(str(bundle), ckpt_file=str(ckpt), output_dir=str(tmp_path / "export"))
    x = torch.rand(*input_shape(bundle, batch=2))
    with torch.no_grad():
        expected = net(x)
        scripted = torch.jit.load(str(tmp_path / "export" / "model.ts"), map_location="cpu")
        assert torch.allclose(scripted(x), expected, atol=1e-5)
    import onnxruntime

    session = onnxruntime.InferenceSession(str(tmp_path / "export" / "model.onnx"), providers=["CPUExecutionProvider"])
    (onnx_out,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    np.testing.assert_allclose(onnx_out, expected.numpy(), atol=1e-4)
