"""Shared helpers and fixtures of the DICOM I/O tests: real series copied (and edited) into tmp_path, the
``dciodvfy`` validator, a tiny segmentation bundle and a freshly initialised kd student checkpoint.

Imported by the test modules (``from dicom_testdata import ...``); fixtures imported this way are found by pytest.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pydicom
import pytest
from conftest import REPO
from pydicom.data import get_testdata_file

CT_SERIES = ("totalsegmentator-examples", "example_ct_dicom")
CT_LABELS = ("totalsegmentator-examples", "example_seg_dicom.nii.gz")
KD_BUNDLE = REPO / "bundles" / "kd"


def pydicom_file(name: str) -> str:
    """Path of one of pydicom's own test files (e.g. ``CT_small.dcm``)."""
    return get_testdata_file(name)


@pytest.fixture(scope="session")
def ct_dir(data_dir: Path) -> Path:
    """The real 20-slice CT series (JPEG 2000 lossless, read-only)."""
    folder = data_dir.joinpath(*CT_SERIES)
    if not folder.is_dir():
        pytest.skip(f"real CT series not found: {folder}")
    return folder


@pytest.fixture(scope="session")
def ct_labels(data_dir: Path) -> Path:
    """TotalSegmentator label map (NIfTI, LAS) of the real CT series."""
    path = data_dir.joinpath(*CT_LABELS)
    if not path.is_file():
        pytest.skip(f"real label map not found: {path}")
    return path


@pytest.fixture(scope="session")
def ct_series(ct_dir: Path):
    """The real CT series, loaded once (its volume is cached; tests must not modify it)."""
    from monai_kd.io import load_dicom_series

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the anonymised series has empty UIDs (derived, with a warning)
        series = load_dicom_series(ct_dir)
    series.load()
    return series


def copy_series(
    source: Path, target: Path, edit: Callable[[int, pydicom.Dataset], pydicom.Dataset | None] | None = None
) -> list[Path]:
    """Copy a series folder; ``edit(index, dataset)`` may change a header (return it) or drop the file (None)."""
    target.mkdir(parents=True, exist_ok=True)
    written = []
    for index, path in enumerate(sorted(source.iterdir())):
        out = target / path.name
        if edit is None:
            shutil.copyfile(path, out)
        else:
            ds = edit(index, pydicom.dcmread(path))
            if ds is None:
                continue
            ds.save_as(out, enforce_file_format=True)
        written.append(out)
    return written


def dciodvfy_errors(path: str | Path) -> list[str]:
    """The ``Error`` lines of the DICOM IOD validator ``dciodvfy`` (dicom3tools) for a file."""
    exe = shutil.which("dciodvfy")
    if exe is None:
        pytest.skip("dciodvfy not installed (Debian/Ubuntu: apt-get install dicom3tools)")
    result = subprocess.run([exe, str(path)], capture_output=True, text=True, timeout=120, check=False)
    lines = (result.stdout + result.stderr).splitlines()
    return [line for line in lines if line.startswith("Error")]


def segmentation_bundle(root: Path, channel_def: dict[str, str] | None = None) -> Path:
    """Write a tiny 3D segmentation bundle like MONAI's model-zoo ones (Orientation/Spacing, sliding window,
    Invertd and SaveImaged in the postprocessing) with a freshly initialised UNet saved as models/model.pt."""
    import torch
    from monai.bundle import ConfigParser

    channel_def = channel_def or {"0": "background", "1": "liver", "2": "spleen"}
    meta = {
        "version": "0.0.1",
        "name": "tiny_seg",
        "network_data_format": {
            "inputs": {
                "image": {
                    "type": "image",
                    "format": "hounsfield",
                    "modality": "CT",
                    "num_channels": 1,
                    "spatial_shape": [64, 64, 8],
                    "dtype": "float32",
                    "value_range": [0, 1],
                    "is_patch_data": True,
                    "channel_def": {"0": "image"},
                }
            },
            "outputs": {
                "pred": {
                    "type": "image",
                    "format": "segmentation",
                    "num_channels": len(channel_def),
                    "spatial_shape": [64, 64, 8],
                    "dtype": "float32",
                    "value_range": [],
                    "is_patch_data": True,
                    "channel_def": channel_def,
                }
            },
        },
    }
    inference = {
        "imports": ["$import torch"],
        "bundle_root": str(root),
        "output_dir": "$@bundle_root + '/eval'",
        "device": "$torch.device('cpu')",
        "network_def": {
            "_target_": "UNet",
            "spatial_dims": 3,
            "in_channels": 1,
            "out_channels": len(channel_def),
            "channels": [4, 8],
            "strides": [2],
            "num_res_units": 0,
        },
        "preprocessing": {
            "_target_": "Compose",
            "transforms": [
                {"_target_": "LoadImaged", "keys": "image", "ensure_channel_first": True},
                {"_target_": "Orientationd", "keys": "image", "axcodes": "RAS", "labels": None},
                {"_target_": "Spacingd", "keys": "image", "pixdim": [4.0, 4.0, 4.0], "mode": "bilinear"},
                {
                    "_target_": "ScaleIntensityRanged",
                    "keys": "image",
                    "a_min": -1000,
                    "a_max": 1000,
                    "b_min": 0.0,
                    "b_max": 1.0,
                    "clip": True,
                },
                {"_target_": "EnsureTyped", "keys": "image"},
            ],
        },
        "inferer": {"_target_": "SlidingWindowInferer", "roi_size": [64, 64, 8], "sw_batch_size": 1, "overlap": 0.25},
        "postprocessing": {
            "_target_": "Compose",
            "transforms": [
                {"_target_": "Activationsd", "keys": "pred", "softmax": True},
                {
                    "_target_": "Invertd",
                    "keys": "pred",
                    "transform": "@preprocessing",
                    "orig_keys": "image",
                    "nearest_interp": False,
                    "to_tensor": True,
                },
                {"_target_": "AsDiscreted", "keys": "pred", "argmax": True},
                {"_target_": "SaveImaged", "keys": "pred", "output_dir": "@output_dir", "resample": False},
            ],
        },
    }
    (root / "configs").mkdir(parents=True, exist_ok=True)
    (root / "models").mkdir(exist_ok=True)
    (root / "configs" / "metadata.json").write_text(json.dumps(meta, indent=2))
    (root / "configs" / "inference.json").write_text(json.dumps(inference, indent=2))
    parser = ConfigParser()
    parser.read_config(str(root / "configs" / "inference.json"))
    torch.manual_seed(0)
    torch.save(parser.get_parsed_content("network_def").state_dict(), root / "models" / "model.pt")
    return root


@pytest.fixture(scope="session")
def kd_checkpoint(tmp_path_factory) -> Path:
    """Weights of the kd bundle's freshly initialised student (a wiring test needs no trained model)."""
    import torch
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(KD_BUNDLE / "configs" / "inference.json"))
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("kd_ckpt") / "model.pt"
    torch.save(parser.get_parsed_content("network_def").state_dict(), path)
    return path


def files_below(folder: Path) -> list[Path]:
    """Every file below ``folder`` (empty if it does not exist)."""
    return sorted(p for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


def raw_slice(path: Path) -> np.ndarray:
    """Stored pixel values of a single-frame file, in MONAI layout (column, row)."""
    return pydicom.dcmread(path).pixel_array.T
