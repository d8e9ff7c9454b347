"""All-or-nothing output files and the refusal of outputs inside the input."""

from __future__ import annotations

import os

import pytest

from monai_kd.io import OutputPathError, atomic_paths, check_output_dir


def test_outputs_are_committed_together(tmp_path):
    out = tmp_path / "new" / "folder"
    targets = [out / "a.seg.dcm", out / "a.seg.nii.gz"]
    with atomic_paths(*targets) as temps:
        assert [os.path.dirname(t) for t in temps] == [str(out)] * 2
        assert temps[1].endswith("-a.seg.nii.gz") and os.path.basename(temps[1]).startswith(".tmp-")
        for temp in temps:
            assert not os.path.exists(temp.replace(".tmp-", ""))
            with open(temp, "w") as f:
                f.write("data")
        assert sorted(os.listdir(out)) == sorted(os.path.basename(t) for t in temps)  # nothing final yet
    assert sorted(os.listdir(out)) == ["a.seg.dcm", "a.seg.nii.gz"]


def test_failure_leaves_no_file_and_no_new_folder(tmp_path):
    (tmp_path / "existing").mkdir()
    for out in (tmp_path / "new" / "deep", tmp_path / "existing"):
        with pytest.raises(RuntimeError, match="writer failed"), atomic_paths(out / "a.dcm", out / "a.json") as temps:
            with open(temps[0], "w") as f:
                f.write("complete")
            with open(temps[1], "w") as f:
                f.write("{")
            raise RuntimeError("writer failed")
    assert not (tmp_path / "new").exists()
    assert os.listdir(tmp_path / "existing") == []


def test_missing_output_and_previous_output_replaced(tmp_path):
    with pytest.raises(OutputPathError, match="produced no file"), atomic_paths(tmp_path / "a.dcm"):
        pass
    (tmp_path / "b.json").write_text("old")
    with atomic_paths(tmp_path / "b.json") as (temp,), open(temp, "w") as f:
        f.write("new")
    assert (tmp_path / "b.json").read_text() == "new" and os.listdir(tmp_path) == ["b.json"]


def test_protected_input_is_never_written(tmp_path):
    source = tmp_path / "series"
    source.mkdir()
    (source / "IM1").write_bytes(b"dicom")
    for target in (source / "IM1", source / "sub" / "x.dcm"):
        with (
            pytest.raises(OutputPathError, match="overwrite or write into the input"),
            atomic_paths(target, protect=source),
        ):
            pass
    protect = [tmp_path / "ct.dcm"]
    with (
        pytest.raises(OutputPathError, match="overwrite or write into"),
        atomic_paths(tmp_path / "ct.dcm", protect=protect),
    ):
        pass
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["IM1", "series"]


def test_check_output_dir(tmp_path):
    source = tmp_path / "series"
    source.mkdir()
    assert check_output_dir(tmp_path / "out", source) == (tmp_path / "out").resolve()
    for output in (source, source / "out", source / "a" / ".." / "out"):
        with pytest.raises(OutputPathError, match="inside the input folder|is the input itself"):
            check_output_dir(output, source)
    alias = tmp_path / "alias"
    alias.symlink_to(source, target_is_directory=True)
    with pytest.raises(OutputPathError, match="inside the input folder|is the input itself"):
        check_output_dir(alias / "out", source)
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputPathError, match="exists and is not a folder"):
        check_output_dir(tmp_path / "file", source)
    assert not (tmp_path / "out").exists()  # checking creates nothing
