"""Every evidence script re-renders its tables from the records alone (``--report-only``), training nothing."""

from __future__ import annotations

import json
import shutil

import pytest

from conftest import REPO, load_script
from monai_kd.reporting import markers

BEGIN, END = markers()


def _readme(path):
    path.write_text(f"# head\n{BEGIN}\nold\n{END}\n{markers('retinal')[0]}\nold\n{markers('retinal')[1]}\n")
    return path


def _section(path) -> str:
    return path.read_text().split(BEGIN, 1)[1].split(END, 1)[0]


@pytest.mark.parametrize("name, bundle", [("kd", "kd"), ("emtkd", "emtkd"), ("weckd", "weckd")])
def test_report_only_renders_from_the_records(name, bundle, tmp_path, monkeypatch, capsys):
    records = REPO / "bundles" / bundle / "docs" / "results.json"
    output = tmp_path / "results.json"
    shutil.copy(records, output)
    readme = _readme(tmp_path / "README.md")
    ev = load_script(f"{name}_evidence")
    monkeypatch.setattr(ev, "run_stage", lambda *a, **k: pytest.fail("--report-only trained a stage"))
    args = ["--report-only", "--output", str(output), "--readme", str(readme), "--seeds", "0"]  # 1 seed is fine here
    if name == "weckd":
        args += ["--plot", str(tmp_path / "chain.png")]
    ev.main(args)
    assert json.loads(output.read_text()) == json.loads(records.read_text())  # the records are left as they were
    text = _section(readme)
    assert "old" not in text and "|---" in text and text.strip() in capsys.readouterr().out


def test_report_only_kdml_and_mmkd(tmp_path, monkeypatch):
    records = REPO / "bundles" / "kdml_seg" / "docs" / "results.json"
    kdml = load_script("kdml_evidence")
    monkeypatch.setattr(kdml, "run_stage", lambda *a, **k: pytest.fail("--report-only trained a stage"))
    shutil.copy(records, tmp_path / "results_segmentation.json")  # --quick reads and writes only its --work folder
    kdml.main(["--report-only", "--quick", "--tasks", "segmentation", "--work", str(tmp_path)])
    assert "| KD + ML |" in (tmp_path / "README_segmentation.md").read_text()

    mmkd = load_script("mmkd_evidence")
    monkeypatch.setattr(mmkd, "run_stage", lambda *a, **k: pytest.fail("--report-only trained a stage"))
    out = tmp_path / "mmkd"
    out.mkdir()
    shutil.copy(REPO / "bundles" / "mmkd" / "docs" / "results_legacy_teachers.json", out / "results.json")  # fixed records
    mmkd.main(["--report-only", "--out", str(out)])
    assert "AUC gain over student_alone, 95% CI" in (out / "README.md").read_text()
