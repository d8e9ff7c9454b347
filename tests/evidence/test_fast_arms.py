"""``--student fast`` of the weckd and emtkd evidence scripts: the fast-student overlay reaches every student run and
evaluation (never the teachers' stage), only the documented methods run, the main evidence's choices and teachers are
reused, records land in ``results_fast.json`` with the main records' fields plus ``student``, and the README's
``fast`` section puts each model's latency beside its accuracy.

Training and evaluation are replaced by fakes that write the files the scripts read and return hand-set scores, so
the means in the tables are hand-computable.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO, load_script

from monai_kd.reporting import accuracy_latency_table, busy_latency_note, latency_ms, markers

BENCH = {"busy": False, "records": [
    {"bundle": b, "model": m, "runtime": "eager", "threads": 1, "batch": batch, "median_s": s}
    for b, m, batch, s in [
        ("weckd", "student_fast", 64, 0.00256), ("weckd", "student_fast", 1, 0.00062),
        ("weckd", "student", 64, 0.00863), ("weckd", "student", 1, 0.00058),
        ("emtkd_pneumonia", "student_fast", 64, 0.0015), ("emtkd_pneumonia", "student_fast", 1, 0.00004),
        ("emtkd_pneumonia", "teacher_a", 64, 0.1893), ("emtkd_pneumonia", "teacher_a", 1, 0.0164),
        # another entry's numbers must not leak into a table: the 64 px BraTS form of the same bundle
        ("emtkd_classification", "student", 64, 0.999), ("emtkd_classification", "student", 1, 0.999),
    ]]}


def _seed(path: Path) -> int:
    return int(re.search(r"seed(\d+)", str(path)).group(1))


def _readme(tmp_path: Path) -> Path:
    readme = tmp_path / "README.md"
    begin, end = markers("fast")
    readme.write_text(f"# bundle\n\nprose\n\n{begin}\nold\n{end}\n\nmore prose\n")
    return readme


def _section(readme: Path) -> str:
    begin, end = markers("fast")
    return readme.read_text().split(begin)[1].split(end)[0]


def _rows(text: str) -> dict[str, str]:
    return {" | ".join(c.strip() for c in line.strip("|").split("|")[:3]): line for line in text.splitlines()
            if line.startswith("| ")}


# ------------------------------------------------------------------------------------------------ shared cells


def test_latency_cell_and_table_read_one_entry_and_flag_a_busy_benchmark():
    assert latency_ms(BENCH, "weckd", "student_fast") == "2.56"
    assert latency_ms(BENCH, "weckd", "student_fast", batch=1) == "0.62"
    assert latency_ms(BENCH, "weckd", "student_fast", runtime="onnxruntime") == "not measured"
    assert latency_ms(BENCH, "emtkd_pneumonia", "student") == "not measured"  # not emtkd_classification's
    assert latency_ms({**BENCH, "busy": True}, "weckd", "student_fast") == "busy run only"
    assert latency_ms(None, "weckd", "student_fast") == "not measured"
    assert busy_latency_note(BENCH, "x") == [] and "`x`" in busy_latency_note({**BENCH, "busy": True}, "x")[0]
    runs = [{"accuracy": a, "auc": 0.9} for a in (0.80, 0.82)]
    rows = [(["fast"], runs, "student_fast"), (["other"], runs, None)]
    table = accuracy_latency_table(["model"], rows, BENCH, "weckd")
    assert table[0] == ("| model | seeds | test accuracy | test AUC | latency b64, 1 thread (ms) | "
                        "latency b1, 1 thread (ms) |")
    assert table[1] == "|---|---:|---:|---:|---:|---:|"
    assert table[2] == "| fast | 2 | 0.810 ± 0.014 | 0.900 ± 0.000 | 2.56 | 0.62 |"
    assert table[3] == "| other | 2 | 0.810 ± 0.014 | 0.900 ± 0.000 |  |  |"


# ------------------------------------------------------------------------------------------------ weckd


def test_weckd_fast_arm(tmp_path, monkeypatch):
    ev = load_script("weckd_evidence")
    trained, evaluated = [], []

    def fake_run_bundle(stage, config_file, bundle_root, **override):
        trained.append((stage, list(config_file), Path(bundle_root), override))
        models = Path(bundle_root) / "models"
        models.mkdir(parents=True, exist_ok=True)
        name = override.get("student_alone#trainer#name", "student_alone") if stage == "run_student_alone" else "link"
        count = 3 if stage == "run_student" else 1
        for k in range(1, count + 1):
            (models / f"{name}_{k}.pt").write_text("weights")
        (models / f"{name}.json").write_text(json.dumps({"links": [{"link": k, "train_items": 27}
                                                                   for k in range(1, count + 1)]}))

    def fake_evaluate(configs, root, filename, run_id, eval_checkpoint, eval_split, **kw):
        evaluated.append(list(configs))
        ckpt, seed = Path(eval_checkpoint), _seed(eval_checkpoint)
        chain = ckpt.stem.startswith("link")
        score = (0.80 if chain else 0.70) + 0.01 * seed * (1 if chain else 2)
        return {ckpt.stem: {"test_acc": score, "test_auc": score + 0.1, "test_nll": 0.3, "test_ece": 0.05}}

    monkeypatch.setattr(ev, "run_bundle", fake_run_bundle)
    monkeypatch.setattr(ev, "evaluate_bundle", fake_evaluate)
    main = json.loads((ev.BUNDLE / "docs" / "results.json").read_text())
    main_file, bench_file, readme = tmp_path / "main.json", tmp_path / "bench.json", _readme(tmp_path)
    main_file.write_text(json.dumps(main))
    bench_file.write_text(json.dumps(BENCH))
    args = ["--student", "fast", "--datasets", "breastmnist", "--fractions", "0.05", "--work", str(tmp_path / "w"),
            "--output", str(tmp_path / "fast.json"), "--main-results", str(main_file), "--readme", str(readme),
            "--bench", str(bench_file)]
    with pytest.raises(SystemExit):  # >= 3 seeds, as in the main protocol
        ev.main([*args, "--seeds", "0", "1"])
    ev.main([*args, "--seeds", "0", "1", "2"])

    # the overlay reaches every run and every evaluation
    assert trained and all(c == [ev.CONFIG, ev.FAST_OVERLAY] for _, c, _, _ in trained)
    assert evaluated and all(c == [ev.CONFIG, ev.EVALUATE, ev.FAST_OVERLAY] for c in evaluated)
    # the documented methods only: one chain (no grid: the main evidence's choice) and the same-data backbone per seed
    chosen = main["selection"]["breastmnist/0.05"]["chosen"]
    assert sorted((stage, root.name) for stage, _, root, _ in trained) == sorted(
        [("run_student", f"chain_tau{chosen['temperature']:g}_w{chosen['kd_weight']:g}")] * 3
        + [("run_student_alone", "student_alone")] * 3)
    assert all(o["temperature"] == chosen["temperature"] and o["kd_weight"] == chosen["kd_weight"]
               for stage, _, _, o in trained if stage == "run_student")
    fast = json.loads((tmp_path / "fast.json").read_text())
    assert {(r["method"], r["link"]) for r in fast["runs"]} == {("chain", 1), ("chain", 2), ("chain", 3),
                                                                 ("single_backbone_same_data", 3)}
    assert len(fast["runs"]) == 12 and all(r["student"] == "fast" for r in fast["runs"])
    like = {(r["method"], r["link"]): list(r) for r in main["runs"] if r["dataset"] == "breastmnist"}
    for r in fast["runs"]:  # the main records' fields, in their order, plus ``student``
        assert list(r) == [*like[(r["method"], r["link"])], "student"]
    assert fast["selection"]["breastmnist/0.05"]["chosen"] == chosen and "--student fast" in fast["protocol"]

    # the README section: accuracy beside latency, the default student's rows from the main results
    text = _section(readme)
    assert "prose" in readme.read_text().split(markers("fast")[0])[0] and "more prose" in readme.read_text()
    rows = _rows(text)
    # chain link 3 accuracy 0.80 + 0.01 * seed: 0.810 ± 0.010; backbone 0.70 + 0.02 * seed: 0.720 ± 0.020
    assert rows["5% | chain (link 3) | fast"].endswith("| 3 | 0.810 ± 0.010 | 0.910 ± 0.010 | 2.56 | 0.62 |")
    assert rows["5% | single_backbone_same_data | fast"].endswith(
        "| 3 | 0.720 ± 0.020 | 0.820 ± 0.020 | 2.56 | 0.62 |")
    assert rows["5% | chain (link 3) | default"].endswith("| 8.63 | 0.58 |")
    assert "chain (link 3) minus single_backbone_same_data: accuracy +0.090 ± 0.010, 95% CI" in text
    assert "Not evidence" not in text
    assert "Not evidence" in ev.fast_markdown({**fast, "overrides": {"max_epochs": 1}}, main, BENCH)  # a --quick run


# ------------------------------------------------------------------------------------------------ emtkd


def _emtkd_fakes(monkeypatch):
    """``emtkd_evidence`` with training and evaluation replaced; returns it and the lists of calls they log."""
    ev = load_script("emtkd_evidence")
    trained, evaluated = [], []

    def fake_run_bundle(run_id, config_file, bundle_root, **override):
        trained.append((run_id, [Path(c).name for c in config_file], Path(bundle_root), override))
        models = Path(bundle_root) / "models"
        models.mkdir(parents=True, exist_ok=True)
        names = {"run_teachers": ["teacher_a", "teacher_b"], "run_student_alone": ["student_alone"]}
        for name in names.get(run_id, ["model", "teacher_weighting"]):
            (models / f"{name}.pt").write_text("weights")

    def fake_evaluate(configs, root, filename, run_id, eval_checkpoint, eval_network, eval_split, **kw):
        evaluated.append([Path(c).name for c in configs])
        ckpt, seed = Path(eval_checkpoint), kw["seed"]
        score = (0.85 if ckpt.stem == "model" else 0.80) + 0.01 * seed
        return {ckpt.stem: {"test_acc": score, "test_auc": score + 0.1, "test_nll": 0.3, "parameters": 13330}}

    monkeypatch.setattr(ev, "run_bundle", fake_run_bundle)
    monkeypatch.setattr(ev, "evaluate_bundle", fake_evaluate)
    monkeypatch.setattr(ev.Evidence, "teacher_weights", lambda self, *a: np.full((4, 2), 0.5))
    return ev, trained, evaluated


def test_emtkd_main_protocol_still_runs_every_method_without_overlay(tmp_path, monkeypatch):
    ev, trained, evaluated = _emtkd_fakes(monkeypatch)
    evidence = ev.Evidence(tmp_path / "w", tmp_path / "results.json", {})
    evidence.results["selection"]["pneumonia"] = {"chosen": "gate"}
    evidence.run_seed("pneumonia", 0)
    spec = ["train_classification.json", "train_pneumonia.json"]
    assert all(c == spec for _, c, _, _ in trained) and all(c == [*spec, "evaluate_classification.json"] for c in evaluated)
    assert sorted(root.name for run_id, _, root, _ in trained if run_id == "run_teachers") == ["teachers_da", "teachers_src"]
    runs = evidence.results["runs"]
    assert {r["method"] for r in runs} == set(ev.METHODS) and len(runs) == 4 + 8 and "student" not in runs[0]
    by = {r["method"]: r for r in runs if r["method"] != "teacher_direct"}
    assert [m for m, r in by.items() if r.get("domain_adapted_teachers")] == ["emtkd", "emtkd_no_weighting", "emtkd_no_ssl"]


def test_emtkd_fast_arm(tmp_path, monkeypatch):
    ev, trained, evaluated = _emtkd_fakes(monkeypatch)
    main = json.loads((ev.BUNDLE / "docs" / "results.json").read_text())
    main["selection"]["pneumonia"]["chosen"] = "confidence"  # not the config's default: must come from here
    main_file, bench_file, readme = tmp_path / "main.json", tmp_path / "bench.json", _readme(tmp_path)
    main_file.write_text(json.dumps(main))
    bench_file.write_text(json.dumps(BENCH))
    teacher_work = tmp_path / "main_work"
    reused = teacher_work / "pneumonia" / "seed0" / "teachers_da"
    (reused / "models").mkdir(parents=True)
    (reused / "done.json").write_text("{}")  # seed 0's DANN teachers finished in the main run
    args = ["--student", "fast", "--work", str(tmp_path / "w"), "--output", str(tmp_path / "fast.json"),
            "--main-results", str(main_file), "--readme", str(readme), "--bench", str(bench_file),
            "--teacher-work", str(teacher_work)]
    with pytest.raises(SystemExit):
        ev.main([*args, "--seeds", "0", "1"])
    with pytest.raises(SystemExit):  # pneumonia only
        ev.main([*args, "--seeds", "0", "1", "2", "--benchmarks", "brats"])
    ev.main([*args, "--seeds", "0", "1", "2"])

    spec = ["train_classification.json", "train_pneumonia.json"]
    overlay = "student_fast_classification.json"
    # teachers: seed 0 reused from the main work folder, seeds 1 and 2 trained by the same stage without the overlay;
    # the source-only teachers are not needed by student_alone / emtkd and never trained
    teachers = [(c, root) for run_id, c, root, _ in trained if run_id == "run_teachers"]
    assert teachers == [(spec, tmp_path / "w" / "pneumonia" / f"seed{s}" / "teachers_da") for s in (1, 2)]
    students = [t for t in trained if t[0] != "run_teachers"]
    assert students and all(c == [*spec, overlay] for _, c, _, _ in students)
    assert evaluated and all(c == [*spec, "evaluate_classification.json", overlay] for c in evaluated)
    kd = [(root, o) for run_id, _, root, o in students if run_id == "run_student"]
    assert len(kd) == 3 and all(o["weighting"] == "confidence" and o["fixmatch_weight"] == 1.0 for _, o in kd)
    assert kd[0][1]["teacher_a#ckpt"] == str(reused / "models" / "teacher_a.pt")
    assert sorted(run_id for run_id, *_ in students) == ["run_student"] * 3 + ["run_student_alone"] * 3

    fast = json.loads((tmp_path / "fast.json").read_text())
    assert sorted((r["method"], r["seed"]) for r in fast["runs"]) == sorted(
        (m, s) for m in ("student_alone", "emtkd") for s in (0, 1, 2))
    like = {r["method"]: list(r) for r in main["runs"] if r["benchmark"] == "pneumonia"}
    for r in fast["runs"]:  # the main records' fields, in their order, plus ``student``
        assert r["student"] == "fast" and list(r) == [*like[r["method"]], "student"]
    assert fast["selection"]["pneumonia"]["chosen"] == "confidence"

    text = _section(readme)
    rows = {line.split(" | ")[0][2:]: line for line in text.splitlines() if line.startswith("| ")}
    # fast emtkd accuracy 0.85 + 0.01 * seed, fast student alone 0.80 + 0.01 * seed
    assert rows["fast emtkd"] == "| fast emtkd | 3 | 0.860 ± 0.010 | 0.960 ± 0.010 | 1.50 | 0.04 |"
    assert rows["fast student_alone"] == "| fast student_alone | 3 | 0.810 ± 0.010 | 0.910 ± 0.010 | 1.50 | 0.04 |"
    assert rows["teacher_direct: teacher_a (DANN)"].endswith("| 3 | 0.872 ± 0.015 | 0.937 ± 0.007 | 189.30 | 16.40 |")
    assert rows["emtkd"].endswith("| not measured | not measured |")  # the 64 px entry's numbers are not borrowed
    assert "test-accuracy difference fast emtkd minus fast student_alone: +0.050 ± 0.000" in text
    assert "fast emtkd minus teacher_direct: teacher_a (DANN)" in text and "**confidence**" in text
    assert "Not evidence" not in text
