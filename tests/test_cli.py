"""monai-kd commands that need no training: results, verify, and argument errors."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from monai_kd import cli
from monai_kd.bundle_utils import BundleError

from conftest import REPO


def test_results_prints_mean_and_std_per_model(tmp_path, capsys):
    bundle = tmp_path / "b"
    shutil.copytree(REPO / "bundles" / "kd" / "configs", bundle / "configs")
    (bundle / "docs").mkdir()
    runs = [
        {"dataset": "pneumoniamnist", "model": "student_kd", "seed": s, "accuracy": a, "auc": u}
        for s, a, u in ((0, 0.80, 0.90), (1, 0.90, 0.94), (2, 0.85, 0.92))
    ]
    (bundle / "docs" / "results.json").write_text(json.dumps({"runs": runs}))
    cli.results(str(bundle))
    out = capsys.readouterr().out  # a bundle without its own spec: rows by --key (model), as a Markdown table
    assert "### pneumoniamnist (3 seed(s): [0, 1, 2])" in out
    assert "| student_kd | 3 | 0.850 ± 0.050 | 0.920 ± 0.020 |" in out


def test_verify_and_unknown_stage(capsys):
    cli.verify(str(REPO / "bundles" / "kd"))
    assert "metadata verified" in capsys.readouterr().out
    with pytest.raises(BundleError, match="unknown stage .teacherz."):
        cli.train(str(REPO / "bundles" / "kd"), stage="teacherz")


def test_root_cause_unwraps_monai_runtime_errors():
    try:
        try:
            raise FileNotFoundError("dataset folder does not exist: 'x'")
        except FileNotFoundError as inner:
            raise RuntimeError("Failed to evaluate ConfigExpression") from inner
    except RuntimeError as outer:
        assert isinstance(cli.root_cause(outer), FileNotFoundError)


def test_console_script_help_lists_commands():
    proc = subprocess.run([sys.executable, "-m", "monai_kd.cli", "--help"], capture_output=True, text=True,
                          env={"PAGER": "cat", "PATH": "/usr/bin:/bin"})
    text = proc.stdout + proc.stderr
    for command in ("run", "train", "evaluate", "export", "results", "verify", "infer-dicom"):
        assert command in text


def test_check_overrides_names_the_closest_keys_and_wrong_types():
    from monai_kd.bundle_utils import BundleError, check_overrides

    train = str(REPO / "bundles" / "kd" / "configs" / "train.json")
    check_overrides(train, {"max_epochs": 1, "train#trainer#max_epochs": 2, "bundle_root": "x", "seed": "$1"})
    with pytest.raises(BundleError, match=r"unknown config key 'max_epoch'.*did you mean 'max_epochs'"):
        check_overrides(train, {"max_epoch": 1})
    with pytest.raises(BundleError, match="no similar key"):
        check_overrides(train, {"zzzz_qqqq": 1})
    with pytest.raises(BundleError, match=r"'max_epochs' expects a number \(default"):
        check_overrides(train, {"max_epochs": "abc"})
