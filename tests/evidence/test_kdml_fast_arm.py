"""``--student fast`` of the kdml evidence script (``bundles/kdml_cls``): ``student_fast.json`` reaches the training and
evaluation config lists of every student run and never the offline teacher's stage, the main run's finished teachers
are reused (read only), only ``student_alone``, ``kd_off`` V1 and ``kd_ml`` V3 run, with the main evidence's feature
weights (none chosen: refused), records land in ``results_fast.json`` with the main records' fields plus ``student``,
processes share the runs by claims, and the README's ``fast`` section puts latency beside accuracy.

Training and evaluation are replaced by fakes that write the files the script reads and return hand-set scores, so
every mean in the table is hand-computable.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import load_script

from monai_kd.reporting import markers

BENCH = {"busy": False, "records": [
    {"bundle": b, "model": m, "runtime": "eager", "threads": 1, "batch": batch, "median_s": s}
    for b, m, batch, s in [
        ("kdml_cls", "student_fast", 64, 0.00349), ("kdml_cls", "student_fast", 1, 0.00059),
        ("kdml_cls", "student", 64, 0.00855), ("kdml_cls", "student", 1, 0.00101),
        ("kdml_cls", "teacher", 64, 0.04526), ("kdml_cls", "teacher", 1, 0.00716),
        ("kd", "student_fast", 64, 0.999), ("kd", "student_fast", 1, 0.999),  # another bundle: must not leak in
    ]]}
CHOSEN = {"kd_feature_weight": 10.0, "ml_feature_weight": 0.1}  # not train.json's 1.0: must come from the main file
# test accuracy of S1 per run folder (fast arm) at seed 0; + 0.01 per seed, S2 0.01 lower, the ensemble 0.01 higher
BASE = {"student_alone": 0.80, "kd_off_V1": 0.82, "kd_ml_V3": 0.85}


def _members(acc: float) -> dict:
    return {m: {"accuracy": acc + d, "auc": acc + d + 0.1, "fidelity": 0.9} for m, d in
            (("s1", 0.0), ("s2", -0.01), ("ensemble", 0.01))}


def _main_results(chosen: dict | None) -> dict:
    """The main evidence's records: teacher 0.89, default students alone 0.86, KD (off) V1 0.87, KD + ML V3 0.88."""
    runs = [{"task": "classification", "regime": "teacher", "variant": None, "seed": s,
             "metrics": {m: {"accuracy": 0.89, "auc": 0.97, "fidelity": 1.0} for m in ("s1", "s2", "ensemble")}}
            for s in (0, 1, 2)]
    runs += [{"task": "classification", "regime": r, "variant": v, "seed": s, "metrics": _members(acc + 0.01 * s)}
             for r, v, acc in (("student_alone", None, 0.86), ("kd_off", "V1", 0.87), ("kd_ml", "V3", 0.88))
             for s in (0, 1, 2)]
    selection = {} if chosen is None else {"rule": "lowest mean validation nll", "grid": [], "chosen": chosen}
    return {"runs": runs, "protocol": "main", "selection": selection, "details": {}}


def _fakes(ev, monkeypatch):
    """Replace training and evaluation; return the lists of their calls."""
    trained, evaluated = [], []

    def fake_run_bundle(run_id, config_file, bundle_root, **override):
        trained.append((run_id, config_file, Path(bundle_root), override))
        models = Path(bundle_root) / "models"
        models.mkdir(parents=True, exist_ok=True)
        for name in (["teacher.pt"] if run_id == "run_teacher" else ["model.pt", "model_s2.pt"]):
            (models / name).write_text("weights")

    def fake_evaluate(config_file, root, filename, eval_split, **kw):
        evaluated.append((list(config_file), Path(root), eval_split, kw))
        seed = int(re.search(r"seed(\d+)", str(root)).group(1))
        members = _members(BASE[Path(root).name] + 0.01 * seed)
        return {**{m: {**v, "nll": 0.3} for m, v in members.items()}, "teacher": {"accuracy": 0.89, "auc": 0.97}}

    monkeypatch.setattr(ev, "run_bundle", fake_run_bundle)
    monkeypatch.setattr(ev, "evaluate_bundle", fake_evaluate)
    return trained, evaluated


def _files(tmp_path: Path, chosen: dict | None) -> dict[str, Path]:
    paths = {k: tmp_path / n for k, n in (("main", "main.json"), ("bench", "bench.json"), ("readme", "README.md"),
                                          ("output", "fast.json"), ("work", "w"), ("teacher_work", "main_work"))}
    paths["main"].write_text(json.dumps(_main_results(chosen)))
    paths["bench"].write_text(json.dumps(BENCH))
    begin, end = markers("fast")
    paths["readme"].write_text(f"# kdml_cls\n\nprose\n\n{begin}\nold\n{end}\n\nmore prose\n")
    return paths


def _args(paths: dict[str, Path]) -> list[str]:
    return ["--student", "fast", "--work", str(paths["work"]), "--teacher-work", str(paths["teacher_work"]),
            "--main-results", str(paths["main"]), "--output", str(paths["output"]), "--readme", str(paths["readme"]),
            "--bench", str(paths["bench"])]


def _section(readme: Path) -> str:
    begin, end = markers("fast")
    return readme.read_text().split(begin)[1].split(end)[0]


def test_kdml_fast_arm(tmp_path, monkeypatch):
    ev = load_script("kdml_evidence")
    trained, evaluated = _fakes(ev, monkeypatch)
    paths = _files(tmp_path, CHOSEN)
    main_teachers = paths["teacher_work"] / "classification"
    finished = main_teachers / "seed0" / "teacher"
    (finished / "models").mkdir(parents=True)
    (finished / "models" / "teacher.pt").write_text("main teacher")
    (finished / ev.MARKER).write_text("{}")  # seed 0's teacher finished in the main run
    unfinished = main_teachers / "seed1" / "teacher"
    (unfinished / "models").mkdir(parents=True)
    (unfinished / "models" / "teacher.pt").write_text("half-trained")  # no done.json: still training (or crashed)
    main_before = sorted(p.relative_to(tmp_path) for p in paths["teacher_work"].rglob("*"))

    with pytest.raises(SystemExit):  # >= 3 seeds, as in the main protocol
        ev.main([*_args(paths), "--seeds", "0", "1"])
    with pytest.raises(SystemExit):  # classification only
        ev.main([*_args(paths), "--seeds", "0", "1", "2", "--tasks", "segmentation"])
    assert not trained
    ev.main([*_args(paths), "--seeds", "0", "1", "2"])

    configs = ev.TASKS["classification"]["bundle"] / "configs"
    train, evaluate, overlay = (str(configs / n) for n in ("train.json", "evaluate.json", "student_fast.json"))
    work = paths["work"] / "classification"
    # the teacher: seed 0 reused from the main run (its folder only read: nothing written there, not even a claim);
    # seeds 1 and 2 trained here through the same stage, on train.json alone, and never evaluated
    assert sorted(p.relative_to(tmp_path) for p in paths["teacher_work"].rglob("*")) == main_before
    teachers = [(c, root) for run_id, c, root, _ in trained if run_id == "run_teacher"]
    assert teachers == [(train, work / f"seed{s}" / "teacher") for s in (1, 2)]
    assert not any(root.name == "teacher" for _, root, _, _ in evaluated)
    # the students: the overlay over train.json (training) and over train.json + evaluate.json (val and test)
    students = [t for t in trained if t[0] == "run_students"]
    assert students and all(c == [train, overlay] for _, c, _, _ in students)
    assert len(evaluated) == 2 * 9 and all(c == [train, evaluate, overlay] for c, _, _, _ in evaluated)
    # the method subset, with the main evidence's weights and the teacher of each seed
    assert sorted((root.parent.name, root.name) for _, _, root, _ in students) == sorted(
        (f"seed{s}", run) for s in (0, 1, 2) for run in BASE)
    for _, _, root, o in students:
        wanted = {"student_alone": ("ml", "V1"), "kd_off_V1": ("kd_off", "V1"), "kd_ml_V3": ("kd_ml", "V3")}[root.name]
        assert (o["regime"], o["variant"]) == wanted
        weights = {"ml_weight": 0.0, "ml_feature_weight": 0.0} if root.name == "student_alone" else CHOSEN
        assert {k: o[k] for k in weights} == weights
        teacher = (finished if root.parent.name == "seed0" else work / root.parent.name / "teacher")
        assert o["teacher_ckpt"] == str(teacher / "models" / "teacher.pt")
    # records: the main records' fields, in their order, plus ``student``
    fast = json.loads(paths["output"].read_text())
    assert sorted((r["regime"], r["variant"] or "", r["seed"]) for r in fast["runs"]) == sorted(
        (r, v, s) for r, v in (("student_alone", ""), ("kd_off", "V1"), ("kd_ml", "V3")) for s in (0, 1, 2))
    assert all(list(r) == ["task", "regime", "variant", "seed", "metrics", "student"] and r["student"] == "fast"
               for r in fast["runs"])
    assert fast["selection"]["chosen"] == CHOSEN and "main evidence" in fast["selection"]["source"]
    assert "--student fast" in fast["protocol"] and "overrides" not in fast

    # the README section: latency beside accuracy, only its own markers rewritten
    readme_text = paths["readme"].read_text()
    assert readme_text.startswith("# kdml_cls\n\nprose\n") and readme_text.endswith("more prose\n")
    text = _section(paths["readme"])
    rows = {" | ".join(c.strip() for c in line.strip("|").split("|")[:2]): line for line in text.splitlines()
            if line.startswith("| ")}
    # fast KD + ML V3, S1: 0.85 + 0.01 * seed -> 0.860 ± 0.010; AUC 0.960 ± 0.010; fidelity 0.9
    assert rows["KD + ML V3 | fast S1"] == ("| KD + ML V3 | fast S1 | 3 | 0.860 ± 0.010 | 0.960 ± 0.010 "
                                            "| 0.900 ± 0.000 | 3.49 | 0.59 |")
    assert rows["KD + ML V3 | fast ensemble"] == ("| KD + ML V3 | fast ensemble | 3 | 0.870 ± 0.010 | 0.970 ± 0.010 "
                                                  "| 0.900 ± 0.000 |  |  |")  # two students: no one-model latency
    assert rows["students alone | fast S2"].endswith("| 3 | 0.800 ± 0.010 | 0.900 ± 0.010 | 0.900 ± 0.000 | 3.49 "
                                                     "| 0.59 |")
    assert rows["KD (off) V1 | default S1"].endswith("| 3 | 0.880 ± 0.010 | 0.980 ± 0.010 | 0.900 ± 0.000 | 8.55 "
                                                     "| 1.01 |")  # default student: its own latency
    assert rows["teacher (ResNet-18) | -"].endswith("| 3 | 0.890 ± 0.000 | 0.970 ± 0.000 | 1.000 ± 0.000 | 45.26 "
                                                    "| 7.16 |")
    assert len(rows) == 1 + 3 * 2 * 3 + 1  # the header, the teacher, 3 runs x 2 students x (S1, S2, ensemble)
    # paired by seed, ensembles: fast V3 (0.86 + 0.01 s) minus fast students alone (0.81 + 0.01 s) = +0.050 on every
    # seed; minus the default KD + ML V3 (0.89 + 0.01 s) = -0.030
    assert "- test accuracy: fast KD + ML V3 minus fast students alone: +0.050 ± 0.000, 95% CI [0.050, 0.050] " \
           "(higher on 3/3 seeds)" in text
    assert "- test accuracy: fast KD + ML V3 minus default KD + ML V3: -0.030 ± 0.000" in text
    assert "fast KD (off) V1 minus fast students alone: +0.020" in text
    assert "kd_feature_weight = 10, ml_feature_weight = 0.1 (main.json (main evidence)" in text
    assert "Not evidence" not in text and "busy" not in text

    # resumable: a second run trains and evaluates nothing, and re-renders the same section
    trained.clear()
    evaluated.clear()
    ev.main([*_args(paths), "--seeds", "0", "1", "2"])
    assert trained == [] and evaluated == [] and _section(paths["readme"]) == text


def test_kdml_fast_arm_refuses_without_the_main_selection(tmp_path, monkeypatch, capsys):
    ev = load_script("kdml_evidence")
    trained, evaluated = _fakes(ev, monkeypatch)
    paths = _files(tmp_path, chosen=None)  # the main evidence has not finished its grid
    with pytest.raises(SystemExit):
        ev.main([*_args(paths), "--seeds", "0", "1", "2"])
    err = capsys.readouterr().err
    assert "no feature weights chosen on validation yet" in err and "never runs the grid itself" in err
    assert trained == [] and evaluated == [] and not paths["output"].exists()
    evidence = ev.FastEvidence("classification", paths["output"], paths["work"], paths["main"], paths["teacher_work"])
    with pytest.raises(ev.NoSelection):
        evidence.combinations(0, first_seed=0)
    refusal = "no feature weights chosen by the main evidence yet: --student fast refuses to run"
    assert evidence.plan([0, 1, 2])[3] == refusal
    assert len(evidence.plan([0, 1, 2])) == 3 + 1 + 6  # students alone x 3, the refusal, (kd_off V1, kd_ml V3) x 3
    # --report-only renders without a choice and without training
    ev.main([*_args(paths), "--report-only"])
    assert _section(paths["readme"]).strip() == "No fast-student records yet (the run is resumable)."
    assert trained == []
    with pytest.raises(ValueError):
        ev.FastEvidence("segmentation", paths["output"], paths["work"], paths["main"], paths["teacher_work"])


def test_kdml_fast_arm_processes_share_the_runs_by_claims(tmp_path, monkeypatch):
    """A fast run another live process holds is left to it, like the main protocol's runs; a quick run is marked."""
    ev = load_script("kdml_evidence")
    trained, _ = _fakes(ev, monkeypatch)
    paths = _files(tmp_path, CHOSEN)
    seed0 = paths["work"] / "classification" / "seed0"
    seed0.mkdir(parents=True)
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])  # a live "other process"
    try:
        (seed0 / "kd_ml_V3.claim").write_text(str(other.pid))
        evidence = ev.FastEvidence("classification", paths["output"], paths["work"], paths["main"],
                                   paths["teacher_work"], quick=True)
        evidence.run_seed(0, first_seed=0)
    finally:
        other.kill()
        other.wait()
    assert [(run_id, root.name) for run_id, _, root, _ in trained] == [
        ("run_teacher", "teacher"), ("run_students", "student_alone"), ("run_students", "kd_off_V1")]
    assert all(o["max_epochs"] == 1 for _, _, _, o in trained)  # --quick overrides
    assert evidence.recorded("kd_off", "V1", 0) and not evidence.recorded("kd_ml", "V3", 0)
    assert [c.name for c in paths["work"].rglob("*.claim")] == ["kd_ml_V3.claim"]  # its own claims released
    assert "Not evidence" in ev.fast_markdown(evidence.results, _main_results(CHOSEN), BENCH)
