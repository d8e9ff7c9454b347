"""The WeCKD bundle in-process on real data with tiny overrides: ``monai-kd run``, the per-link partition, BraTS by patient."""

from __future__ import annotations

import csv
import json

import pytest
import torch
from monai.bundle import ConfigParser, run

from monai_kd import cli

from conftest import REPO, load_script

BUNDLE = REPO / "bundles" / "weckd"
CONFIG = str(BUNDLE / "configs" / "train.json")
TINY = {"max_epochs": 1, "min_iterations": 0, "batch_size": 64}


def _parsed(*extra: str, **override) -> ConfigParser:
    parser = ConfigParser()
    parser.read_config([CONFIG, *[str(BUNDLE / "configs" / name) for name in extra]])
    parser.update(override)
    return parser


@pytest.fixture(scope="module")
def trained(tmp_path_factory, data_dir):
    """``monai-kd run`` (train every stage, evaluate on test, export) on BreastMNIST, one short epoch per link."""
    root = tmp_path_factory.mktemp("weckd")
    cli.pipeline(str(BUNDLE), bundle_root=str(root), dataset_dir=str(data_dir / "breastmnist"), **TINY)
    return root


def test_run_writes_every_link_and_the_baseline(trained):
    names = sorted(p.name for p in (trained / "models").iterdir())
    assert names == ["link.json", "link_1.pt", "link_2.pt", "link_3.pt", "model.onnx", "model.pt", "model.ts",
                     "student_alone.json", "student_alone_1.pt"]
    records = json.loads((trained / "models" / "link.json").read_text())["links"]
    # BreastMNIST train: 147 malignant + 399 benign/normal; 10% per class = 15 + 40 = 55 labelled images per link
    assert [(r["link"], r["teacher"], r["train_items"]) for r in records] == [
        (1, None, 55), (2, "link_1", 55), (3, "link_2", 55)]
    assert all(0.0 <= r["val_auc"] <= 1.0 for r in records)
    model, last = (torch.load(trained / "models" / n, weights_only=True) for n in ("model.pt", "link_3.pt"))
    assert all(torch.equal(model[k], last[k]) for k in last)


def test_evaluate_reports_every_link_on_test(trained):
    metrics = json.loads((trained / "eval" / "metrics.json").read_text())
    assert set(metrics) == {"link_1", "link_2", "link_3", "student_alone_1"}
    assert all(0.0 <= m["test_auc"] <= 1.0 and m["parameters"] == 77450 for m in metrics.values())
    # the model card: the last link, distilled from link 2, beside the other link and the student alone
    card = json.loads((trained / "eval" / "model_card.json").read_text())
    assert {n: m["role"] for n, m in card["models"].items()} == {
        "link_3": "student", "link_2": "teacher", "student_alone_1": "baseline", "link_1": "baseline"}
    test = card["models"]["link_3"]["test"]
    assert test["samples"] == 156 and test["auc"]["value"] == pytest.approx(metrics["link_3"]["test_auc"], abs=1e-4)
    # export (the end of monai-kd run) re-recorded the checksums: the card describes the exported files
    assert {e["file"] for e in card["exports"]} == {"models/model.pt", "models/model.ts", "models/model.onnx"}


def test_second_run_reuses_the_chain(trained, data_dir):
    files = [trained / "models" / name for name in ("link_1.pt", "link_2.pt", "link_3.pt", "link.json")]
    before = [f.stat().st_mtime_ns for f in files]
    cli.train(str(BUNDLE), stage="student", bundle_root=str(trained), dataset_dir=str(data_dir / "breastmnist"), **TINY)
    assert [f.stat().st_mtime_ns for f in files] == before


def test_inference_on_png_files(trained, pneumonia_pngs):
    run("run", config_file=str(BUNDLE / "configs" / "inference.json"), meta_file=str(BUNDLE / "configs" / "metadata.json"),
        bundle_root=str(trained), dataset_dir=str(pneumonia_pngs))
    with open(trained / "eval" / "predictions.csv") as f:
        assert len(list(csv.reader(f))) == 8


def test_links_get_disjoint_labels_and_the_baseline_the_last_links(data_dir):
    parser = _parsed(dataset_dir=str(data_dir / "pneumoniamnist"))
    links = parser.get_parsed_content("link_datalists")
    indices = [{item["index"] for item in link} for link in links]
    # PneumoniaMNIST train: 1214 normal + 3494 pneumonia; 10% per class = 121 + 349 = 470
    assert [len(i) for i in indices] == [470, 470, 470]
    assert not (indices[0] & indices[1] or indices[0] & indices[2] or indices[1] & indices[2])
    baseline = parser.get_parsed_content("student_alone#trainer").datasets
    assert len(baseline) == 1 and {item["index"] for item in baseline[0].data} == indices[2]


def test_overlap_is_a_config_value(data_dir):
    links = _parsed(dataset_dir=str(data_dir / "breastmnist"), overlap=0.2).get_parsed_content("link_datalists")
    first, second = ({item["index"] for item in link} for link in links[:2])
    assert len(first & second) == 3 + 8  # round(0.2 * 15) malignant + round(0.2 * 40) benign/normal


def test_brats_links_are_split_by_patient(data_dir):
    parser = _parsed("train_brats.json", dataset_dir=str(data_dir / "brats2015-sample"))
    links = parser.get_parsed_content("link_datalists")
    subjects = [{item["subject"] for item in link} for link in links]
    assert len(subjects) == 2 and all(len(s) == 1 for s in subjects) and not subjects[0] & subjects[1]
    held_out = {item["subject"] for split in ("val_datalist", "test_datalist") for item in parser.get_parsed_content(split)}
    assert not held_out & (subjects[0] | subjects[1])


def test_evidence_verdict_on_hand_made_records():
    evidence = load_script("weckd_evidence")
    runs = [{"dataset": "d", "fraction": 0.1, "method": "chain", "link": 3, "seed": s, "accuracy": 0.80, "auc": 0.90} for s in range(3)]
    runs += [{"dataset": "d", "fraction": 0.1, "method": "single_backbone_same_data", "link": 3, "seed": s,
              "accuracy": a, "auc": 0.85} for s, a in enumerate([0.70, 0.75, 0.82])]
    ((method, acc, auc),) = evidence.verdicts(runs, "d", 0.1)
    assert method == "single_backbone_same_data"
    assert acc == pytest.approx([0.10, 0.05, -0.02]) and auc == pytest.approx([0.05] * 3)
    assert evidence.verdict(acc, auc) == "chain wins"  # both means up, more accurate on 2 of 3 seeds
    assert evidence.verdict([-a for a in acc], [-a for a in auc]) == "chain loses"
    assert evidence.verdict(acc, [-a for a in auc]) == "mixed"


def test_evaluate_ends_with_the_summary_of_the_card(trained, data_dir, capsys):
    cli.evaluate(str(BUNDLE), bundle_root=str(trained), dataset_dir=str(data_dir / "breastmnist"), **TINY)
    out = capsys.readouterr().out.rstrip().splitlines()
    card = json.loads((trained / "eval" / "model_card.json").read_text())
    start = max(i for i, line in enumerate(out) if line.startswith("== monai-kd evaluate"))
    summary = out[start:]
    assert summary[-1] == f"model card: {trained / 'eval' / 'model_card.md'}"  # the last thing printed
    auc = card["models"]["link_3"]["test"]["auc"]
    row = next(line for line in summary if line.startswith("link_3 "))
    assert f"{auc['value']:.3f} [{auc['ci95'][0]:.3f}, {auc['ci95'][1]:.3f}]" in row and "77,450" in row


def test_exporter_logs_are_quiet_unless_verbose(trained, tmp_path):
    import subprocess
    import sys

    outputs = []
    for flags in ([], ["--verbose"]):
        command = [sys.executable, "-m", "monai_kd.cli", "export", str(BUNDLE), "--ckpt_file",
                   str(trained / "models" / "model.pt"), "--output_dir", str(tmp_path / f"out{len(flags)}"), *flags]
        result = subprocess.run(command, capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stderr
        outputs.append(result.stdout + result.stderr)
    quiet, verbose = outputs
    assert "[torch.onnx]" not in quiet and "torch/onnx" not in quiet
    assert "[torch.onnx]" in verbose
    assert quiet.rstrip().endswith(str(tmp_path / "out0" / "model.onnx"))


def test_evidence_scores_a_checkpoint_through_evaluate_json(trained, tmp_path):
    """``scripts/weckd_evidence.py`` scores each checkpoint with ``evaluate.json`` (``run_checkpoint``): the record
    fields of ``docs/results.json``, and the test numbers the bundle's own evaluation gave that link."""
    import shutil

    evidence = load_script("weckd_evidence")
    ckpt = tmp_path / "run" / "models" / "link_3.pt"
    ckpt.parent.mkdir(parents=True)
    shutil.copy(trained / "models" / "link_3.pt", ckpt)
    scores = evidence.Evidence(tmp_path / "results.json", tmp_path, datasets=["breastmnist"]).evaluate("breastmnist", ckpt)
    recorded = json.loads((BUNDLE / "docs" / "results.json").read_text())["runs"][0]
    assert list(scores) == [k for k in recorded if k in scores]  # the recorded metric fields, in their order
    assert list(scores) == ["accuracy", "auc", "nll", "ece", "val_accuracy", "val_auc", "val_nll", "val_ece"]
    bundle = json.loads((trained / "eval" / "metrics.json").read_text())["link_3"]
    assert scores["auc"] == pytest.approx(bundle["test_auc"], abs=1e-6) and scores["accuracy"] == bundle["test_acc"]
    assert scores["nll"] == pytest.approx(bundle["test_nll"], abs=1e-6) and scores["val_nll"] > 0.0
    val = json.loads((tmp_path / "run" / "eval" / "val_metrics.json").read_text())
    assert set(val) == {"link_3"} and val["link_3"]["test_ece"] == scores["val_ece"]
