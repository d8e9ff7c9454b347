#!/usr/bin/env python
"""End-to-end DICOM check with a model that fits the anatomy: BraTS FLAIR as DICOM MR series -> DICOM SEG.

    python scripts/brats_dicom_seg.py [--bundle bundles/kdml_seg] [--ckpt_file MODEL.pt] [--split test]
        [--subjects N] [--work scripts/_work/brats_dicom] [--report docs/deployment.md]

For every subject of the split (``../shared/data/brats2015-sample/<split>/*``):

1. the FLAIR NIfTI volume is written as a DICOM MR series with its geometry
   (:func:`monai_kd.io.dicom_image.write_dicom_series`: orientation, spacing, slice positions from the affine);
2. the bundle's student segments the DICOM series with ``monai-kd infer-dicom`` (here in-process,
   :func:`monai_kd.dicom_inference.infer_dicom`, ``--nifti``): a DICOM SEG referencing the series;
3. the same student segments the original NIfTI file with the same command (NIfTI in, NIfTI out);
4. the SEG is read back on the series grid (:func:`monai_kd.io.dicom_seg.read_dicom_seg`) and compared with the
   NIfTI prediction voxel by voxel after checking that both grids are the same in world coordinates; both are
   also scored against the whole-tumour ground truth (labels > 0), and the SEG is checked with ``dciodvfy``.

The DICOM pixel values are the FLAIR intensities mapped linearly to 16 bits, which the bundle's preprocessing
(background to 0, z-score over the brain) undoes up to rounding, so the two predictions should agree on all but
a handful of voxels at the decision boundary.

Writes ``<work>/brats_dicom_seg.json`` and a Markdown table to stdout and into the ``brats-dicom`` section of
``--report`` (default ``docs/deployment.md``; ``--report ''`` to skip). Weights: ``--ckpt_file``, else
``models/model.pt`` of the bundle. Deterministic: no randomness is involved once the weights are given.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pydicom

from monai_kd.data import brats_volume_datalist
from monai_kd.dicom_inference import infer_dicom
from monai_kd.io import load_dicom_series
from monai_kd.io.dicom_image import write_dicom_series
from monai_kd.io.dicom_seg import read_dicom_seg
from monai_kd.reporting import write_section

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("MONAI_KD_DATA", REPO.parent / "shared" / "data")) / "brats2015-sample"
AFFINE_ATOL_MM = 1e-3


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice of two binary masks (1.0 when both are empty)."""
    a, b = a.astype(bool), b.astype(bool)
    total = int(a.sum() + b.sum())
    return 1.0 if total == 0 else 2.0 * float(np.logical_and(a, b).sum()) / total


def dciodvfy_errors(path: str) -> int | None:
    """Number of ``Error`` lines of the DICOM IOD validator for a file (``None`` when it is not installed)."""
    exe = shutil.which("dciodvfy")
    if exe is None:
        return None
    result = subprocess.run([exe, path], capture_output=True, text=True, timeout=300, check=False)
    return sum(line.startswith("Error") for line in (result.stdout + result.stderr).splitlines())


def check_subject(item: dict, bundle: str, ckpt_file: str | None, work: Path) -> dict[str, Any]:
    """Write one subject's FLAIR as DICOM, segment the DICOM and the NIfTI, and compare the two results.

    Args:
        item: a :func:`monai_kd.data.brats_volume_datalist` entry (``image``, ``label``, ``subject``).
        bundle: the segmentation bundle folder.
        ckpt_file: student weights (``None``: the bundle's ``models/model.pt``).
        work: output folder; the subject's files go to ``work/<subject>/``.

    Returns:
        The record of the subject: paths, grid checks, agreement, Dice against the ground truth, seconds.
    """
    subject = item["subject"]
    root = work / subject
    source = nib.load(item["image"])
    start = time.perf_counter()
    info = write_dicom_series(
        np.asarray(source.dataobj, dtype=np.float32),
        source.affine,
        root / "dicom",
        modality="MR",
        series_description="FLAIR",
        patient_id=subject,
        protect=item["image"],
    )
    seconds = {"write_dicom": time.perf_counter() - start}
    start = time.perf_counter()
    seg_file, seg_nifti = infer_dicom(bundle, str(root / "dicom"), str(root / "seg"), nifti=True, ckpt_file=ckpt_file)
    seconds["infer_dicom"] = time.perf_counter() - start
    start = time.perf_counter()
    (nifti_pred,) = infer_dicom(bundle, item["image"], str(root / "nifti"), ckpt_file=ckpt_file)
    seconds["infer_nifti"] = time.perf_counter() - start

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        series = load_dicom_series(root / "dicom")
    meta = json.loads((Path(bundle) / "configs" / "metadata.json").read_text())
    channel_def = meta["network_data_format"]["outputs"]["pred"]["channel_def"]
    from_seg = read_dicom_seg(seg_file, series, channel_def)
    prediction = nib.load(nifti_pred)
    from_nifti = np.asarray(prediction.dataobj)
    same_grid = from_seg.shape == from_nifti.shape and np.allclose(
        series.affine, prediction.affine, atol=AFFINE_ATOL_MM
    )
    if not same_grid:
        raise RuntimeError(
            f"{subject}: the DICOM series grid {series.spatial_shape} / {series.affine.tolist()} differs from the "
            f"NIfTI grid {from_nifti.shape} / {prediction.affine.tolist()}"
        )
    truth = np.asarray(nib.load(item["label"]).dataobj) > 0
    seg = pydicom.dcmread(seg_file, stop_before_pixels=True)
    return {
        "subject": subject,
        "slices": int(series.spatial_shape[2]),
        "seg_file": seg_file,
        "seg_nifti_file": seg_nifti,
        "nifti_prediction": nifti_pred,
        "dicom_series_uid": info.series_uid,
        "seg_references_source_series": seg.ReferencedSeriesSequence[0].SeriesInstanceUID == info.series_uid,
        "seg_frames": int(seg.NumberOfFrames),
        "segments": [s.SegmentLabel for s in seg.SegmentSequence],
        "same_grid": bool(same_grid),
        "differing_voxels": int(np.count_nonzero(from_seg != from_nifti)),
        "dice_seg_vs_nifti": dice(from_seg > 0, from_nifti > 0),
        "dice_seg_vs_truth": dice(from_seg > 0, truth),
        "dice_nifti_vs_truth": dice(from_nifti > 0, truth),
        "foreground_voxels": {"seg": int((from_seg > 0).sum()), "nifti": int((from_nifti > 0).sum())},
        "dciodvfy_errors": {"mr_first": dciodvfy_errors(info.files[0]), "seg": dciodvfy_errors(seg_file)},
        "seconds": {k: round(v, 2) for k, v in seconds.items()},
    }


def markdown(report: dict) -> str:
    """The report as a Markdown table."""
    lines = [
        f"Generated by `python {' '.join(report['command'])}` ({report['date']}, {report['machine']}). Bundle "
        f"`{report['bundle']}`, weights `{report['ckpt_file']}`, split `{report['split']}`. Each FLAIR volume was "
        "written as a DICOM MR series (`monai_kd.io.dicom_image.write_dicom_series`) and segmented through "
        "`monai-kd infer-dicom` (DICOM SEG) and, from the original NIfTI file, through the same command (NIfTI); "
        "the SEG read back on the series grid is compared voxel by voxel with the NIfTI prediction. Dice against "
        "the whole-tumour ground truth (labels > 0) on the full 240x240x155 grid.",
        "",
        "| subject | slices | SEG frames | same grid | SEG refs source series | differing voxels | Dice SEG vs NIfTI "
        "| Dice SEG vs truth | Dice NIfTI vs truth | dciodvfy errors (MR / SEG) | infer-dicom s |",
        "|---|---:|---:|---|---|---:|---:|---:|---:|---|---:|",
    ]
    for r in report["subjects"]:
        errors = r["dciodvfy_errors"]
        lines.append(
            f"| {r['subject']} | {r['slices']} | {r['seg_frames']} | {'yes' if r['same_grid'] else 'NO'} | "
            f"{'yes' if r['seg_references_source_series'] else 'NO'} | {r['differing_voxels']} | "
            f"{r['dice_seg_vs_nifti']:.4f} | {r['dice_seg_vs_truth']:.3f} | {r['dice_nifti_vs_truth']:.3f} | "
            f"{errors['mr_first']} / {errors['seg']} | {r['seconds']['infer_dicom']:.1f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bundle", default=str(REPO / "bundles" / "kdml_seg"))
    parser.add_argument("--ckpt_file", default=None, help="student weights (default: the bundle's models/model.pt)")
    parser.add_argument("--dataset_dir", type=Path, default=DATA)
    parser.add_argument("--split", default="test", choices=["train", "val", "test"])
    parser.add_argument("--subjects", type=int, default=None, help="only the first N subjects")
    parser.add_argument("--work", type=Path, default=REPO / "scripts" / "_work" / "brats_dicom")
    parser.add_argument(
        "--report",
        default=str(REPO / "docs" / "deployment.md"),
        help="Markdown file with a brats-dicom section ('' to skip)",
    )
    args = parser.parse_args()
    items = brats_volume_datalist(args.dataset_dir, args.split, "flair")[: args.subjects]
    ckpt = args.ckpt_file or str(Path(args.bundle) / "models" / "model.pt")
    if not os.path.isfile(ckpt):
        parser.error(f"no student weights at '{ckpt}': train the bundle first or pass --ckpt_file")
    if args.work.exists():  # outputs of an earlier run: infer-dicom never overwrites silently, so start clean
        shutil.rmtree(args.work)
    records = []
    for item in items:
        print(f"{item['subject']}: DICOM series, infer-dicom on DICOM and NIfTI ...", flush=True)
        records.append(check_subject(item, args.bundle, ckpt, args.work))
        print(json.dumps({k: records[-1][k] for k in ("differing_voxels", "dice_seg_vs_nifti", "dice_seg_vs_truth")}))
    report = {
        "command": ["scripts/brats_dicom_seg.py", *sys.argv[1:]],
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
        "bundle": os.path.relpath(args.bundle, REPO),
        "ckpt_file": os.path.relpath(ckpt, REPO),
        "split": args.split,
        "subjects": records,
    }
    args.work.mkdir(parents=True, exist_ok=True)
    (args.work / "brats_dicom_seg.json").write_text(json.dumps(report, indent=2))
    table = markdown(report)
    print(table)
    if args.report:
        write_section(args.report, table, "brats-dicom")


if __name__ == "__main__":
    main()
