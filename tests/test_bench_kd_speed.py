"""The training-speed benchmark: refuses a busy machine, flags a forced run, never shows busy numbers as results."""

from __future__ import annotations

import json

import pytest

from conftest import REPO, load_script


def test_refuses_busy_machine_and_a_forced_smoke_run_records_every_variant(tmp_path, monkeypatch, data_dir):
    bench = load_script("bench_kd_speed")
    out, md = tmp_path / "speed.json", tmp_path / "speed.md"
    md.write_text("# t\n\n<!-- kd-speed:begin -->\n<!-- kd-speed:end -->\n")
    monkeypatch.setattr(bench, "load_average", lambda: 5.0)
    assert bench.main(["--output", str(out), "--markdown", str(md)]) == 3
    assert not out.exists()
    args = ["--jobs", "cls", "--limit", "96", "--epochs", "2", "--allow-busy", "--torchdistill-python", "/nonexistent/python"]
    monkeypatch.setattr(bench.subprocess, "run", _missing_python)
    assert bench.main([*args, "--output", str(out), "--markdown", str(md)]) == 0
    result = json.loads(out.read_text())
    assert result["busy"] is True
    text = md.read_text()
    assert "Busy run: not a result" in text and "| variant |" not in text  # no table of busy seconds
    job = result["jobs"][0]
    assert job["samples"] == 96 and job["teacher_parameters"] > 50 * job["student_parameters"]
    variants = job["variants"]
    assert set(variants) == {"student_alone", "pytorch_kd", "monai_kd_live", "monai_kd_cached", "torchdistill",
                             "torchdistill_cache_output"}
    for name in ("student_alone", "pytorch_kd", "monai_kd_live", "monai_kd_cached"):
        assert len(variants[name]["epoch_s"]) == 2 and variants[name]["ratio_to_student_alone"] > 0
    assert variants["student_alone"]["ratio_to_student_alone"] == 1.0
    # the cache ran the teacher on the 96 samples once (epoch 1) and served epoch 2 from memory
    assert (variants["monai_kd_cached"]["cache_misses"], variants["monai_kd_cached"]["cache_hits"]) == (96, 96)
    for name in ("torchdistill", "torchdistill_cache_output"):
        assert variants[name]["median_epoch_s"] is None and "does not import" in variants[name]["skipped"]


def _missing_python(cmd, **kwargs):
    import subprocess

    return subprocess.CompletedProcess(cmd, 1, "", "FileNotFoundError: /nonexistent/python\n")


def test_a_busy_run_never_replaces_a_measured_table(tmp_path):
    from monai_kd.reporting import busy_refusal, write_timing_section

    md = tmp_path / "t.md"
    md.write_text("intro | variant |\n<!-- s:begin -->\nold\n<!-- s:end -->\n")
    assert write_timing_section(md, "busy note", "s", busy=True, measured_marker="| variant |")  # only intro had it
    assert write_timing_section(md, "| variant | 1.0 |", "s", busy=False, measured_marker="| variant |")
    assert not write_timing_section(md, "busy note", "s", busy=True, measured_marker="| variant |")
    assert "| variant | 1.0 |" in md.read_text() and "busy note" not in md.read_text()
    assert busy_refusal(0.5, 1.0, False) is None and busy_refusal(5.0, 1.0, True) is None
    assert "refused" in busy_refusal(5.0, 1.0, False)


def test_a_run_is_busy_only_from_load_beyond_its_own_threads():
    from monai_kd.reporting import is_busy

    # an idle machine running a one-thread benchmark: the 1-minute load climbs to ~1.1 from the benchmark itself
    assert not is_busy(0.05, [1.1, 1.3], max_load=1.0, own_threads=1)
    # another job on the second core lifts it to ~2: busy (more than half the allowance of other work on top)
    assert is_busy(0.05, [1.1, 2.0], max_load=1.0, own_threads=1)
    # before the run only other work counts
    assert is_busy(1.2, [1.1], max_load=1.0, own_threads=1)
    # a two-thread run may leave ~2.2 by itself
    assert not is_busy(0.3, [2.2], max_load=1.0, own_threads=2) and is_busy(0.3, [2.6], max_load=1.0, own_threads=2)


TORCHDISTILL_PYTHON = REPO / ".venv-torchdistill" / "bin" / "python"


@pytest.mark.slow
@pytest.mark.skipif(not TORCHDISTILL_PYTHON.is_file(), reason="no .venv-torchdistill (bash scripts/bench_venv.sh)")
@pytest.mark.parametrize("variant, version", [("torchdistill", "1.1.5"), ("torchdistill_cache_output", "1.1.4")])
def test_torchdistill_arm_runs_the_same_job_in_its_environment(variant, version):
    """Each torchdistill arm runs in .venv-torchdistill: its first batch has the plain loop's loss (same weights,
    batches and loss), and ``cache_output`` is honoured by 1.1.4 (one teacher-output file per sample) and ignored
    by 1.1.5 (no file)."""
    bench = load_script("bench_kd_speed")
    args = bench.argparse.Namespace(epochs=2, seed=0, threads=1, limit=64)
    times, extra = bench.run_torchdistill(str(TORCHDISTILL_PYTHON), variant, args, "cls")
    assert "skipped" not in extra, extra
    assert len(times) == 2 and extra["environment"]["torchdistill"] == version
    assert extra["first_loss_rel_diff"] < 1e-5, extra["first_loss"]
    assert extra["cache_files"] == (64 if variant == "torchdistill_cache_output" else 0)


def test_targets_are_the_excess_over_the_reference_epoch():
    bench = load_script("bench_kd_speed")
    job = {"variants": {"student_alone": {"median_epoch_s": 5.0}, "pytorch_kd": {"median_epoch_s": 10.0},
                        "monai_kd_live": {"median_epoch_s": 10.5}, "monai_kd_cached": {"median_epoch_s": 5.6}}}
    lines = bench.targets(job)
    assert lines[0] == "- `monai_kd_live` vs `pytorch_kd`: +5.0% per epoch (target at most +5%: met)."
    assert lines[1] == "- `monai_kd_cached` vs `student_alone`: +12.0% per epoch (target at most +10%: not met)."
    job["variants"]["monai_kd_cached"]["median_epoch_s"] = None  # a skipped variant gives no line
    assert len(bench.targets(job)) == 1
