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


def test_an_int8_latency_is_listed_only_beside_a_measured_int8_accuracy(tmp_path, monkeypatch):
    """Issue 20: no quantised student's latency without its accuracy. kd's fast student has int8 evidence, kd's
    default student and weckd's have none: their int8 rows stay in the JSON, not in the tables; ``--report-only``
    re-renders from the JSON without measuring."""
    bench = load_script("bench_latency")

    def rec(bundle, model, runtime):
        return {"bundle": bundle, "model": model, "parameters": 10, "macs": 20, "threads": 1, "batch": 1,
                "runtime": runtime, "median_s": 0.001, "q1_s": 0.001, "q3_s": 0.001, "repeats": 2}

    records = [rec(b, m, rt) for b in ("kd", "weckd") for m in ("student", "student_fast")
               for rt in ("eager", "onnxruntime", "onnxruntime_int8")]
    result = {"machine": "m", "load_before": 0.1, "load_after": 0.2, "max_load": 0.5, "repeats": 2, "warmup": 1,
              "busy": False, "threads": [1], "batches": [1], "records": records}
    text = bench.markdown(result)
    rows = {tuple(c.strip() for c in line.split("|")[1:5:3]) for line in text.splitlines() if line.startswith("| student")}
    assert ("student_fast", "onnxruntime_int8") in rows and ("student", "onnxruntime") in rows
    assert ("student", "onnxruntime_int8") not in rows  # kd's default student: no int8 accuracy
    weckd = text.split("### weckd")[1]
    assert "| onnxruntime_int8 |" not in weckd and "not measured yet" in weckd
    assert "kd README's fast section" in text.split("### weckd")[0]

    out, md = tmp_path / "lat.json", tmp_path / "lat.md"
    out.write_text(json.dumps(result))
    begin, end = markers("latency")
    md.write_text(f"# t\n\n{begin}\n{end}\n")
    monkeypatch.setattr(bench, "bench", lambda *a, **k: (_ for _ in ()).throw(AssertionError("measured")))
    assert bench.main(["--report-only", "--output", str(out), "--markdown", str(md), "--no-readmes"]) == 0
    assert md.read_text().split(begin)[1].split(end)[0].strip() == text.strip()
