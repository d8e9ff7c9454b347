"""``monai-kd results BUNDLE``: evidence tables with paired differences and 95% confidence intervals."""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import statistics
import subprocess
import sys

import pytest

from conftest import REPO, load_script
from monai_kd import cli

T_975 = {1: 12.7062047, 2: 4.3026527, 3: 3.1824463, 4: 2.7764451, 5: 2.5705818, 6: 2.4469119, 7: 2.3646243}


def _hand_ci(diffs: list[float]) -> str:
    """The t-interval worked out here, independently of monai_kd.evidence (printed t quantiles)."""
    if len(diffs) < 2:
        return "–"
    half = T_975[len(diffs) - 1] * statistics.stdev(diffs) / math.sqrt(len(diffs))
    return f"[{statistics.mean(diffs) - half:.3f}, {statistics.mean(diffs) + half:.3f}]"


def test_results_kd_prints_the_paired_gain_of_the_committed_records(capsys):
    runs = json.loads((REPO / "bundles" / "kd" / "docs" / "results.json").read_text())["runs"]
    cli.results("kd")
    out = capsys.readouterr().out
    assert "95% CI: Student-t interval" in out
    for dataset in sorted({r["dataset"] for r in runs}):
        assert f"### {dataset} (" in out
        value = {(r["model"], r["seed"]): r for r in runs if r["dataset"] == dataset}
        seeds = sorted(s for m, s in value if m == "student_kd" and ("student_alone", s) in value)
        if not seeds:
            continue
        for metric in ("accuracy", "auc"):
            diffs = [value[("student_kd", s)][metric] - value[("student_alone", s)][metric] for s in seeds]
            wins = sum(d > 0 for d in diffs)
            row = next(line for line in out.splitlines()
                       if line.startswith("| student_kd − student_alone |") and line in _section(out, dataset))
            assert f"({wins}/{len(seeds)}) | {_hand_ci(diffs)}" in row, (metric, row)


def _section(out: str, dataset: str) -> str:
    return out.split(f"### {dataset} (", 1)[1].split("### ", 1)[0]


def test_results_hand_made_bundle(tmp_path, capsys):
    bundle = tmp_path / "kd"  # the kd bundle's spec: rows by model, KD student vs student alone and teacher
    shutil.copytree(REPO / "bundles" / "kd" / "configs", bundle / "configs")
    (bundle / "docs").mkdir()
    acc = {"student_alone": (0.80, 0.82, 0.84), "student_kd": (0.81, 0.84, 0.87), "teacher": (0.90, 0.90, 0.90)}
    runs = [{"dataset": "d", "model": m, "seed": s, "accuracy": a[s], "auc": 0.9}
            for m, a in acc.items() for s in range(3)]
    (bundle / "docs" / "results.json").write_text(json.dumps({"runs": runs}))
    cli.results(str(bundle))
    out = capsys.readouterr().out
    assert "| student_kd | 3 | 0.840 ± 0.030 | 0.900 ± 0.000 |" in out
    # gains 0.01, 0.02, 0.03: mean 0.02 ± 0.01, t-interval 0.02 ± 4.3027 * 0.01 / sqrt(3) = [-0.005, 0.045]
    assert "| student_kd − student_alone | 3 | +0.020 ± 0.010 (3/3) | [-0.005, 0.045] | +0.000 ± 0.000 (0/3) |" in out


def test_results_of_a_bundle_without_records_names_the_file(tmp_path):
    shutil.copytree(REPO / "bundles" / "kd" / "configs", tmp_path / "kd" / "configs")
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "kd" / "docs" / "results.json"))):
        cli.results(str(tmp_path / "kd"))
    with pytest.raises(FileNotFoundError, match="not a bundle folder"):
        cli.results("no_such_bundle")


PROBE = """
import json, sys
sys.argv = ["monai-kd", *json.loads(sys.argv[1])]
try:
    from monai_kd.cli import main
    main()
except SystemExit:
    pass
heavy = sorted(m for m in ("torch", "monai", "numpy") if sys.modules.get(m) is not None)
print("PROBE " + json.dumps(heavy), file=sys.stderr)
"""


@pytest.mark.parametrize("args", [["results", "--help"], ["results", "kd"]])
def test_results_imports_neither_torch_nor_monai(args):
    env = {**os.environ, "PYTHONPATH": str(REPO), "PAGER": "cat"}
    proc = subprocess.run([sys.executable, "-c", PROBE, json.dumps(args)], capture_output=True, text=True, cwd=REPO,
                          env=env, timeout=120)
    line = [x for x in proc.stderr.splitlines() if x.startswith("PROBE ")][-1]
    assert json.loads(line[len("PROBE "):]) == [], proc.stderr[-2000:]
    assert ("95% CI" if args[-1] == "kd" else "paired") in proc.stdout + proc.stderr


def test_readme_intervals_are_the_results_command_intervals(tmp_path, capsys):
    """Every interval the weckd and kdml scripts put in their README tables is one `monai-kd results` prints."""
    weckd = json.loads((REPO / "bundles" / "weckd" / "docs" / "results.json").read_text())
    kdml = json.loads((REPO / "bundles" / "kdml_seg" / "docs" / "results.json").read_text())
    tables = {"weckd": load_script("weckd_evidence").markdown(weckd),
              "kdml_seg": load_script("kdml_evidence").markdown("segmentation", kdml, tmp_path)}
    for bundle, table in tables.items():
        cli.results(bundle)
        printed = capsys.readouterr().out
        intervals = re.findall(r"\[-?\d+\.\d+, -?\d+\.\d+\]", table)
        assert intervals, f"{bundle}: no interval in the README table"
        assert all(i in printed for i in intervals), bundle
