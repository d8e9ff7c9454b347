"""The start-up benchmark: refuses a busy machine; its import breakdown is what ``-X importtime`` says."""

from __future__ import annotations

from conftest import load_script

BASE = """import time: self [us] | cumulative | imported package
import time:       100 |        100 |   _io
import time:      2000 |       5000 | torch
"""
FULL = BASE + """import time:       300 |        300 |     pydicom.sr._concepts_dict
import time:        50 |        350 |   pydicom.sr
import time:       400 |        750 | highdicom
import time:        20 |         20 | monai_kd.io.dicom_sr
not an import line
"""


def test_refuses_a_busy_machine(tmp_path, monkeypatch):
    bench = load_script("bench_startup")
    monkeypatch.setattr(bench, "load_average", lambda: 5.0)
    out = tmp_path / "s.json"
    assert bench.main(["--output", str(out), "--markdown", str(tmp_path / "s.md")]) == 3
    assert not out.exists()


def test_imports_beyond_torch_monai_by_package():
    bench = load_script("bench_startup")
    base, full = bench.import_table(BASE), bench.import_table(FULL)
    assert full["highdicom"] == (400, 750) and "not" not in full
    rows = bench.imports_beyond(base, full)
    assert [(r["package"], round(r["self_s"], 6), r["modules"]) for r in rows] == [
        ("highdicom", 0.0004, 1), ("pydicom", 0.00035, 2), ("monai_kd", 0.00002, 1)]
