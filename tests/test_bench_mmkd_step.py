"""The MMKD step benchmark: times what the evidence trains (same overrides), refuses a busy machine, flags a forced
run and never shows busy numbers as results."""

from __future__ import annotations

import json

from conftest import load_script


def test_each_method_times_the_bundle_step_the_evidence_trains(tmp_path, data_dir):
    bench = load_script("bench_mmkd_step")
    for method, quiz, features in [("uniform", False, False), ("mmkd_logits", True, False),
                                   ("mmkd_logits_features", True, True)]:
        trainer = bench.build_trainer("breastmnist", "small", method, data_dir, tmp_path)
        times = bench.time_iterations(trainer, 2)
        assert len(times) == 2 and all(t > 0 for t in times)  # the iterations asked for, each timed
        if method == "uniform":  # a later run resumes and crosses the epoch end (9 batches of 64 per epoch)
            assert len(bench.time_iterations(trainer, 10)) == 10 and trainer.state.iteration == 12
        out = trainer.state.output[0]
        assert ("loss_quiz" in out) == quiz and ("loss_feature" in out) == features, method
        assert sum(p.numel() for p in trainer.network.parameters()) == 19_622  # the small student
    fast = bench.build_trainer("breastmnist", "fast", "uniform", data_dir, tmp_path)
    assert type(fast.network).__name__ == "FastStudent"
    assert len(fast.data_loader.dataset) == 546  # BreastMNIST's whole training split (uniform holds no quiz out)


def test_refuses_a_busy_machine_and_a_forced_run_is_flagged(tmp_path, monkeypatch, data_dir):
    bench = load_script("bench_mmkd_step")
    out, md, readme = tmp_path / "step.json", tmp_path / "step.md", tmp_path / "README.md"
    for f in (md, readme):
        f.write_text("# t\n\n<!-- mmkd-step:begin -->\nMeasured on an idle machine. | uniform | 1.0 |\n"
                     "<!-- mmkd-step:end -->\n")
    monkeypatch.setattr(bench, "load_average", lambda: 5.0)
    common = ["--output", str(out), "--markdown", str(md), "--readme", str(readme)]
    assert bench.main(common) == 3 and not out.exists()
    assert bench.main([*common, "--allow-busy", "--datasets", "breastmnist", "--students", "small", "--methods",
                       "uniform", "mmkd_logits", "--rounds", "2", "--iterations", "2"]) == 0
    result = json.loads(out.read_text())
    assert result["busy"] is True
    entry = result["entries"]["breastmnist/small"]
    assert entry["methods"]["uniform"]["x_uniform"] == 1.0
    assert entry["methods"]["mmkd_logits"]["iterations"] == 2  # the warm-up round is not counted
    for f in (md, readme):  # the measured tables stay; the busy seconds are only in the JSON
        assert "| uniform | 1.0 |" in f.read_text()
    assert "Busy run: not a result" in bench.table(result)
