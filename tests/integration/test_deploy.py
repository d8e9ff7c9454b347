"""MONAI Deploy path: ``scripts/deploy/run_ct_example.sh`` (the example app in ``.venv-deploy``) on the real CT.

Runs only where ``.venv-deploy/`` exists (``bash scripts/deploy/setup_venv.sh`` creates it; CI does not: the
SDK pulls Holoscan, several GB). The app's outputs are compared with monai_kd's own path in this environment:
the classification JSON with ``infer_dicom`` on the same weights, the DICOM SEG with the bundle's
``inference.json`` pipeline on the series as :class:`~monai_kd.io.DicomSeriesReader` loads it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest

REPO = Path(__file__).resolve().parents[2]
DATA = REPO.parent / "shared" / "data"
CT = DATA / "totalsegmentator-examples" / "example_ct_dicom"
VENV_PYTHON = REPO / ".venv-deploy" / "bin" / "python"
SCRIPT = REPO / "scripts" / "deploy" / "run_ct_example.sh"

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore")]


@pytest.fixture(autouse=True)
def _needs_venv_and_data():
    if not VENV_PYTHON.exists():
        pytest.skip("create it with bash scripts/deploy/setup_venv.sh")
    if not CT.is_dir():
        pytest.skip(f"real CT series not found: {CT}")


def _fresh_checkpoint(bundle: Path, path: Path) -> Path:
    import torch
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(bundle / "configs" / "inference.json"))
    parser["bundle_root"] = str(bundle)
    torch.manual_seed(0)
    torch.save(parser.get_parsed_content("network_def").state_dict(), path)
    return path


def _run_example(bundle: Path, ckpt: Path, out: Path) -> list[Path]:
    env = {**os.environ, "BUNDLE": str(bundle), "CKPT": str(ckpt), "OMP_NUM_THREADS": "1"}
    result = subprocess.run(["bash", str(SCRIPT), str(out)], cwd=REPO, env=env, capture_output=True, text=True,
                            timeout=1800, check=False)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-5000:]
    if shutil.which("dciodvfy"):
        assert "error(s)" in output and all(" 0 error(s)" in line for line in output.splitlines() if "dciodvfy" in line)
    return sorted((out / "output").iterdir())


def _series():
    from monai_kd.io import load_dicom_series

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        series = load_dicom_series(CT, modality="CT")
    series.load()
    return series


def test_deploy_classification_matches_infer_dicom(tmp_path):
    from monai_kd.dicom_inference import infer_dicom

    bundle = REPO / "bundles" / "kd"
    ckpt = _fresh_checkpoint(bundle, tmp_path / "kd.pt")
    files = _run_example(bundle, ckpt, tmp_path / "deploy")
    assert [p.suffix for p in files].count(".dcm") == 1 and [p.name.endswith(".classification.json") for p in files]
    series = _series()
    summary = json.loads(next(p for p in files if p.name.endswith(".json")).read_text())
    assert summary["series_instance_uid"] == series.series_uid  # the same derived UID as monai-kd infer-dicom
    reference = json.loads(Path(infer_dicom(str(bundle), str(CT), str(tmp_path / "ref"), modality="CT",
                                            ckpt_file=str(ckpt))[-1]).read_text())
    assert summary["slice_index"] == reference["slice_index"] == 10
    assert summary["predicted_class"] == reference["predicted_class"]
    for name, p in reference["probabilities"].items():
        assert summary["probabilities"][name] == pytest.approx(p, abs=1e-5)
    sr = pydicom.dcmread(next(p for p in files if p.suffix == ".dcm"))
    assert sr.Modality == "SR" and sr.StudyInstanceUID == series.study_uid
    assert summary["predicted_class"] in str(sr.ContentSequence[0].TextValue)


def test_deploy_segmentation_seg_matches_bundle_pipeline(tmp_path):
    import torch

    from monai_kd.dicom_inference import _loader_index, _network, _parser, _postprocessing
    from monai_kd.io import DicomSeriesReader
    from monai_kd.io.dicom_seg import read_dicom_seg

    bundle = REPO / "bundles" / "kdml_seg"
    if not (bundle / "configs" / "metadata.json").is_file():
        pytest.skip("bundles/kdml_seg does not exist")
    ckpt = _fresh_checkpoint(bundle, tmp_path / "seg.pt")
    files = _run_example(bundle, ckpt, tmp_path / "deploy")
    assert len(files) == 1 and files[0].suffix == ".dcm"
    series = _series()
    seg = pydicom.dcmread(files[0])
    assert seg.Modality == "SEG"
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == series.series_uid
    meta = json.loads((bundle / "configs" / "metadata.json").read_text())
    channel_def = meta["network_data_format"]["outputs"]["pred"]["channel_def"]
    labels = read_dicom_seg(files[0], series, channel_def)  # on the source grid, frames matched by position

    parser = _parser(str(bundle), torch.device("cpu"))
    preprocessing = parser.get_parsed_content("preprocessing")
    preprocessing.transforms[_loader_index(preprocessing)]._loader.register(DicomSeriesReader(series=series))
    data = preprocessing({"image": str(CT)})
    network = _network(parser, str(bundle), str(ckpt), torch.device("cpu"))
    with torch.no_grad():
        data["pred"] = parser.get_parsed_content("inferer")(data["image"][None], network)[0]
    reference = _postprocessing(parser)(data)["pred"][0].numpy().astype(int)
    assert labels.shape == reference.shape == tuple(series.spatial_shape)
    assert np.mean(labels == reference) > 0.999
