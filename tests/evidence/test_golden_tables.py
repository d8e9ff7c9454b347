"""The evidence scripts, rebuilt on ``monai_kd.evidence``, render the same tables from the same records.

``tests/data/evidence_golden/<bundle>.md`` are the tables the scripts rendered *before* the refactor, from the
committed ``bundles/<bundle>/docs/results.json`` (its sha256 and commit in ``manifest.json``). Each test renders the
same records with today's script, removes the interval columns and notes the refactor added
(:func:`monai_kd.evidence.strip_intervals`) and compares line by line. When the bundle's records have changed since
(new runs recorded), the records of the capture commit are read from git, so the comparison is always like for like.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import REPO, load_script
from monai_kd.evidence import CI_HEADER, strip_intervals

GOLDEN = REPO / "tests" / "data" / "evidence_golden"
MANIFEST = json.loads((GOLDEN / "manifest.json").read_text())


def _records(name: str) -> dict:
    entry = MANIFEST[name]
    path = REPO / entry["records"]
    if path.is_file() and hashlib.sha256(path.read_bytes()).hexdigest() == entry["sha256"]:
        return json.loads(path.read_text())
    if shutil.which("git") is None:
        pytest.skip(f"{path} changed since the golden capture and git is not available to read the captured records")
    proc = subprocess.run(["git", "-C", str(REPO), "show", f"{entry['commit']}:{entry['records']}"], capture_output=True,
                          text=True)
    if proc.returncode != 0:
        pytest.skip(f"records of the golden capture not reachable in git: {proc.stderr.strip()}")
    return json.loads(proc.stdout)


def _before(name: str) -> list[dict] | None:
    path = (REPO / MANIFEST[name]["records"]).with_name("results_before_correctness.json")
    return json.loads(path.read_text())["runs"] if path.is_file() else None


def _render(name: str, tmp_path: Path) -> str:
    results = _records(name)
    if name == "kd":
        ev = load_script("kd_evidence")
        return ev.markdown({**results, "before_correctness": _before(name)})
    if name in ("emtkd", "emtkd_retinal"):
        ev = load_script("emtkd_evidence")
        if name == "emtkd_retinal":
            return ev.markdown_retinal(results)
        plot = "teacher_weights.png" if ev.plot_weights(results, tmp_path / "w.png") else None
        return ev.markdown(results, plot, _before(name))
    if name in ("kdml_cls", "kdml_seg"):
        ev = load_script("kdml_evidence")
        task = "classification" if name == "kdml_cls" else "segmentation"
        return ev.markdown(task, results, tmp_path, before=_before(name))
    if name == "mmkd":
        ev = load_script("mmkd_evidence")
        return ev.render({**results, "teacher_check": ev.teacher_check(results), "timing_ratio": ev.timing(results)})
    if name == "weckd":
        return load_script("weckd_evidence").markdown(results)
    raise AssertionError(f"no renderer for {name}")


@pytest.mark.parametrize("name", sorted(MANIFEST))
def test_tables_equal_the_golden_rendering_apart_from_the_intervals(name, tmp_path):
    text = _render(name, tmp_path)
    golden = (GOLDEN / f"{name}.md").read_text().rstrip("\n")
    assert strip_intervals(text).rstrip("\n").splitlines() == golden.splitlines()
    if name in ("kd", "emtkd", "emtkd_retinal", "kdml_seg", "mmkd", "weckd"):  # every paired comparison got its CI
        assert CI_HEADER in text, f"{name}: no confidence interval rendered"


def test_strip_intervals_removes_exactly_the_added_columns_and_notes():
    text = ("| a | b | b 95% CI |\n|---|---:|---:|\n| x | 1 | [0.1, 0.2] |\n\n"
            "- gain of a over b: 0.010 ± 0.020, 95% CI [-0.040, 0.060] (a higher on 2/3 seeds)\n| c | d |")
    assert strip_intervals(text) == ("| a | b |\n|---|---:|\n| x | 1 |\n\n"
                                     "- gain of a over b: 0.010 ± 0.020 (a higher on 2/3 seeds)\n| c | d |")
