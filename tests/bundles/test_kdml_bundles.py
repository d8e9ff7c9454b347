"""The KD + mutual learning bundles (kdml_cls, kdml_seg) run in-process on real data with tiny overrides.

Covers: every regime x variant switch of the bundle configs builds exactly the loss terms of table 1 of the paper,
the teacher is trained only in the online regimes, both bundles train / evaluate / infer (single student and the
student ensemble), and the 3D override of the segmentation bundle trains on BraTS volumes.
"""

from __future__ import annotations

import copy
import json
import os

import nibabel as nib
import numpy as np
import pytest
import torch
from conftest import REPO, load_script
from monai.bundle import ConfigParser, run

CLS = REPO / "bundles" / "kdml_cls"
SEG = REPO / "bundles" / "kdml_seg"

# Table 1 of Niyaz et al. (file 002), written out by hand: the distillation terms each regime/variant wires.
KD_TABLE = {"V1": {"s1_teacher_logit", "s2_teacher_logit"},
            "V2": {"s1_teacher_feature", "s2_teacher_feature"},
            "V3": {"s1_teacher_logit", "s2_teacher_feature"}}  # teacher predictions -> S1, features -> S2
ML_TABLE = {"V1": {"s2_s1_logit", "s1_s2_logit"},
            "V2": {"s2_s1_feature", "s1_s2_feature"},
            "V3": {"s2_s1_logit", "s1_s2_feature"}}  # S1 -> S2 predictions, S2 -> S1 features
EXPECTED = {
    "kd_off": lambda v: {"s1_task", "s2_task", *KD_TABLE[v]},
    "kd_on": lambda v: {"s1_task", "s2_task", "teacher_task", *KD_TABLE[v]},
    "ml": lambda v: {"s1_task", "s2_task", *ML_TABLE[v]},
    "kd_ml": lambda v: {"s1_task", "s2_task", "teacher_task", *KD_TABLE[v], *ML_TABLE[v]},
}
TEACHER_MODE = {"kd_off": "offline", "kd_on": "online", "ml": "none", "kd_ml": "online"}
# few iterations per stage: these tests check wiring on the real data, not accuracy
TINY = {"max_epochs": 1, "teacher_epochs": 1, "train#trainer#epoch_length": 2, "teacher_stage#trainer#epoch_length": 2}


def _parser(bundle, *configs, **override) -> ConfigParser:
    parser = ConfigParser()
    parser.read_config([str(bundle / "configs" / c) for c in configs])
    parser.read_meta(str(bundle / "configs" / "metadata.json"))
    for key, value in override.items():
        parser[key] = value
    return parser


def _run(stage, bundle, root, data, *configs, **override):
    configs = configs or ("train.json",)
    files = [str(bundle / "configs" / c) for c in configs]
    run(stage, config_file=files if len(files) > 1 else files[0], meta_file=str(bundle / "configs" / "metadata.json"),
        bundle_root=str(root), dataset_dir=str(data), **override)


# --------------------------------------------------------------------------- regime / variant switches


@pytest.mark.parametrize("bundle", [CLS, SEG], ids=["cls", "seg"])
@pytest.mark.parametrize("variant", ["V1", "V2", "V3"])
@pytest.mark.parametrize("regime", ["kd_off", "kd_on", "ml", "kd_ml"])
def test_regime_and_variant_switches_wire_the_paper_table(bundle, regime, variant):
    parser = _parser(bundle, "train.json", regime=regime, variant=variant, kd_feature_weight=0.5)
    terms = {t.name: t for t in parser.get_parsed_content("train#loss_terms")}
    assert {n for n, t in terms.items() if t.weight != 0} == EXPECTED[regime](variant)
    assert parser.get_parsed_content("teacher_mode") == TEACHER_MODE[regime]
    for name, term in terms.items():  # config weights reach the right terms
        expected = 0.5 if name.endswith("_teacher_feature") else 1.0
        assert term.weight == expected, name
        if term.kind == "feature":
            assert term.learner_layer == parser["student_feature_layer"]
            assert term.source_layer == (parser["teacher_feature_layer"] if term.source == "teacher" else term.learner_layer)


def test_default_is_kd_ml_v3_with_online_teacher():
    for bundle in (CLS, SEG):
        parser = _parser(bundle, "train.json")
        assert (parser["regime"], parser["variant"], parser.get_parsed_content("teacher_mode")) == ("kd_ml", "V3", "online")


@pytest.mark.parametrize("regime", ["kd_off", "kd_on", "ml"])
def test_teacher_trains_only_in_online_regimes(regime, tmp_path, data_dir):
    parser = _parser(CLS, "train.json", regime=regime, variant="V3", bundle_root=str(tmp_path),
                     dataset_dir=str(data_dir / "breastmnist"), batch_size=16, teacher_ckpt=str(tmp_path / "teacher.pt"),
                     **TINY)
    teacher = parser.get_parsed_content("teacher")
    torch.save(teacher.state_dict(), tmp_path / "teacher.pt")  # the frozen teacher of kd_off, read when training starts
    before = copy.deepcopy(teacher.state_dict())
    trainer = parser.get_parsed_content("train#trainer")
    trainer.run()
    changed = any(not torch.equal(v, before[k]) for k, v in teacher.state_dict().items())
    assert changed == (regime == "kd_on")
    assert all((p.grad is not None) == (regime == "kd_on") for p in teacher.parameters())
    logged = {k[5:] for k in trainer.state.output[0] if k.startswith("loss_")}
    assert logged == EXPECTED[regime]("V3")
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == sorted(
        ["model.pt", "model_s2.pt"] + (["teacher_online.pt"] if regime == "kd_on" else []))


# --------------------------------------------------------------------------- classification bundle


@pytest.fixture(scope="module")
def cls_trained(tmp_path_factory, data_dir):
    """Offline teacher, then the kd_off V3 students, on PneumoniaMNIST (two iterations per stage)."""
    root = tmp_path_factory.mktemp("kdml_cls")
    _run("run", CLS, root, data_dir / "pneumoniamnist", regime="kd_off", variant="V3", **TINY)
    return root


def test_cls_run_trains_teacher_and_both_students(cls_trained):
    assert sorted(p.name for p in (cls_trained / "models").iterdir()) == ["model.pt", "model_s2.pt", "teacher.pt"]
    s1 = torch.load(cls_trained / "models" / "model.pt", weights_only=True)
    s2 = torch.load(cls_trained / "models" / "model_s2.pt", weights_only=True)
    assert s1["fc.weight"].shape == (2, 64) and not torch.equal(s1["fc.weight"], s2["fc.weight"])


def test_cls_evaluate_writes_every_member_with_fidelity_and_cka(cls_trained, data_dir):
    for split, name in (("test", "metrics.json"), ("val", "val_metrics.json")):
        _run("run", CLS, cls_trained, data_dir / "pneumoniamnist", "train.json", "evaluate.json",
             regime="kd_off", eval_split=split)
        metrics = json.loads((cls_trained / "eval" / name).read_text())
        assert set(metrics) == {"teacher", "s1", "s2", "ensemble"}
        for member, entry in metrics.items():
            assert 0 <= entry["accuracy"] <= 1 and 0 <= entry["auc"] <= 1 and entry["nll"] > 0
            assert (member == "teacher") != (0 <= entry.get("fidelity", -1) <= 1)
        assert metrics["ensemble"]["parameters"] == 2 * metrics["s1"]["parameters"]
    cka = json.loads((cls_trained / "eval" / "fidelity_cka" / "s1_fidelity_cka.json").read_text())
    assert np.array(cka["cka"]).shape == (4, 4) and (cls_trained / "eval" / "fidelity_cka" / "s2_cka.png").is_file()
    # the model card: written by the test-split evaluation from its per-sample predictions (not by the val one)
    metrics = json.loads((cls_trained / "eval" / "metrics.json").read_text())
    card = json.loads((cls_trained / "eval" / "model_card.json").read_text())
    assert {n: m["role"] for n, m in card["models"].items()} == {
        "s1": "student", "teacher": "teacher", "s2": "baseline", "ensemble": "baseline"}
    test = card["models"]["s1"]["test"]
    assert test["samples"] == 624 and test["accuracy"]["value"] == pytest.approx(metrics["s1"]["accuracy"], abs=1e-6)
    assert test["nll"]["value"] == pytest.approx(metrics["s1"]["nll"], rel=1e-3)
    assert test["ece"]["ci95"][0] <= test["ece"]["value"] <= test["ece"]["ci95"][1]
    assert card["decision_rule"]["threshold"] == 0.5 and card["input_contract"]["body_part"] == ["CHEST"]


def test_cls_inference_single_student_and_ensemble(cls_trained, pneumonia_pngs):
    for configs, csv in ((["inference.json"], "predictions.csv"),
                         (["inference.json", "inference_ensemble.json"], "predictions_ensemble.csv")):
        _run("run", CLS, cls_trained, pneumonia_pngs, *configs)
        rows = [line.split(",") for line in (cls_trained / "eval" / csv).read_text().splitlines()]
        assert len(rows) == 8 and all(abs(float(r[1]) + float(r[2]) - 1) < 1e-4 for r in rows)


def test_ensemble_config_is_the_max_probability_of_both_students(cls_trained, pneumonia_pngs):
    parser = _parser(CLS, "inference.json", "inference_ensemble.json", bundle_root=str(cls_trained),
                     dataset_dir=str(pneumonia_pngs))
    members = parser.get_parsed_content("ensemble_network")
    for name, ckpt in (("s1", "model.pt"), ("s2", "model_s2.pt")):
        members[name].load_state_dict(torch.load(cls_trained / "models" / ckpt, weights_only=True))
    members.eval()
    x = torch.rand(3, 1, 28, 28)
    with torch.no_grad():
        got = parser.get_parsed_content("ensemble_inferer")(x, members)
        p1, p2 = members["s1"](x).softmax(1), members["s2"](x).softmax(1)
    expected = torch.maximum(p1, p2)
    assert torch.allclose(got, expected / expected.sum(1, keepdim=True), atol=1e-6)


# --------------------------------------------------------------------------- segmentation bundle


@pytest.fixture(scope="module")
def seg_trained(tmp_path_factory, data_dir):
    """Default regime (KD + ML, V3, online teacher) on BraTS FLAIR slices, two iterations."""
    root = tmp_path_factory.mktemp("kdml_seg")
    _run("run", SEG, root, data_dir / "brats2015-sample", **TINY)
    return root


def test_seg_run_and_evaluate(seg_trained, data_dir):
    assert sorted(p.name for p in (seg_trained / "models").iterdir()) == ["model.pt", "model_s2.pt", "teacher_online.pt"]
    _run("run", SEG, seg_trained, data_dir / "brats2015-sample", "train.json", "evaluate.json")
    metrics = json.loads((seg_trained / "eval" / "metrics.json").read_text())
    assert set(metrics) == {"teacher", "s1", "s2", "ensemble"}
    assert metrics["teacher"]["checkpoint"].endswith("teacher_online.pt")
    for member in ("s1", "s2", "ensemble"):
        assert {"dice", "iou", "fidelity"} <= set(metrics[member])
        assert all(0 <= metrics[member][k] <= 1 for k in ("dice", "iou", "fidelity"))
        assert metrics[member]["iou"] <= metrics[member]["dice"] + 1e-6
    cka = json.loads((seg_trained / "eval" / "fidelity_cka" / "s2_fidelity_cka.json").read_text())
    assert np.array(cka["cka"]).shape == (6, 6)
    # the model card: Dice of the evaluated slices with an interval resampled by patient (2 test patients)
    card = json.loads((seg_trained / "eval" / "model_card.json").read_text())
    test = card["models"]["s1"]["test"]
    assert test["task"] == "segmentation" and test["subjects"] == 2 and test["resampled_by"] == "subject"
    assert test["dice"]["value"] == pytest.approx(metrics["s1"]["dice"], abs=1e-5)
    low, high = test["dice"]["ci95"]
    assert low <= test["dice"]["value"] + 1e-9 and test["dice"]["value"] <= high + 1e-9
    assert card["training_data"]["splits"]["test"]["subjects"] == 2
    assert "NON-COMMERCIAL" in card["licence"]["training_data"] and card["input_contract"]["modality"] == ["MR"]
    assert "| s1 | student |" in (seg_trained / "eval" / "model_card.md").read_text()


def test_seg_inference_writes_label_maps_on_the_input_grid(seg_trained, data_dir, tmp_path):
    volume = data_dir / "brats2015-sample" / "test" / "brats_2013_pat0001_1" / "Flair_subtrMeanDivStd.nii.gz"
    images = tmp_path / "in"
    images.mkdir()
    os.symlink(volume, images / "pat0001_flair.nii.gz")  # the user's file; never copied
    for configs, suffix in ((["inference.json"], "seg"), (["inference.json", "inference_ensemble.json"], "seg_ensemble")):
        _run("run", SEG, seg_trained, images, *configs, output_dir=str(tmp_path / "out"))
        out = nib.load(tmp_path / "out" / f"pat0001_flair_{suffix}.nii.gz")
        ref = nib.load(volume)
        assert out.shape == ref.shape and np.allclose(out.affine, ref.affine)
        assert set(np.unique(np.asarray(out.dataobj))) <= {0, 1}  # a one-channel label map
    meta = json.loads((SEG / "configs" / "metadata.json").read_text())["network_data_format"]["outputs"]["pred"]
    assert meta["format"] == "segmentation" and meta["channel_def"] == {"0": "background", "1": "whole tumour"}


def test_seg_union_ensemble_config_is_the_logical_or_of_the_masks():
    parser = _parser(SEG, "train.json")
    inferer = parser.get_parsed_content("validate#inferer")
    a, b = torch.zeros(1, 2, 8, 8), torch.zeros(1, 2, 8, 8)
    a[:, 1, :4], b[:, 1, :, :4] = 5.0, 5.0  # student 1: top half, student 2: left half
    union = inferer(torch.zeros(1, 1, 8, 8), [lambda x: a, lambda x: b])
    assert torch.equal(union.argmax(1), ((a.argmax(1) == 1) | (b.argmax(1) == 1)).long())


def test_seg_3d_override_trains_on_volumes(tmp_path, data_dir):
    _run("run", SEG, tmp_path, data_dir / "brats2015-sample", "train.json", "train_3d.json",
         **{**TINY, "train#trainer#epoch_length": 1, "patches_per_volume": 1})
    state = torch.load(tmp_path / "models" / "3d" / "model.pt", weights_only=True)  # next to, not over, the 2D models
    assert state["model.0.conv.unit0.conv.weight"].ndim == 5  # Conv3d kernels
    parser = _parser(SEG, "train.json", "train_3d.json")
    terms = {t.name: t for t in parser.get_parsed_content("train#loss_terms")}
    assert set(terms) == EXPECTED["kd_ml"]("V3")
    assert isinstance(terms["s2_teacher_feature"].loss.connector, torch.nn.Conv3d)


def test_seg_trains_from_volume_files_as_monai_label_sends_them(tmp_path, data_dir):
    """MONAI Label's bundle training sets train#dataset#data / validate#dataset#data to image/label *file* paths
    (3D volumes from its datastore): the 2D bundle slices them itself (VolumeSliceDataset)."""
    from monai_kd.data import brats_volume_datalist

    brats = data_dir / "brats2015-sample"
    files = lambda split: [{"image": i["image"], "label": i["label"]}  # noqa: E731
                           for i in brats_volume_datalist(brats, split, "flair")]
    parser = _parser(SEG, "train.json", bundle_root=str(tmp_path), dataset_dir=str(brats),
                     **{"train#dataset#data": files("train"), "validate#dataset#data": files("val")})
    dataset = parser.get_parsed_content("train#dataset")
    assert len(dataset.data) > 100 and all(isinstance(item["image"], np.ndarray) for item in dataset.data)
    batch = dataset[0]
    assert tuple(batch["image"].shape) == tuple(batch["label"].shape) == (1, 64, 64)
    assert set(np.unique(np.concatenate([np.unique(i["label"]) for i in dataset.data]))) == {0, 1}
    _run("run_students", SEG, tmp_path, brats, **{**TINY, "regime": "ml", "train#dataset#data": files("train"),
                                                  "validate#dataset#data": files("val")})
    assert (tmp_path / "models" / "model.pt").is_file() and (tmp_path / "models" / "model_s2.pt").is_file()


@pytest.mark.slow
def test_seg_3d_evaluate(tmp_path, data_dir):
    _run("run", SEG, tmp_path, data_dir / "brats2015-sample", "train.json", "train_3d.json", **TINY)
    _run("run", SEG, tmp_path, data_dir / "brats2015-sample", "train.json", "train_3d.json", "evaluate.json")
    metrics = json.loads((tmp_path / "eval" / "3d" / "metrics.json").read_text())
    assert set(metrics) == {"teacher", "s1", "s2", "ensemble"} and 0 <= metrics["ensemble"]["dice"] <= 1


@pytest.mark.slow
def test_cls_pipeline_learns_on_pneumonia(tmp_path, data_dir):
    _run("run", CLS, tmp_path, data_dir / "pneumoniamnist", max_epochs=3)
    _run("run", CLS, tmp_path, data_dir / "pneumoniamnist", "train.json", "evaluate.json")
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    for member in ("s1", "s2", "ensemble"):  # three epochs already separate the classes well above chance
        assert metrics[member]["auc"] > 0.85, (member, metrics[member])


# --------------------------------------------------------------------------- the evidence script's bookkeeping


def test_evidence_records_resume_and_tables(tmp_path):
    ev = load_script("kdml_evidence")
    members = {m: {"dice": 0.5 + 0.01 * i, "iou": 0.4, "fidelity": 0.9} for i, m in enumerate(("s1", "s2", "ensemble"))}
    rec = ev.record("segmentation", "kd_ml", "V3", 0, {**members, "teacher": {"dice": 0.7, "iou": 0.6}})
    assert set(rec) == {"task", "regime", "variant", "seed", "metrics"}
    assert set(rec["metrics"]) == {"s1", "s2", "ensemble"} and set(rec["metrics"]["s1"]) == {"dice", "iou", "fidelity"}
    teacher = ev.record("segmentation", "teacher", None, 0, {"teacher": {"dice": 0.7, "iou": 0.6}})
    assert teacher["metrics"]["ensemble"] == {"dice": 0.7, "iou": 0.6, "fidelity": 1.0}

    evidence = ev.Evidence("segmentation", tmp_path / "results.json", tmp_path)
    cka = {"teacher_layers": ["a", "b"], "student_layers": ["a", "b"], "cka": [[1.0, 0.5], [0.5, None]]}
    for seed in (0, 1):
        for regime, variant in [("teacher", None), ("student_alone", None)] + [
                (r, v) for r in ev.REGIMES for v in ev.VARIANTS]:
            bump = 0.02 * seed + (0.03 if (regime, variant) == ("kd_ml", "V3") else 0.0)
            test = {m: {**v, "dice": v["dice"] + bump} for m, v in members.items()} | {"teacher": {"dice": 0.7, "iou": 0.6}}
            evidence._store(regime, variant, seed, {"train_seconds": 1.0, "val": test, "test": test,
                                                    "test_cka": {"s1": cka, "s2": cka}}, {})
    reloaded = ev.Evidence("segmentation", tmp_path / "results.json", tmp_path)  # resumable: read back
    assert reloaded.recorded("kd_ml", "V3", 1) and not reloaded.recorded("kd_ml", "V3", 2)
    assert reloaded.plan([0, 1]) == ["grid: 6 runs on seed 0"]
    table = ev.markdown("segmentation", reloaded.results, tmp_path)
    assert "| KD + ML | 51.00 ± 1.41 |" in table  # V1 S1 dice of the two seeds (0.50, 0.52), in %
    # the paired V3 KD + ML gain, with its 95% t-interval (equal gains on both seeds: zero width)
    assert "| KD (off) V1 | 3.00 ± 0.00 | [3.00, 3.00] | 3.00 ± 0.00 | 3.00 ± 0.00 | 2/2 |" in table
    assert ev._mean_std([0.515], 100.0) == "51.50 (1 seed)"  # a cell of one seed shows no made-up spread
    assert ev._mean_std([0.5, None, 0.7]) == "0.600 ± 0.141"
    assert (tmp_path / "cka_kd_ml_V3_s1.png").is_file()
    readme = tmp_path / "README.md"
    readme.write_text(f"head\n{ev.MARK_BEGIN}\nold\n{ev.MARK_END}\ntail\n")
    ev.write_section(readme, table)
    text = readme.read_text()
    assert text.startswith("head\n") and text.endswith("tail\n") and "old" not in text and table in text


def test_evidence_counts_a_run_finished_by_its_marker_not_its_checkpoint(tmp_path, monkeypatch):
    """CheckpointSaver's save_final writes the checkpoint on an exception too: a folder with a checkpoint and no done
    marker is an interrupted run, removed and retrained; one whose checkpoint was evaluated predates the markers."""
    ev = load_script("kdml_evidence")
    calls = []
    monkeypatch.setattr(ev, "run_bundle", lambda *a, **k: calls.append(a[0]))
    interrupted, evaluated = tmp_path / "interrupted", tmp_path / "evaluated"
    for root in (interrupted, evaluated):
        (root / "models").mkdir(parents=True)
        (root / "models" / "model_s2.pt").write_text("half-trained")
    (evaluated / "eval").mkdir()
    (evaluated / "eval" / "metrics.json").write_text("{}")
    ev.train_and_evaluate("classification", "run_students", interrupted, 0, {}, evaluate=False)
    assert calls == ["run_students"] and not (interrupted / "models").exists()  # removed, then trained again
    assert (interrupted / ev.MARKER).is_file()
    ev.train_and_evaluate("classification", "run_students", evaluated, 0, {}, evaluate=False)
    assert calls == ["run_students"] and (evaluated / "models" / "model_s2.pt").read_text() == "half-trained"


def test_evidence_processes_share_the_runs_by_claims(tmp_path, capsys, monkeypatch):
    """Two processes running the same command split the runs: a run another live process holds is left to it (it
    records it), the grid every seed needs is waited for, and a claim whose process died is taken over."""
    import subprocess
    import sys

    ev = load_script("kdml_evidence")
    with pytest.raises(SystemExit):
        ev.main(["--tasks", "segmentation", "--seeds", "0", "1", "2", "--run-seeds", "3", "--work", str(tmp_path)])
    assert "--run-seeds [3] must be a subset of --seeds [0, 1, 2]" in capsys.readouterr().err

    trained = []
    scores = {0.1: 0.30, 1.0: 0.20, 10.0: 0.25}  # validation NLL of the grid runs: 1.0 is best

    def fake_train_and_evaluate(task, stage, root, seed, overrides, evaluate=True, overlays=()):
        assert overlays == ()  # the main protocol runs the bundle's own configs
        trained.append(root.name)
        (root / "models").mkdir(parents=True, exist_ok=True)
        (root / "models" / ("teacher.pt" if stage == "run_teacher" else "model_s2.pt")).write_text("x")
        (root / ev.MARKER).write_text("{}")  # what run_stage writes once the training returned
        w = overrides.get("kd_feature_weight", overrides.get("ml_feature_weight", 1.0))
        member = {"nll": scores.get(w, 0.2), "accuracy": 0.9, "auc": 0.95, "fidelity": 0.9}
        metrics = {m: dict(member) for m in ("s1", "s2", "ensemble", "teacher")}
        return {"train_seconds": 1.0, "val": metrics, "test": metrics, "val_cka": {}, "test_cka": {}}

    monkeypatch.setattr(ev, "train_and_evaluate", fake_train_and_evaluate)
    monkeypatch.setattr(ev, "POLL_SECONDS", 0.01)
    evidence = ev.Evidence("classification", tmp_path / "results.json", tmp_path)
    seed1 = tmp_path / "classification" / "seed1"
    seed1.mkdir(parents=True)
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])  # a live "other process"
    try:
        (seed1 / "kd_ml_V3.claim").write_text(str(other.pid))  # the other process trains this run
        (seed1 / "ml_V1.claim").write_text("999999999")  # a process that has died: its claim is stale
        evidence.run_seed(1, first_seed=0)  # the grid of seed 0 is needed first: this process runs it
    finally:
        other.kill()
        other.wait()
    assert evidence.results["selection"]["chosen"] == {"kd_feature_weight": 1.0, "ml_feature_weight": 1.0}
    assert sum(name.startswith("grid_") for name in trained) == 6 and "teacher" in trained
    assert "kd_ml_V3" not in trained and "ml_V1" in trained  # left to the live holder; the stale claim taken over
    assert evidence.recorded("ml", "V1", 1) and not evidence.recorded("kd_ml", "V3", 1)
    assert len([r for r in evidence.results["runs"] if r["seed"] == 1]) == 2 + 11
    assert [c.name for c in tmp_path.rglob("*.claim")] == ["kd_ml_V3.claim"]  # this process released all of its own
    # the second process (here: the same one later) finds the grid recorded and trains only what is left
    trained.clear()
    ev.Evidence("classification", tmp_path / "results.json", tmp_path).run_seed(1, first_seed=0)
    assert trained == ["kd_ml_V3"]
