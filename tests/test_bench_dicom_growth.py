"""The DICOM growth benchmark: refuses a busy machine; a flagged smoke run records every count (no timing asserts)."""

from __future__ import annotations

import json

import pytest

from conftest import load_script


def test_refuses_busy_machine_and_records_growth(tmp_path, monkeypatch, data_dir):
    pytest.importorskip("highdicom")
    bench = load_script("bench_dicom_growth")
    monkeypatch.setattr(bench, "WORK", tmp_path / "work")
    monkeypatch.setattr(bench, "load_average", lambda: 5.0)
    out, md = tmp_path / "g.json", tmp_path / "g.md"
    md.write_text("# t\n<!-- dicom-growth:begin -->\n<!-- dicom-growth:end -->\n")
    assert bench.main(["--output", str(out), "--markdown", str(md)]) == 3 and not out.exists()
    assert bench.main(["--counts", "1", "2", "--skip-startup", "--allow-busy", "--output", str(out),
                       "--markdown", str(md)]) == 0
    result = json.loads(out.read_text())
    assert result["busy"] is True and "Busy run: not a result" in md.read_text()
    assert [r["series"] for r in result["growth"]] == [1, 2]
    for r in result["growth"]:
        assert len(r["rss_mb"]) == r["series"] and r["timings"]["series"] == r["series"]
        assert r["peak_rss_mb"] > 0 and r["series_per_hour"] > 0
    outputs = sorted(p.name for p in (tmp_path / "work" / "out2").iterdir())
    assert len(outputs) == 4 and sum(n.endswith(".sr.dcm") for n in outputs) == 2  # one SR + JSON per series
