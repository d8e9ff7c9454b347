"""The latency benchmark: refuses a busy machine, records what it measured (no timing assertions)."""

from __future__ import annotations

import json

from conftest import load_script

from monai_kd.reporting import markers


def test_refuses_a_busy_machine_and_flags_a_forced_run(tmp_path, monkeypatch):
    bench = load_script("bench_latency")
    monkeypatch.setattr(bench, "load_average", lambda: 5.0)
    out, md = tmp_path / "lat.json", tmp_path / "lat.md"
    readme = tmp_path / "bundles" / "kd" / "docs" / "README.md"
    readme.parent.mkdir(parents=True)
    begin, end = markers("latency")
    readme.write_text(f"# kd\n\n{begin}\n{end}\n")
    files = ["--output", str(out), "--markdown", str(md), "--bundles-root", str(tmp_path / "bundles")]
    assert bench.main(["--bundles", "kd", *files]) == 3
    assert not out.exists() and not md.exists()
    args = ["--bundles", "kd", "--batches", "2", "--threads", "1", "--warmup", "1", "--repeats", "2", "--allow-busy"]
    assert bench.main([*args, *files]) == 0
    result = json.loads(out.read_text())
    assert result["busy"] is True and "Busy machine, not evidence" in md.read_text()
    # the bundle README gets no busy number, only the command to measure it
    section = readme.read_text().split(begin)[1].split(end)[0]
    assert "not measured on an idle machine" in section and " ms" not in section and "python scripts/bench_latency.py" in section
    models = {(r["model"], r["runtime"]) for r in result["records"]}
    runtimes = ("eager", "torchscript", "onnxruntime")
    assert models == {("teacher", rt) for rt in runtimes} | {
        (m, rt) for m in ("student", "student_fast") for rt in (*runtimes, "onnxruntime_int8")}
    by_model = {r["model"]: r for r in result["records"]}
    # parameters and MACs are properties of the networks: the teacher (ResNet-18) is far larger than the student
    assert by_model["teacher"]["parameters"] > 100 * by_model["student"]["parameters"]
    assert by_model["student_fast"]["macs"] == 211_472  # hand count in tests/networks/test_fast_student.py
    assert by_model["student"]["macs"] > 15 * by_model["student_fast"]["macs"]
    assert all(r["median_s"] > 0 for r in result["records"])

    # an idle run replaces the draft everywhere; a later busy run never replaces an idle-machine table
    monkeypatch.setattr(bench, "load_average", lambda: 0.1)
    assert bench.main([*args[:-1], *files]) == 0
    assert "Measured on an idle machine" in md.read_text() and "Measured on an idle machine" in readme.read_text()
    monkeypatch.setattr(bench, "load_average", lambda: 5.0)
    assert bench.main([*args, *files]) == 0
    assert json.loads(out.read_text())["busy"] is True
    assert "Busy machine" not in md.read_text() and "Measured on an idle machine" in readme.read_text()
