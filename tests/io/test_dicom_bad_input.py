"""Bad input to ``infer_dicom``: a clear error, no output file (nor temporary file), the input left untouched."""

from __future__ import annotations

import inspect
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from dicom_testdata import KD_BUNDLE, copy_series, files_below, pydicom_file

from monai_kd.bundle_utils import BundleError
from monai_kd.dicom_inference import infer_dicom
from monai_kd.io import DicomInputError, OutputPathError

pytestmark = pytest.mark.filterwarnings("ignore:DICOM series in")

pytest_plugins = ["dicom_testdata"]  # shared fixtures: real series, checkpoint


def _refused(tmp_path, kd_checkpoint, input, error, match, **kwargs):
    """Run infer_dicom expecting ``error``; check that nothing was written."""
    out = tmp_path / "out"
    with pytest.raises(error, match=match):
        infer_dicom(str(KD_BUNDLE), str(input), str(out), ckpt_file=str(kd_checkpoint), force=True, **kwargs)
    assert files_below(out) == [], "a refused run must leave no output file"
    assert not out.exists(), "a refused run must not even create the output folder"


def test_empty_folder(tmp_path, kd_checkpoint):
    (tmp_path / "in").mkdir()
    _refused(tmp_path, kd_checkpoint, tmp_path / "in", DicomInputError, "input folder .* is empty")


def test_folder_without_dicom(tmp_path, kd_checkpoint):
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "notes.txt").write_text("not an image")
    (folder / "scan.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(200))
    _refused(tmp_path, kd_checkpoint, folder, DicomInputError, r"no DICOM file in .* \(2 file\(s\)")


def test_several_series_and_no_selector(tmp_path, kd_checkpoint):
    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("CT_small.dcm", "MR_small.dcm"):
        shutil.copyfile(pydicom_file(name), folder / name)
    _refused(tmp_path, kd_checkpoint, folder, DicomInputError, r"(?s)holds 2 DICOM series; choose one.*CT.*MR")
    _refused(tmp_path, kd_checkpoint, folder, DicomInputError, "no series .* matches modality=PT", modality="PT")
    written = infer_dicom(
        str(KD_BUNDLE), str(folder), str(tmp_path / "ok"), modality="MR", ckpt_file=str(kd_checkpoint), force=True
    )
    assert len(written) == 2  # the selector resolves it


def test_truncated_pixel_data(tmp_path, kd_checkpoint):
    """pydicom's MR_truncated.dcm (pixel data short by 62 bytes)."""
    _refused(tmp_path, kd_checkpoint, pydicom_file("MR_truncated.dcm"), DicomInputError, "truncated or corrupt")


def test_truncated_file_in_a_real_series(ct_dir, tmp_path, kd_checkpoint):
    """One file of the real CT series cut in half (in its JPEG 2000 data), and one cut inside its header."""
    files = copy_series(ct_dir, tmp_path / "in")
    data = files[4].read_bytes()
    files[4].write_bytes(data[: len(data) // 2])
    _refused(tmp_path, kd_checkpoint, tmp_path / "in", DicomInputError, rf"{files[4].name}' is truncated or corrupt")
    files[4].write_bytes(data[:3000])
    _refused(tmp_path, kd_checkpoint, tmp_path / "in", DicomInputError, rf"{files[4].name}' .*truncated or corrupt")


def test_non_image_dicom(tmp_path, kd_checkpoint):
    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("test-SR.dcm", "waveform_ecg.dcm", "liver_1frame.dcm"):  # SR, ECG waveform, SEG
        shutil.copyfile(pydicom_file(name), folder / name)
    for kind in (r"SR \(Comprehensive SR Storage\)", r"ECG \(12-lead ECG", r"SEG \(Segmentation Storage\)"):
        _refused(tmp_path, kd_checkpoint, folder, DicomInputError, rf"no DICOM image .* only non-image DICOM .*{kind}")
    _refused(tmp_path, kd_checkpoint, pydicom_file("rtplan.dcm"), DicomInputError, r"no DICOM image .*RTPLAN")


def test_compressed_transfer_syntax_without_decoder(ct_dir, tmp_path, kd_checkpoint, monkeypatch):
    """The real JPEG 2000 series on an installation without any JPEG 2000 decoder plugin."""
    from pydicom.pixels import get_decoder
    from pydicom.uid import JPEG2000Lossless

    monkeypatch.setattr(get_decoder(JPEG2000Lossless), "_available", {})
    _refused(
        tmp_path,
        kd_checkpoint,
        ct_dir,
        DicomInputError,
        r"cannot decode .*JPEG 2000 Image Compression \(Lossless Only\).*no decoder is installed.*pip install",
    )


def test_output_inside_the_input_folder(ct_dir, tmp_path, kd_checkpoint):
    files = copy_series(ct_dir, tmp_path / "in")
    before = {p: p.stat().st_mtime_ns for p in files}
    for output in (tmp_path / "in" / "results", tmp_path / "in", tmp_path / "in" / "a" / ".." / "b"):
        with pytest.raises(OutputPathError, match="inside the input folder|is the input itself"):
            infer_dicom(str(KD_BUNDLE), str(tmp_path / "in"), str(output), ckpt_file=str(kd_checkpoint), force=True)
    assert {p: p.stat().st_mtime_ns for p in files_below(tmp_path / "in")} == before
    single = tmp_path / "ct.dcm"
    shutil.copyfile(pydicom_file("CT_small.dcm"), single)
    with pytest.raises(OutputPathError, match="exists and is not a folder|is the input itself"):
        infer_dicom(str(KD_BUNDLE), str(single), str(single), ckpt_file=str(kd_checkpoint), force=True)


def test_other_refusals(tmp_path, kd_checkpoint, data_dir):
    _refused(tmp_path, kd_checkpoint, tmp_path / "missing", FileNotFoundError, "input does not exist")
    nifti = data_dir / "totalsegmentator-examples" / "example_ct_sm.nii.gz"
    _refused(tmp_path, kd_checkpoint, nifti, DicomInputError, "select DICOM series; the input is NIfTI", modality="CT")
    with pytest.raises(BundleError, match="no weights"):
        infer_dicom(
            str(KD_BUNDLE), pydicom_file("CT_small.dcm"), str(tmp_path / "out"), ckpt_file=str(tmp_path / "x.pt"), force=True
        )
    assert not (tmp_path / "out").exists()


def test_failure_while_writing_leaves_nothing(tmp_path, kd_checkpoint, monkeypatch):
    """If the last output fails mid-write, the already written SR is not committed either."""
    import json

    def broken_dump(obj, f, **kwargs):
        f.write('{"partial": ')
        raise OSError("disk full")

    monkeypatch.setattr(json, "dump", broken_dump)
    with pytest.raises(OSError, match="disk full"):
        infer_dicom(str(KD_BUNDLE), pydicom_file("CT_small.dcm"), str(tmp_path / "out"), ckpt_file=str(kd_checkpoint), force=True)
    assert not (tmp_path / "out").exists()


def test_cli_exit_code_and_message(tmp_path, kd_checkpoint):
    """``monai-kd infer-dicom`` on an empty folder: exit code 2, one-line error, no output."""
    import monai_kd.cli

    if "infer-dicom" not in inspect.getsource(monai_kd.cli):
        pytest.skip("monai_kd.cli has no infer-dicom command yet")
    (tmp_path / "in").mkdir()
    command = [
        sys.executable,
        "-m",
        "monai_kd.cli",
        "infer-dicom",
        "--bundle",
        str(KD_BUNDLE),
        "--input",
        str(tmp_path / "in"),
        "--output",
        str(tmp_path / "out"),
        "--ckpt_file",
        str(kd_checkpoint),
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 2
    assert "DicomInputError" in result.stderr and "is empty" in result.stderr
    assert not (tmp_path / "out").exists()


def test_unreadable_header_in_folder(tmp_path, kd_checkpoint):
    """A file with the DICOM preamble but a garbled header."""
    folder = tmp_path / "in"
    folder.mkdir()
    data = bytearray(Path(pydicom_file("CT_small.dcm")).read_bytes())
    data[132 + 8 : 132 + 40] = b"\xff" * 32  # break the file meta group
    (folder / "broken.dcm").write_bytes(bytes(data))
    with pytest.raises(DicomInputError, match="broken.dcm' is not a readable DICOM file"):
        infer_dicom(str(KD_BUNDLE), str(folder), str(tmp_path / "out"), ckpt_file=str(kd_checkpoint), force=True)
    assert not (tmp_path / "out").exists()
