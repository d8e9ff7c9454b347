"""The EMTKD bundle run in-process on real data with tiny overrides, its config switches and its error paths."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser, run
from monai.transforms import NormalizeIntensity

from monai_kd.data import brats_slice_datalist
from monai_kd.data.domain_datalist import domain_datalist

from conftest import REPO, load_script

BUNDLE = REPO / "bundles" / "emtkd"
CONFIGS = BUNDLE / "configs"
TRAIN = str(CONFIGS / "train_classification.json")  # the classification form (BraTS demo by default)
META = str(CONFIGS / "metadata.json")
TINY = {"teacher_epochs": 1, "max_epochs": 1, "epoch_length": 2, "log_interval": 1}


def _run(run_id: str, root: Path, config: str | list[str] = TRAIN, **override) -> None:
    run(run_id, config_file=config, meta_file=META, bundle_root=str(root), **override)


def _chain(error: BaseException) -> str:
    text = []
    while error is not None:
        text.append(str(error))
        error = error.__cause__ or error.__context__
    return " | ".join(text)


def _parser(*configs: str, **override) -> ConfigParser:
    parser = ConfigParser()
    parser.read_config([str(CONFIGS / c) for c in configs] if configs else TRAIN)
    for key, value in override.items():
        parser[key] = value
    return parser


def _save_teachers(root: Path, num_classes: int = 2, **override) -> None:
    """Untrained teacher checkpoints in CheckpointSaver format (the student stage only needs files that fit)."""
    parser = _parser(num_classes=num_classes, **override)
    (root / "models").mkdir(parents=True, exist_ok=True)
    for name in ("teacher_a", "teacher_b"):
        net = parser.get_parsed_content(f"{name}#network_def")
        torch.save({"model": net.state_dict()}, root / "models" / f"{name}.pt")


@pytest.fixture(scope="module")
def brats(data_dir) -> Path:
    return data_dir / "brats2015-sample"


@pytest.fixture(scope="module")
def slice_files(tmp_path_factory, brats) -> dict[str, list[dict]]:
    """Real BraTS slices written as 2D NIfTI files, as a user with their own data would have them."""
    folder = tmp_path_factory.mktemp("slices")
    lists: dict[str, list[dict]] = {}
    plan = {  # role -> (split, contrast, count per class)
        "source": ("train", "t1c", 6),
        "target_labelled": ("train", "flair", 3),
        "target_unlabelled": ("train", "flair", 6),
        "validation": ("val", "flair", 3),
        "test": ("test", "flair", 3),
    }
    for role, (split, contrast, per_class) in plan.items():
        items = brats_slice_datalist(brats, split, contrast)
        chosen = []
        for label in (0, 1):
            members = [i for i in items if i["label"] == label]
            offset = per_class if role == "target_unlabelled" else 0  # unlabelled slices differ from the labelled ones
            chosen += members[offset : offset + per_class]
        lists[role] = []
        for item in chosen:
            name = f"{role}/{item['subject']}_z{item['slice']:03d}.nii.gz"
            (folder / role).mkdir(exist_ok=True)
            nib.Nifti1Image(item["image"][0], np.eye(4)).to_filename(folder / name)
            entry = {"image": name, "label": int(item["label"]), "subject": item["subject"]}
            lists[role].append(entry if role != "target_unlabelled" else {"image": name, "subject": item["subject"]})
    return {"folder": folder, **lists}


def _datalist_json(slice_files: dict, path: Path, **replace) -> Path:
    content = {k: v for k, v in slice_files.items() if k != "folder"}
    content.update(replace)
    path.write_text(json.dumps(content))
    return path


# --------------------------------------------------------------------------- domain_datalist


def test_domain_datalist_roles_labels_and_loading(slice_files):
    path = _datalist_json(slice_files, slice_files["folder"] / "domains.json")
    source = domain_datalist(path, "source", spatial_size=(32, 32))
    assert len(source) == 12 and source[0]["image"].shape == (1, 32, 32) and source[0]["image"].dtype == np.float32
    assert sorted(int(i["label"]) for i in source) == [0] * 6 + [1] * 6
    unlabelled = domain_datalist(path, "target_unlabelled", spatial_size=(64, 64))
    assert len(unlabelled) == 12 and {int(i["label"]) for i in unlabelled} == {-1}
    target = domain_datalist(path, "target", load=False)
    assert len(target) == 18 and {int(i["label"]) for i in target} == {-1} and os.path.isabs(target[0]["image"])
    assert len(domain_datalist(path, "val", load=False)) == 6 and len(domain_datalist(path, "test", load=False)) == 6
    # without explicit validation/test lists they are a seeded partition of target_labelled, by patient
    pool = slice_files["target_labelled"] + slice_files["validation"] + slice_files["test"]  # 3 patients
    content = {"source": slice_files["source"], "target_unlabelled": slice_files["target_unlabelled"]}
    partitioned = slice_files["folder"] / "no_val.json"
    partitioned.write_text(json.dumps({**content, "target_labelled": pool}))
    parts = [
        domain_datalist(partitioned, r, load=False, ratios=(0.34, 0.33, 0.33), seed=seed)
        for seed in range(3)
        for r in ("target_labelled", "val", "test")
    ]
    for first in range(0, len(parts), 3):
        subjects = [{i["subject"] for i in p} for p in parts[first : first + 3]]
        n_patients = len({i["subject"] for i in pool})
        assert all(subjects) and sum(len(s) for s in subjects) == len(set.union(*subjects)) == n_patients  # disjoint
        assert sum(len(p) for p in parts[first : first + 3]) == len(pool)
    # an unlabelled image of a patient the partition put in test is refused (caught across JSON lists)
    test_item = domain_datalist(partitioned, "test", load=False, ratios=(0.34, 0.33, 0.33))[0]
    leak = {"image": os.path.relpath(test_item["image"], folder_of(partitioned)), "subject": test_item["subject"]}
    partitioned.write_text(json.dumps({**content, "target_labelled": pool, "target_unlabelled": [leak]}))
    with pytest.raises(ValueError, match="of the 'test' split also has an image in the training role"):
        domain_datalist(partitioned, "target_unlabelled", load=False, ratios=(0.34, 0.33, 0.33))


def folder_of(path: Path) -> Path:
    return Path(path).parent


def test_held_out_patient_in_a_training_role_is_refused(slice_files):
    folder = slice_files["folder"]
    test_patient = slice_files["test"][0]["subject"]
    leak = {"image": slice_files["test"][0]["image"], "subject": test_patient}
    leaky = _datalist_json(slice_files, folder / "leaky.json", target_unlabelled=slice_files["target_unlabelled"] + [leak])
    for role in ("target_unlabelled", "target"):
        with pytest.raises(ValueError, match=f"subject '{test_patient}'.*'test'"):
            domain_datalist(leaky, role, load=False)
    # a test patient's image in a source list (a second door through the teachers)
    leaky = _datalist_json(slice_files, folder / "leaky_source.json", source=slice_files["source"] + [{**leak, "label": 1}])
    with pytest.raises(ValueError, match=f"subject '{test_patient}'.*'test'"):
        domain_datalist(leaky, "source", load=False)


def test_domain_datalist_errors_name_what_is_wrong(slice_files):
    folder = slice_files["folder"]
    empty = _datalist_json(slice_files, folder / "empty_target.json", target_unlabelled=[])
    with pytest.raises(ValueError, match="'target_unlabelled' list is empty"):
        domain_datalist(empty, "target_unlabelled")
    missing = _datalist_json(
        slice_files, folder / "missing.json", source=[{"image": "source/nowhere.nii.gz", "label": 1}]
    )
    with pytest.raises(FileNotFoundError, match="nowhere.nii.gz"):
        domain_datalist(missing, "source")
    unlabelled_source = _datalist_json(
        slice_files, folder / "nolabel.json", source=[{"image": slice_files["source"][0]["image"]}]
    )
    with pytest.raises(ValueError, match="item 0 of 'source' needs an integer class 'label'"):
        domain_datalist(unlabelled_source, "source")
    with pytest.raises(ValueError, match="has no key 'source_b'"):
        domain_datalist(empty, "source_b")


# --------------------------------------------------------------------------- bad input through the bundle


def test_student_stage_alone_without_teacher_checkpoint_names_the_file(tmp_path, brats):
    with pytest.raises(Exception) as info:
        _run("run_student", tmp_path, dataset_dir=str(brats), **TINY)
    assert "teacher_a.pt" in _chain(info.value) and "checkpoint not found" in _chain(info.value)


def test_teacher_checkpoints_of_another_class_count_are_named(tmp_path, brats):
    _save_teachers(tmp_path, num_classes=3)
    with pytest.raises(Exception) as info:
        _run("run_student", tmp_path, dataset_dir=str(brats), **TINY)
    chain = _chain(info.value)
    assert "teacher_a.pt" in chain and "different class count" in chain


@pytest.mark.parametrize("weighting", ["gate", "confidence"])
def test_teachers_predicting_another_class_count_than_the_student_are_named(tmp_path, brats, weighting):
    three = {"teacher_a#network_def#num_classes": 3, "teacher_b#network_def#out_channels": 3}
    _save_teachers(tmp_path, **three)
    with pytest.raises(Exception) as info:
        _run("run_student", tmp_path, dataset_dir=str(brats), weighting=weighting, **TINY, **three)
    assert "teacher 0 (ResNet) predicts 3 classes but the student predicts 2" in _chain(info.value)


def test_empty_target_list_is_named(tmp_path, slice_files):
    path = _datalist_json(slice_files, slice_files["folder"] / "empty_labelled.json", target_labelled=[])
    with pytest.raises(Exception) as info:
        _run("run_teachers", tmp_path, datalist=str(path), **TINY)
    assert "'target_labelled' list is empty" in _chain(info.value)


def test_missing_image_in_datalist_is_named(tmp_path, slice_files):
    unlabelled = slice_files["target_unlabelled"] + [{"image": "target_unlabelled/lost_slice.nii.gz"}]
    path = _datalist_json(slice_files, slice_files["folder"] / "lost.json", target_unlabelled=unlabelled)
    with pytest.raises(Exception) as info:
        _run("run_student", tmp_path, datalist=str(path), **TINY)
    assert "lost_slice.nii.gz" in _chain(info.value) and "does not exist" in _chain(info.value)


# --------------------------------------------------------------------------- configuration


def test_default_benchmark_lists_and_student_size(brats):
    parser = _parser(dataset_dir=str(brats))
    source = parser.get_parsed_content("teacher_a#datalist")
    labelled = parser.get_parsed_content("target_labelled_datalist")
    unlabelled = parser.get_parsed_content("target_unlabelled_datalist")
    assert len(source) == 246 and all(i["image"].shape == (1, 64, 64) for i in source[:3])
    assert 0 < len(labelled) < 0.15 * (len(labelled) + len(unlabelled))  # labelled_fraction 0.1
    assert {int(i["label"]) for i in unlabelled} == {-1}
    labelled_keys = {(i["subject"], i["slice"]) for i in labelled}
    assert not labelled_keys & {(i["subject"], i["slice"]) for i in unlabelled}
    subjects = {
        split: {i["subject"] for i in parser.get_parsed_content(f"{split}_datalist")} for split in ("val", "test")
    }
    assert not subjects["val"] & subjects["test"] and not {i["subject"] for i in source} & subjects["test"]
    params = {
        name: sum(p.numel() for p in parser.get_parsed_content(f"{name}#network_def").parameters())
        for name in ("teacher_a", "teacher_b")
    }
    student = sum(p.numel() for p in parser.get_parsed_content("network_def").parameters())
    assert min(params.values()) >= 5 * student
    train = json.loads(Path(TRAIN).read_text())
    inference = json.loads((CONFIGS / "inference_classification.json").read_text())
    assert train["network_def"] | {"spatial_dims": 2} == inference["network_def"] | {"spatial_dims": 2}


def test_pneumonia_override_uses_two_source_domains_and_a_target(data_dir):
    parser = _parser("train_classification.json", "train_pneumonia.json", dataset_dir=str(data_dir / "pneumoniamnist"))
    assert {i["domain"] for i in parser.get_parsed_content("teacher_a#datalist")} == {"source_a"}
    assert {i["domain"] for i in parser.get_parsed_content("teacher_b#datalist")} == {"source_b"}
    labelled = parser.get_parsed_content("target_labelled_datalist")
    assert {i["domain"] for i in labelled} == {"target"} and labelled[0]["image"].shape == (1, 28, 28)
    assert parser.get_parsed_content("network_def")(torch.zeros(2, 1, 28, 28)).shape == (2, 2)


# --------------------------------------------------------------------------- inference


def test_inference_on_nifti_slices_matches_the_network(tmp_path, brats):
    items = brats_slice_datalist(brats, "test", "flair")
    picked = [i for i in items if i["label"] == 0][:3] + [i for i in items if i["label"] == 1][:3]
    images = tmp_path / "slices"
    images.mkdir()
    for k, item in enumerate(picked):
        nib.Nifti1Image(item["image"][0], np.eye(4)).to_filename(images / f"slice{k}_label{item['label']}.nii.gz")
    parser = ConfigParser()
    parser.read_config(str(CONFIGS / "inference_classification.json"))
    torch.manual_seed(0)
    net = parser.get_parsed_content("network_def").eval()
    (tmp_path / "models").mkdir()
    torch.save(net.state_dict(), tmp_path / "models" / "model.pt")
    run(
        "run",
        config_file=str(CONFIGS / "inference_classification.json"),
        meta_file=META,
        bundle_root=str(tmp_path),
        dataset_dir=str(images),
    )
    with open(tmp_path / "eval" / "predictions.csv") as f:
        rows = sorted(csv.reader(f))
    assert len(rows) == 6
    with torch.no_grad():
        x = torch.stack([torch.as_tensor(NormalizeIntensity(nonzero=True)(i["image"])) for i in picked])
        expected = net(x.float()).softmax(dim=1).numpy()
    got = np.array([[float(v) for v in row[1:]] for row in rows])
    np.testing.assert_allclose(got, expected, atol=1e-5)  # same orientation and intensity handling as training


# --------------------------------------------------------------------------- 3D


@pytest.mark.slow
def test_3d_configuration_runs_every_stage_on_adrenalmnist3d(tmp_path, data_dir):
    configs = [TRAIN, str(CONFIGS / "train_3d.json")]
    _run("run", tmp_path, config=configs, dataset_dir=str(data_dir / "adrenalmnist3d"), **TINY)
    names = sorted(p.name for p in (tmp_path / "models").iterdir())
    assert names == ["model.pt", "student_alone.pt", "teacher_a.pt", "teacher_b.pt", "teacher_weighting.pt"]
    state = torch.load(tmp_path / "models" / "model.pt", weights_only=True)
    assert state["conv1.weight"].dim() == 5  # a 3D student
    _run(
        "run", tmp_path, config=configs + [str(CONFIGS / "evaluate_classification.json")], dataset_dir=str(data_dir / "adrenalmnist3d")
    )
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert set(metrics) == {"teacher_a", "teacher_b", "student_alone", "student_emtkd"}


# --------------------------------------------------------------------------- every stage on real data


@pytest.fixture(scope="module")
def trained(tmp_path_factory, brats) -> Path:
    """Teachers, student alone and EMTKD student on the BraTS benchmark, two iterations each (wiring, not accuracy)."""
    root = tmp_path_factory.mktemp("emtkd")
    _run("run", root, dataset_dir=str(brats), **TINY)
    return root


def test_train_writes_every_checkpoint_and_logs(trained):
    names = sorted(p.name for p in (trained / "models").iterdir())
    assert names == ["model.pt", "student_alone.pt", "teacher_a.pt", "teacher_b.pt", "teacher_weighting.pt"]
    state = torch.load(trained / "models" / "model.pt", weights_only=True)
    assert state["fc.weight"].shape == (2, 64)
    gate = torch.load(
        trained / "models" / "teacher_weighting.pt", weights_only=True
    )  # CheckpointSaver: one object, its state dict
    assert gate["gate.2.weight"].shape[0] == 2  # one score per teacher
    assert {p.name for p in (trained / "logs").iterdir()} == {"teacher_a", "teacher_b", "student"}  # TensorBoard


def test_evaluate_writes_target_test_metrics_of_every_model(trained, brats):
    _run("run", trained, config=[TRAIN, str(CONFIGS / "evaluate_classification.json")], dataset_dir=str(brats))
    metrics = json.loads((trained / "eval" / "metrics.json").read_text())
    assert set(metrics) == {"teacher_a", "teacher_b", "student_alone", "student_emtkd"}
    for entry in metrics.values():
        assert 0.0 <= entry["test_auc"] <= 1.0 and 0.0 <= entry["test_acc"] <= 1.0
    assert (
        min(metrics["teacher_a"]["parameters"], metrics["teacher_b"]["parameters"])
        >= 5 * metrics["student_emtkd"]["parameters"]
    )
    # the model card of the classification form: its own task, input contract and the BraTS licence
    card = json.loads((trained / "eval" / "model_card.json").read_text())
    assert card["configuration"] == "classification" and card["input_contract"]["modality"] == ["MR"]
    test = card["models"]["student_emtkd"]["test"]
    assert test["accuracy"]["value"] == pytest.approx(metrics["student_emtkd"]["test_acc"], abs=1e-6)
    assert test["subjects"] == 2 and test["resampled_by"] == "subject"  # the two BraTS test patients
    assert "NON-COMMERCIAL" in card["licence"]["training_data"]
    assert card["outputs"]["pred"]["channel_def"] == {"0": "no tumour", "1": "tumour"}


@pytest.mark.slow
@pytest.mark.parametrize(
    "switches",
    [
        {"weighting": "uniform", "fixmatch_weight": 0.0},
        {"weighting": "confidence", "teachers": ["teacher_b"], "pseudo_label_source": "student"},
    ],
    ids=["uniform-no-ssl", "confidence-one-teacher"],
)
def test_student_stage_alone_from_saved_teachers_with_switches(trained, brats, tmp_path, switches):
    root = tmp_path / "student"
    (root / "models").mkdir(parents=True)
    for name in ("teacher_a", "teacher_b"):
        (root / "models" / f"{name}.pt").write_bytes((trained / "models" / f"{name}.pt").read_bytes())
    _run("run_student", root, dataset_dir=str(brats), **TINY, **switches)
    assert (root / "models" / "model.pt").is_file()


@pytest.mark.slow
def test_teachers_without_domain_adaptation_one_teacher(tmp_path, brats):
    _run("run_teachers", tmp_path, dataset_dir=str(brats), dann_weight=0.0, teachers=["teacher_b"], **TINY)
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == ["teacher_b.pt"]


@pytest.mark.slow
def test_pneumonia_override_runs_every_stage(tmp_path, data_dir):
    configs = [TRAIN, str(CONFIGS / "train_pneumonia.json")]
    _run("run", tmp_path, config=configs, dataset_dir=str(data_dir / "pneumoniamnist"), **TINY)
    assert (tmp_path / "models" / "model.pt").is_file() and (tmp_path / "models" / "teacher_b.pt").is_file()


@pytest.mark.slow
def test_user_datalist_of_nifti_slices_runs_every_stage(tmp_path, slice_files):
    path = _datalist_json(slice_files, slice_files["folder"] / "domains.json")
    _run("run", tmp_path, datalist=str(path), batch_size=8, labelled_batch_size=4, unlabelled_batch_size=4, **TINY)
    _run("run", tmp_path, config=[TRAIN, str(CONFIGS / "evaluate_classification.json")], datalist=str(path))
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert set(metrics) == {"teacher_a", "teacher_b", "student_alone", "student_emtkd"}


@pytest.mark.slow
def test_multi_gpu_config_runs_with_torchrun_on_cpu(tmp_path, brats):
    configs = f"['{TRAIN}','{CONFIGS / 'multi_gpu_train.json'}']"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node=2",
            "-m",
            "monai.bundle",
            "run",
            "--config_file",
            configs,
            "--bundle_root",
            str(tmp_path),
            "--dataset_dir",
            str(brats),
            "--teacher_epochs",
            "1",
            "--max_epochs",
            "1",
            "--epoch_length",
            "1",
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == [
        "model.pt",
        "student_alone.pt",
        "teacher_a.pt",
        "teacher_b.pt",
        "teacher_weighting.pt",
    ]


# --------------------------------------------------------------------------- the evidence script's bookkeeping


def test_evidence_processes_sharing_one_results_file_keep_each_others_records(tmp_path):
    ev = load_script("emtkd_evidence")
    output = tmp_path / "results.json"
    brats = ev.Evidence(tmp_path / "work", output, {})  # both start before either has written anything
    pneumonia = ev.Evidence(tmp_path / "work", output, {})
    brats.record({"benchmark": "brats", "method": "student_alone", "seed": 0, "accuracy": 0.8, "auc": 0.9})
    pneumonia.results["selection"]["pneumonia"] = {"chosen": "gate"}
    pneumonia.record({"benchmark": "pneumonia", "method": "student_alone", "seed": 0, "accuracy": 0.7, "auc": 0.8})
    brats.record({"benchmark": "brats", "method": "camkd", "seed": 0, "accuracy": 0.85, "auc": 0.95})
    brats.record({"benchmark": "brats", "method": "camkd", "seed": 0, "accuracy": 0.0, "auc": 0.0})  # already there
    on_disk = json.loads(output.read_text())
    runs = {(r["benchmark"], r["method"]): r["auc"] for r in on_disk["runs"]}
    assert runs == {("brats", "student_alone"): 0.9, ("pneumonia", "student_alone"): 0.8, ("brats", "camkd"): 0.95}
    assert on_disk["selection"] == {"pneumonia": {"chosen": "gate"}}
    assert not list(tmp_path.glob(".tmp-*"))  # written atomically, no temporary file left
    resumed = ev.Evidence(tmp_path / "work", output, {})
    assert ("pneumonia", "student_alone", 0, None, None) in resumed.done


def test_validation_items_keep_their_subject():
    """The classification form's validation transforms keep ``subject`` (subject-level intervals and cards need it)."""
    parser = ConfigParser()
    parser.read_config(TRAIN)
    val_transforms = parser.get_parsed_content("val_transforms")
    image = np.arange(16, dtype=np.float32).reshape(1, 4, 4)
    out = val_transforms({"image": image, "label": 1, "subject": "Brats_p1", "slice": 70})
    assert set(out) == {"image", "label", "subject"} and out["subject"] == "Brats_p1"
    assert set(val_transforms({"image": image, "label": 0})) == {"image", "label"}  # no subject: nothing to keep


@pytest.mark.parametrize("key", ["teacher_a#network_def", "network_def"])
def test_evidence_scores_through_evaluate_json_as_in_process(trained, tmp_path, key):
    """``scripts/emtkd_evidence.py`` scores a checkpoint with ``evaluate_classification.json`` (``run_checkpoint``):
    the record fields it always had, equal to the scores of the network run in-process on the same split."""
    import shutil

    from monai_kd.evidence.evaluate import classification_scores

    ev = load_script("emtkd_evidence")
    name = "teacher_a.pt" if key.startswith("teacher") else "model.pt"
    ckpt = tmp_path / "run" / "models" / name
    ckpt.parent.mkdir(parents=True)
    shutil.copy(trained / "models" / name, ckpt)
    evidence = ev.Evidence(tmp_path / "work", tmp_path / "results.json", {})
    got = evidence.evaluate("brats", 0, key, ckpt)
    assert list(got) == ["accuracy", "auc", "nll", "val_accuracy", "val_auc", "val_nll", "parameters"]
    net = evidence.network("brats", 0, key, ckpt)
    for split, prefix in (("test", ""), ("val", "val_")):
        x, y = evidence.split("brats", 0, split)
        expected = classification_scores(evidence.logits(net, x), y)
        for metric in ("accuracy", "auc", "nll"):
            assert got[prefix + metric] == pytest.approx(expected[metric], abs=1e-5), (split, metric)
    assert got["parameters"] == sum(p.numel() for p in net.parameters())
    assert set(json.loads((tmp_path / "run" / "eval" / "val_metrics.json").read_text())) == {ckpt.stem}
