"""The bad-input sweep: every kind of broken input a user can hand ``monai-kd``, through the real command line.

Each case builds its broken input from real data in ``tmp_path``, runs ``monai-kd`` (in-process through
``cli.main``, or as a subprocess where the process itself must be constrained) and asserts:

- a non-zero exit (2) and exactly one line ``monai-kd: error: ...`` that names the file or the key at fault;
- no partial output: no file under the case's output locations;
- the input left byte-identical (SHA-256 of every input file before and after).

A case that raised anything but the CLI's clear exit fails: nothing here catches every exception.
``docs/reliability.md`` lists the sweep as a table generated from :data:`CASES`
(``python scripts/reliability_doc.py``; :func:`test_reliability_doc_is_up_to_date` checks it).
"""

from __future__ import annotations

import hashlib
import json
import logging
import resource
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from conftest import DATA, REPO

KD = REPO / "bundles" / "kd"
CT_SERIES = DATA / "totalsegmentator-examples" / "example_ct_dicom"
TRAIN = ["train", str(KD), "--device", "cpu", "--batch_size", "64", "--max_epochs", "1"]


@dataclass
class Expect:
    """What a case runs and what must hold afterwards."""

    args: list[str]  # monai-kd arguments
    names: list[str]  # the error line must contain each of these (a file, a key, a stage)
    inputs: list[Path] = field(default_factory=list)  # files / folders that must stay byte-identical
    outputs: list[Path] = field(default_factory=list)  # folders that must hold no file afterwards
    subprocess: bool = False  # run in a child process (resource limits)
    limit_file_size: int | None = None  # RLIMIT_FSIZE of the child (a full output location)


@dataclass
class Case:
    area: str
    kind: str
    named: str  # what the error line names, for the table
    make: Callable[[Path], Expect]


CASES: list[Case] = []


def case(area: str, kind: str, named: str) -> Callable:
    def register(make: Callable[[Path], Expect]) -> Callable[[Path], Expect]:
        CASES.append(Case(area, kind, named, make))
        return make

    return register


# --------------------------------------------------------------------------- helpers building real inputs


def _breast(tmp: Path) -> Path:
    """A copy of the real BreastMNIST archive in its own folder."""
    folder = tmp / "breast"
    folder.mkdir()
    shutil.copyfile(DATA / "breastmnist" / "breastmnist.npz", folder / "breastmnist.npz")
    return folder


def _edited_npz(tmp: Path, edit: Callable[[dict], None]) -> Path:
    arrays = dict(np.load(DATA / "breastmnist" / "breastmnist.npz"))
    edit(arrays)
    folder = tmp / "edited"
    folder.mkdir()
    np.savez(folder / "breastmnist.npz", **arrays)
    return folder


def _student_state(kind: str = "student"):
    """A freshly initialised network of the kd bundle (student or teacher architecture)."""
    import torch
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(KD / "configs" / "train.json"))
    torch.manual_seed(0)
    return parser.get_parsed_content("network_def" if kind == "student" else "teacher_def").state_dict()


def _root_with_teacher(tmp: Path, write: Callable[[Path], None]) -> Path:
    root = tmp / "root"
    (root / "models").mkdir(parents=True)
    write(root / "models" / "teacher.pt")
    return root


def _student_stage(tmp: Path, root: Path, data: Path) -> list[str]:
    return [*TRAIN, "--stage", "student", "--bundle_root", str(root), "--dataset_dir", str(data)]


def _save(obj) -> Callable[[Path], None]:
    import torch

    return lambda path: torch.save(obj, path)


def _nifti(tmp: Path, name: str, edit: Callable[[np.ndarray], np.ndarray]) -> Path:
    import nibabel as nib

    source = nib.load(DATA / "totalsegmentator-examples" / "example_ct_sm.nii.gz")
    array = edit(np.asarray(source.dataobj, dtype=np.float32))
    path = tmp / name
    nib.save(nib.Nifti1Image(array, source.affine), path)
    return path


def _kd_weights(tmp: Path) -> Path:
    import torch

    path = tmp / "weights" / "model.pt"
    path.parent.mkdir()
    torch.save(_student_state(), path)
    return path


def _infer(tmp: Path, input: Path, *extra: str) -> list[str]:
    """``infer-dicom`` of the chest X-ray classifier, forced: the CT inputs here are outside its input contract, and
    these cases test what breaks after that check (the contract itself has its own case)."""
    return ["infer-dicom", "--bundle", str(KD), "--input", str(input), "--output", str(tmp / "out"),
            "--ckpt_file", str(_kd_weights(tmp)), "--force", *extra]


def _series(tmp: Path, edit=None) -> Path:
    """A copy of the real CT series; ``edit(index, dataset)`` changes a header or drops a file (``None``)."""
    import pydicom

    target = tmp / "series"
    target.mkdir()
    for index, path in enumerate(sorted(CT_SERIES.iterdir())):
        if edit is None:
            shutil.copyfile(path, target / path.name)
            continue
        ds = edit(index, pydicom.dcmread(path))
        if ds is not None:
            ds.save_as(target / path.name, enforce_file_format=True)
    return target


def _datalist(tmp: Path, content: str | dict) -> Path:
    path = tmp / "datalist.json"
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    return path


def _with_datalist(tmp: Path, datalist: Path) -> list[str]:
    expr = f"$monai_kd.data.datalist_split('{datalist}', 'train')"
    return [*TRAIN, "--stage", "student_alone", "--bundle_root", str(tmp / "root"), "--train_datalist", expr]


# --------------------------------------------------------------------------- the cases: command line and configs


@case("CLI", "misspelt config key (`--max_epoch 1`)", "the key given and the closest existing key (`max_epochs`)")
def _(tmp):
    return Expect([*TRAIN, "--bundle_root", str(tmp / "root"), "--max_epoch", "1"], ["'max_epoch'", "'max_epochs'"],
                  outputs=[tmp / "root"])


@case("CLI", "text where a number is expected (`--max_epochs abc`)", "the key and the value")
def _(tmp):
    return Expect(["train", str(KD), "--bundle_root", str(tmp / "root"), "--max_epochs", "abc"], ["'max_epochs'", "'abc'"],
                  outputs=[tmp / "root"])


@case("CLI", "unknown stage (`--stage teacherz`)", "the stage given")
def _(tmp):
    return Expect(["train", str(KD), "--stage", "teacherz", "--bundle_root", str(tmp / "root")], ["'teacherz'"],
                  outputs=[tmp / "root"])


@case("CLI", "`--resume` that is not true/false", "the flag and the value")
def _(tmp):
    return Expect(["train", str(KD), "--resume", "maybe", "--bundle_root", str(tmp / "root")], ["--resume", "'maybe'"],
                  outputs=[tmp / "root"])


@case("CLI", "a folder that is not a bundle", "the folder")
def _(tmp):
    folder = tmp / "not_a_bundle"
    folder.mkdir()
    (folder / "train.json").write_text("{}")
    return Expect(["train", str(folder)], [str(folder)], inputs=[folder])


# --------------------------------------------------------------------------- datasets (.npz) through the bundle


@case("bundle data", "missing dataset folder", "the folder")
def _(tmp):
    return Expect([*TRAIN, "--bundle_root", str(tmp / "root"), "--dataset_dir", str(tmp / "nowhere")],
                  [str(tmp / "nowhere")], outputs=[tmp / "root"])


@case("bundle data", "dataset folder without an `.npz`", "the folder")
def _(tmp):
    (tmp / "empty").mkdir()
    (tmp / "empty" / "README.txt").write_text("the images are elsewhere\n")
    return Expect([*TRAIN, "--bundle_root", str(tmp / "root"), "--dataset_dir", str(tmp / "empty")],
                  [str(tmp / "empty")], inputs=[tmp / "empty"], outputs=[tmp / "root"])


@case("bundle data", "corrupt `.npz` (not an archive)", "the `.npz` file")
def _(tmp):
    (tmp / "bad").mkdir()
    (tmp / "bad" / "breastmnist.npz").write_text("these are not the images you are looking for\n")
    return Expect([*TRAIN, "--bundle_root", str(tmp / "root"), "--dataset_dir", str(tmp / "bad")],
                  [str(tmp / "bad" / "breastmnist.npz"), "is not a .npz archive"], inputs=[tmp / "bad"],
                  outputs=[tmp / "root"])


@case("bundle data", "truncated `.npz`", "the `.npz` file")
def _(tmp):
    folder = _breast(tmp)
    data = (folder / "breastmnist.npz").read_bytes()
    (folder / "breastmnist.npz").write_bytes(data[: len(data) // 2])
    return Expect([*TRAIN, "--bundle_root", str(tmp / "root"), "--dataset_dir", str(folder)],
                  [str(folder / "breastmnist.npz")], inputs=[folder], outputs=[tmp / "root"])


@case("bundle data", "`.npz` without the expected arrays", "the `.npz` file and the missing array")
def _(tmp):
    folder = _edited_npz(tmp, lambda a: a.pop("train_labels"))
    return Expect([*TRAIN, "--bundle_root", str(tmp / "root"), "--dataset_dir", str(folder)],
                  [str(folder / "breastmnist.npz"), "train_labels"], inputs=[folder], outputs=[tmp / "root"])


@case("bundle data", "labels outside the class range", "the `.npz` file and the label")
def _(tmp):
    def edit(a):
        a["train_labels"] = a["train_labels"].copy()
        a["train_labels"][3] = 7

    folder = _edited_npz(tmp, edit)
    return Expect([*TRAIN, "--bundle_root", str(tmp / "root"), "--dataset_dir", str(folder)],
                  [str(folder / "breastmnist.npz"), "7"], inputs=[folder], outputs=[tmp / "root"])


@case("bundle data", "empty validation split", "the `.npz` file and the split")
def _(tmp):
    def edit(a):
        a["val_images"], a["val_labels"] = a["val_images"][:0], a["val_labels"][:0]

    folder = _edited_npz(tmp, edit)
    return Expect([*TRAIN, "--bundle_root", str(tmp / "root"), "--dataset_dir", str(folder)],
                  [str(folder / "breastmnist.npz"), "val"], inputs=[folder], outputs=[tmp / "root"])


@case("bundle data", "3D volumes where the bundle expects 2D images", "the stage, the key and the dimensionality")
def _(tmp):
    folder = tmp / "adrenal"
    folder.mkdir()
    shutil.copyfile(DATA / "adrenalmnist3d" / "adrenalmnist3d.npz", folder / "adrenalmnist3d.npz")
    return Expect([*TRAIN, "--stage", "student_alone", "--bundle_root", str(tmp / "root"), "--dataset_dir", str(folder)],
                  ["stage 'student_alone'", "'image'", "3D images", "network is 2D"], inputs=[folder],
                  outputs=[tmp / "root" / "models"])


# --------------------------------------------------------------------------- checkpoints


@case("checkpoint", "teacher checkpoint of another architecture", "the checkpoint file")
def _(tmp):
    root = _root_with_teacher(tmp, _save(_student_state("student")))  # a student's weights where the teacher's go
    return Expect(_student_stage(tmp, root, _breast(tmp)), [str(root / "models" / "teacher.pt")],
                  inputs=[root / "models" / "teacher.pt"], outputs=[root / "models" / "resume"])


@case("checkpoint", "pickled (non-tensor) checkpoint", "the checkpoint file (refused as pickled)")
def _(tmp):
    root = _root_with_teacher(tmp, _save({"model": _student_state("teacher"), "note": Path("x")}))
    return Expect(_student_stage(tmp, root, _breast(tmp)), [str(root / "models" / "teacher.pt"), "pickled"],
                  inputs=[root / "models" / "teacher.pt"], outputs=[root / "models" / "resume"])


@case("checkpoint", "0-byte checkpoint", "the checkpoint file (empty)")
def _(tmp):
    root = _root_with_teacher(tmp, lambda p: p.write_bytes(b""))
    return Expect(_student_stage(tmp, root, _breast(tmp)), [str(root / "models" / "teacher.pt"), "empty"],
                  inputs=[root / "models" / "teacher.pt"], outputs=[root / "models" / "resume"])


@case("checkpoint", "truncated `.pt`", "the checkpoint file (truncated)")
def _(tmp):
    def write(path):
        _save(_student_state("teacher"))(path)
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 3])

    root = _root_with_teacher(tmp, write)
    return Expect(_student_stage(tmp, root, _breast(tmp)), [str(root / "models" / "teacher.pt"), "truncated"],
                  inputs=[root / "models" / "teacher.pt"], outputs=[root / "models" / "resume"])


@case("checkpoint", "teacher checkpoint with one NaN weight", "the teacher's checkpoint file (the teacher's fault)")
def _(tmp):
    state = _student_state("teacher")
    state["fc.weight"][0, 0] = float("nan")
    root = _root_with_teacher(tmp, _save(state))
    return Expect(_student_stage(tmp, root, _breast(tmp)), [str(root / "models" / "teacher.pt"), "teacher's fault"],
                  inputs=[root / "models" / "teacher.pt"], outputs=[root / "models" / "resume"])


@case("checkpoint", "a learning rate that makes training diverge (`--learning_rate 1e30`)", "the stage, epoch and iteration")
def _(tmp):
    root = tmp / "root"
    args = [*TRAIN, "--stage", "student_alone", "--bundle_root", str(root), "--dataset_dir", str(_breast(tmp)),
            "--learning_rate", "1e30"]
    return Expect(args, ["stage 'student_alone'", "epoch 1", "iteration"], outputs=[root / "models"])


@case("checkpoint", "export of a missing checkpoint", "the checkpoint file")
def _(tmp):
    return Expect(["export", str(KD), "--ckpt_file", str(tmp / "none.pt"), "--output_dir", str(tmp / "out")],
                  [str(tmp / "none.pt")], outputs=[tmp / "out"])


# --------------------------------------------------------------------------- datalists (Decathlon JSON)


@case("datalist", "datalist that is not valid JSON", "the datalist file")
def _(tmp):
    path = _datalist(tmp, '{"training": [ {"image": "a.nii.gz", ')
    return Expect(_with_datalist(tmp, path), [str(path)], inputs=[path], outputs=[tmp / "root"])


@case("datalist", "empty training list", "the datalist file and the list")
def _(tmp):
    path = _datalist(tmp, {"training": []})
    return Expect(_with_datalist(tmp, path), [str(path), "training"], inputs=[path], outputs=[tmp / "root"])


@case("datalist", "datalist naming a missing image", "the missing image")
def _(tmp):
    image = _nifti(tmp, "ct.nii.gz", lambda a: a)
    items = [{"image": "ct.nii.gz", "label": i % 2, "subject": f"s{i}"} for i in range(9)]
    items.append({"image": "lost.nii.gz", "label": 1, "subject": "s9"})
    path = _datalist(tmp, {"training": items})
    return Expect(_with_datalist(tmp, path), [str(path), "lost.nii.gz"], inputs=[path, image], outputs=[tmp / "root"])


@case("datalist", "a subject in two splits", "the datalist file and the subject")
def _(tmp):
    image = _nifti(tmp, "ct.nii.gz", lambda a: a)
    items = [{"image": str(image), "label": 0, "subject": f"s{i}"} for i in range(4)]
    path = _datalist(tmp, {"training": items, "validation": [{"image": str(image), "label": 0, "subject": "s1"}]})
    return Expect(_with_datalist(tmp, path), [str(path), "s1"], inputs=[path, image], outputs=[tmp / "root"])


# --------------------------------------------------------------------------- NIfTI input


@case("NIfTI", "NIfTI with NaN voxels", "the NIfTI file")
def _(tmp):
    image = _nifti(tmp, "nan.nii.gz", lambda a: np.where(np.arange(a.size).reshape(a.shape) % 97 == 0, np.nan, a))
    return Expect(_infer(tmp, image), [str(image), "NaN"], inputs=[image], outputs=[tmp / "out"])


@case("NIfTI", "NIfTI with Inf voxels", "the NIfTI file")
def _(tmp):
    def edit(a):
        a = a.copy()
        a[0, 0, 0] = np.inf
        return a

    image = _nifti(tmp, "inf.nii.gz", edit)
    return Expect(_infer(tmp, image), [str(image), "infinite"], inputs=[image], outputs=[tmp / "out"])


@case("NIfTI", "truncated `.nii.gz`", "the NIfTI file")
def _(tmp):
    image = _nifti(tmp, "cut.nii.gz", lambda a: a)
    data = image.read_bytes()
    image.write_bytes(data[: len(data) // 2])
    return Expect(_infer(tmp, image), [str(image)], inputs=[image], outputs=[tmp / "out"])


@case("bundle data", "wrong channel count (RGB images for a grey-image network)", "the stage, the key and the channel counts")
def _(tmp):
    def edit(a):
        for split in ("train", "val", "test"):
            a[f"{split}_images"] = np.stack([a[f"{split}_images"]] * 3, axis=-1)

    folder = _edited_npz(tmp, edit)
    return Expect([*TRAIN, "--stage", "student_alone", "--bundle_root", str(tmp / "root"), "--dataset_dir", str(folder)],
                  ["stage 'student_alone'", "'image'", "3 channel(s)", "takes 1"], inputs=[folder],
                  outputs=[tmp / "root" / "models"])


# --------------------------------------------------------------------------- output locations


@case("output", "output folder inside the input", "the output folder")
def _(tmp):
    series = _series(tmp)
    return Expect(["infer-dicom", "--bundle", str(KD), "--input", str(series), "--output", str(series / "results"),
                   "--ckpt_file", str(_kd_weights(tmp)), "--force"], [str(series / "results")], inputs=[series])


@case("output", "output location that cannot be written (read-only: `/sys`)", "the output folder")
def _(tmp):
    image = _nifti(tmp, "ct.nii.gz", lambda a: a)
    return Expect(["infer-dicom", "--bundle", str(KD), "--input", str(image), "--output", "/sys/monai_kd_out",
                   "--ckpt_file", str(_kd_weights(tmp)), "--force"], ["/sys/monai_kd_out"], inputs=[image])


@case("output", "full output location (file size limit hit while writing)", "the output")
def _(tmp):
    image = _nifti(tmp, "ct.nii.gz", lambda a: a)
    return Expect(_infer(tmp, image), [str(tmp / "out")], inputs=[image], outputs=[tmp / "out"], subprocess=True,
                  limit_file_size=64)


# --------------------------------------------------------------------------- DICOM


@case("DICOM", "a series the model was not trained for (abdominal CT to the chest X-ray classifier)",
      "the series folder and what differs from the bundle's input contract")
def _(tmp):
    series = _series(tmp)
    command = ["infer-dicom", "--bundle", str(KD), "--input", str(series), "--output", str(tmp / "out"),
               "--ckpt_file", str(_kd_weights(tmp))]
    return Expect(command, [str(series), "modality CT is not DX/CR", "--force"], inputs=[series], outputs=[tmp / "out"])


@case("DICOM", "empty folder", "the folder")
def _(tmp):
    (tmp / "empty").mkdir()
    return Expect(_infer(tmp, tmp / "empty"), [str(tmp / "empty")], outputs=[tmp / "out"])


@case("DICOM", "folder without DICOM files", "the folder")
def _(tmp):
    folder = tmp / "pngs"
    folder.mkdir()
    (folder / "notes.txt").write_text("not an image")
    return Expect(_infer(tmp, folder), [str(folder)], inputs=[folder], outputs=[tmp / "out"])


@case("DICOM", "mixed orientations", "the series folder")
def _(tmp):
    def edit(index, ds):
        if index == 5:
            ds.ImageOrientationPatient = [1, 0, 0, 0, 0, -1]
        return ds

    series = _series(tmp, edit)
    return Expect(_infer(tmp, series), [str(series), "orientation"], inputs=[series], outputs=[tmp / "out"])


@case("DICOM", "missing slice", "the series folder")
def _(tmp):
    series = _series(tmp, lambda i, ds: None if i == 7 else ds)
    return Expect(_infer(tmp, series), [str(series), "missing"], inputs=[series], outputs=[tmp / "out"])


@case("DICOM", "unsupported transfer syntax", "the transfer syntax")
def _(tmp):
    import pydicom

    def edit(index, ds):
        ds.file_meta.TransferSyntaxUID = pydicom.uid.UID("1.2.840.10008.1.2.4.100")  # MPEG2 video
        return ds

    series = _series(tmp, edit)
    return Expect(_infer(tmp, series), ["MPEG2"], inputs=[series], outputs=[tmp / "out"])


@case("DICOM", "non-image SOP class (a Structured Report)", "the folder and the SOP class")
def _(tmp):
    from pydicom.data import get_testdata_file

    folder = tmp / "sr"
    folder.mkdir()
    shutil.copyfile(get_testdata_file("test-SR.dcm"), folder / "test-SR.dcm")
    return Expect(_infer(tmp, folder), [str(folder), "SR"], inputs=[folder], outputs=[tmp / "out"])


@case("DICOM", "truncated DICOM file in a series", "the file")
def _(tmp):
    series = _series(tmp)
    victim = sorted(series.iterdir())[4]
    data = victim.read_bytes()
    victim.write_bytes(data[: len(data) // 2])
    return Expect(_infer(tmp, series), [victim.name, "truncated"], inputs=[series], outputs=[tmp / "out"])


# --------------------------------------------------------------------------- the checks


def _checksums(paths: list[Path]) -> dict[str, str]:
    files = []
    for path in paths:
        files += sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path] if path.exists() else []
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def _files(paths: list[Path]) -> list[str]:
    return [str(p) for path in paths if path.exists() for p in path.rglob("*") if p.is_file()]


def _limit(size: int) -> Callable[[], None]:
    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead of killing
        resource.setrlimit(resource.RLIMIT_FSIZE, (size, size))

    return apply


def _run_cli(expect: Expect, monkeypatch, capsys) -> tuple[int, str]:
    from monai_kd import cli

    if expect.subprocess:
        proc = subprocess.run(
            [sys.executable, "-m", "monai_kd.cli", *expect.args], capture_output=True, text=True, timeout=600,
            preexec_fn=_limit(expect.limit_file_size) if expect.limit_file_size else None,
        )
        return proc.returncode, proc.stderr
    monkeypatch.setattr(sys, "argv", ["monai-kd", *expect.args])
    # log handlers of an earlier in-process run still point at that test's closed capture stream: their
    # "--- Logging error ---" tracebacks are an artefact of running in-process, not the CLI's output
    monkeypatch.setattr(logging, "raiseExceptions", False)
    with pytest.raises(SystemExit) as exit_info:  # only the CLI's own exit; any other exception fails the case
        cli.main()
    return exit_info.value.code, capsys.readouterr().err


@pytest.mark.parametrize("sweep", CASES, ids=[f"{c.area}: {c.kind}" for c in CASES])
def test_bad_input(sweep: Case, tmp_path, monkeypatch, capsys, data_dir):
    monkeypatch.chdir(tmp_path)
    expect = sweep.make(tmp_path)
    before = _checksums(expect.inputs)
    assert before or not expect.inputs, "the case's input files were not created"
    code, err = _run_cli(expect, monkeypatch, capsys)
    lines = [line for line in err.splitlines() if line.startswith("monai-kd: error:")]
    assert code == 2, f"exit code {code}; stderr ends:\n{err[-1500:]}"
    assert len(lines) == 1, f"expected one error line, got {lines}; stderr ends:\n{err[-1500:]}"
    assert "Traceback" not in err, f"a traceback above the one-line answer:\n{err[-3000:]}"
    for name in expect.names:
        assert name in lines[0], f"the error line does not name {name!r}: {lines[0]}"
    assert _files(expect.outputs) == [], "a refused run must leave no output file"
    assert _checksums(expect.inputs) == before, "the input was modified"
    print(f"\n[{sweep.area}: {sweep.kind}] {lines[0]}")  # shown with pytest -s / -rP


def test_the_sweep_covers_every_kind_the_issue_lists():
    kinds = " ".join(c.kind.lower() for c in CASES)
    assert len(CASES) >= 25
    for word in ("missing", "empty", "corrupt", "truncated", "nan", "inf", "channel", "2d", "labels outside",
                 "two splits", "another architecture", "pickled", "config key", "stage", "inside the input",
                 "read-only", "full", "orientation", "missing slice", "transfer syntax", "non-image"):
        assert word in kinds, word


def reliability_table() -> str:
    """The Markdown table of the sweep (``docs/reliability.md``), generated from :data:`CASES`."""
    rows = ["| # | area | bad input | the one error line names |", "|---|---|---|---|"]
    rows += [f"| {n} | {c.area} | {c.kind} | {c.named} |" for n, c in enumerate(CASES, 1)]
    return "\n".join(rows) + "\n"


BEGIN, END = "<!-- sweep table: generated by scripts/reliability_doc.py -->", "<!-- end of sweep table -->"


def test_reliability_doc_is_up_to_date():
    text = (REPO / "docs" / "reliability.md").read_text()
    assert BEGIN in text and END in text, "docs/reliability.md lacks the generated sweep table"
    table = text.split(BEGIN, 1)[1].split(END, 1)[0].strip()
    assert table == reliability_table().strip(), "docs/reliability.md is stale: run python scripts/reliability_doc.py"
