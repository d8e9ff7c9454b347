"""fast_evidence's report: accuracy beside the benchmark's latency, paired gains, busy latency flagged."""

from __future__ import annotations

from conftest import load_script


def _results(fe) -> dict:
    runs = []
    for seed, shift in ((0, 0.0), (1, 0.02)):
        for i, model in enumerate(fe.MODELS):
            rec = {"dataset": "breastmnist", "model": model, "seed": seed, "accuracy": 0.8, "auc": 0.80 + shift + 0.01 * i,
                   "nll": 0.4, "parameters": 10, "macs": 100}
            if model.endswith("_int8"):
                rec["agreement_with_fp32"] = 1.0 - shift
            runs.append(rec)
    runs.append({**runs[0], "seed": 2})  # seed 2 has only the teacher: not a complete seed
    return {"runs": runs, "selection": {"breastmnist": {"chosen": {"temperature": 2.0, "kd_weight": 0.5}, "source": "x"}}}


def test_markdown_pairs_by_complete_seed_and_reads_latency():
    fe = load_script("fast_evidence")
    bench = {"busy": True, "records": [
        {"bundle": "kd", "model": "student_fast", "runtime": "onnxruntime_int8", "threads": 1, "batch": 64, "median_s": 0.00125},
        {"bundle": "kd", "model": "teacher", "runtime": "eager", "threads": 1, "batch": 64, "median_s": 0.045},
    ]}
    busy = fe.markdown(_results(fe), bench)
    assert "not evidence" in busy and " ms" not in busy and "(busy)" not in busy and "busy run only" in busy
    text = fe.markdown(_results(fe), {**bench, "busy": False})
    assert "2 complete seeds: [0, 1]" in text and "not evidence" not in text
    rows = {line.split(" | ")[0][2:]: line for line in text.splitlines() if line.startswith("| ")}
    # fast_kd is model index 2: AUC 0.82 on seed 0 and 0.84 on seed 1 -> 0.830 ± 0.014
    assert "0.830 ± 0.014" in rows["fast_kd"]
    assert "| 45.00 |" in rows["teacher"] and "| 1.25 |" in rows["fast_kd_int8"]
    assert rows["fast_kd_int8"].count("0.990 ± 0.014") == 1  # agreement of the int8 model with its fp32 model
    assert "not measured" in rows["fast_alone"]  # eager student_fast not in the benchmark
    # paired: fast_kd (index 2) - fast_alone (index 1) = 0.01 on both seeds
    assert "KD over alone 0.010 ± 0.000 (fast_kd higher on 2/2 seeds)" in text
    assert fe.markdown({"runs": [], "selection": {}}, None).startswith("No dataset")
