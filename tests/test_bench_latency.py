"""The latency benchmark: refuses a busy machine, records what it measured (no timing assertions)."""

from __future__ import annotations

import json

from conftest import load_script


def test_refuses_a_busy_machine_and_flags_a_forced_run(tmp_path, monkeypatch):
    bench = load_script("bench_latency")
    monkeypatch.setattr(bench, "load_average", lambda: 5.0)
    out, md = tmp_path / "lat.json", tmp_path / "lat.md"
    assert bench.main(["--bundles", "kd", "--output", str(out), "--markdown", str(md)]) == 3
    assert not out.exists() and not md.exists()
    args = ["--bundles", "kd", "--batches", "2", "--threads", "1", "--warmup", "1", "--repeats", "2", "--allow-busy"]
    assert bench.main([*args, "--output", str(out), "--markdown", str(md)]) == 0
    result = json.loads(out.read_text())
    assert result["busy"] is True and "not an honest measurement" in md.read_text()
    models = {(r["model"], r["runtime"]) for r in result["records"]}
    assert models == {(m, rt) for m in ("teacher", "student") for rt in ("eager", "torchscript", "onnxruntime")}
    by_model = {r["model"]: r for r in result["records"]}
    # parameters and MACs are properties of the networks: the teacher (ResNet-18) is far larger than the student
    assert by_model["teacher"]["parameters"] > 100 * by_model["student"]["parameters"]
    assert by_model["student"]["macs"] > 0 and all(r["median_s"] > 0 for r in result["records"])
