"""``scripts/mmkd_evidence.py`` shared by several processes (one per CPU core), with its training and evaluation
replaced by fakes: which runs a process trains, skips, waits for and records; the teacher choice both make; the fast
student's configs and README rows. Nothing is trained here."""

from __future__ import annotations

import json
import multiprocessing
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from conftest import REPO, load_script

CONFIGS = REPO / "bundles" / "mmkd" / "configs"
RECIPES = {"breastmnist": ["legacy_e20", "stem1bn_e20"]}
#: fake validation NLL of every teacher of a candidate recipe: stem1bn_e20 is the better recipe
RECIPE_NLL = {"legacy_e20": 0.40, "stem1bn_e20": 0.30}
METHODS = ["student_alone", "uniform", "camkd"]


@pytest.fixture
def ev(tmp_path, monkeypatch):
    """The script with fake training (writes the stage's checkpoint, logs the run) and fake evaluation (scores from
    ``RECIPE_NLL``, the config files it was given logged)."""
    ev = load_script("mmkd_evidence")
    log = tmp_path / "trained.log"  # appended by every process (the two-process test forks)
    ev.evaluated = []
    ev.networks = {}
    scored = [0]

    def fake_run(parser, stage):
        root = Path(parser.get_parsed_content("bundle_root"))
        key = {"run_teachers": "teachers_ckpt", "run_student_alone": "student_alone_ckpt"}.get(stage, "student_ckpt")
        ckpt = Path(parser.get_parsed_content(key))
        ckpt.parent.mkdir(parents=True, exist_ok=True)
        ckpt.write_text("trained")
        ev.networks[str(root)] = parser
        with open(log, "a") as f:
            f.write(f"{os.getpid()} {threading.current_thread().name} {root.relative_to(tmp_path / 'work')}\n")
        time.sleep(0.02)
        return 2.0, 10

    def fake_evaluate_bundle(configs, root, metrics_file, run_id, **override):
        ev.evaluated.append(([Path(c).name for c in configs], {k: v for k, v in override.items() if k == "student"}))
        name = ev.member_name(override.get("eval_member"), override["eval_checkpoint"])
        recipe = Path(root).name.removeprefix("teachers_")
        scored[0] += 1  # a candidate scored twice (once per process) would differ: the choice must be shared
        nll = RECIPE_NLL.get(recipe, 0.2) + 1e-6 * scored[0]
        return {name: {"test_acc": 0.85, "test_auc": 0.9, "test_nll": nll, "parameters": 1000}}

    monkeypatch.setattr(ev, "_run", fake_run)
    monkeypatch.setattr(ev, "evaluate_bundle", fake_evaluate_bundle)
    monkeypatch.setattr(ev, "_learned_weights", lambda parser, dataset: {"resnet": {"right": 0.4, "wrong": 0.3,
                                                                                   "accuracy": 0.9}})
    monkeypatch.setattr(ev, "POLL_SECONDS", 0.02)
    ev.trained = lambda: [line.split(" ", 2)[2] for line in log.read_text().splitlines()] if log.is_file() else []
    return ev


def _evidence(ev, tmp_path):
    readme = tmp_path / "README.md"
    if not readme.is_file():
        readme.write_text("# head\n<!-- results:begin -->\n<!-- results:end -->\n")
    return ev.Evidence(tmp_path / "work", tmp_path / "results.json", readme, tmp_path / "weights.png",
                       tmp_path / "bench_latency.json")


def _sleeper():
    """A live process that is not this one, to hold claims."""
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])


def _end(process):
    """End ``process`` and reap it (a zombie's id still answers ``os.kill(pid, 0)``: its claims would look held)."""
    process.kill()
    process.wait()


def test_a_student_run_another_live_process_holds_is_left_to_it(ev, tmp_path):
    evidence = _evidence(ev, tmp_path)
    work = tmp_path / "work"
    held = ev.student_root(work, "breastmnist", 0, "small", "uniform")
    stale = ev.student_root(work, "breastmnist", 0, "small", "camkd")
    held.parent.mkdir(parents=True)
    (stale / "models").mkdir(parents=True)  # the remains of the dead process's interrupted run
    (stale / "models" / "model.pt").write_text("partial")
    other = _sleeper()
    try:
        held.with_name("uniform.claim").write_text(str(other.pid))  # the other process trains this run
        stale.with_name("camkd.claim").write_text("999999999")  # a process that has died: its claim is stale
        evidence.teacher_candidates(RECIPES)
        teachers, recipe = evidence.teachers("breastmnist", RECIPES["breastmnist"])
        evidence.students("breastmnist", 0, ["small"], METHODS, teachers, recipe)
        trained = ev.trained()
        assert sorted(trained) == ["breastmnist/seed0/small/camkd", "breastmnist/seed0/small/student_alone",
                                   "breastmnist/teachers_legacy_e20", "breastmnist/teachers_stem1bn_e20"]
        assert (stale / "models" / "model.pt").read_text() == "trained"  # retrained from the start, not resumed
        recorded = json.loads((tmp_path / "results.json").read_text())["runs"]
        assert sorted(r["method"] for r in recorded) == ["camkd", "student_alone"]  # not the held run
        assert all(r["student"] == "small" and r["seed"] == 0 for r in recorded)
        assert [p.name for p in work.rglob("*.claim")] == ["uniform.claim"]  # this process released all of its own
        assert teachers == ev.teacher_root(work, "breastmnist", "stem1bn_e20") / "models" / "teachers.pt"
        assert recipe == ev.TEACHER_RECIPES["stem1bn_e20"]
        # at the end, a process waits for the runs others hold, and trains those whose holder died
        threading.Timer(0.3, _end, (other,)).start()
        evidence.run([0], ["breastmnist"], RECIPES, ["small"], METHODS)
    finally:
        _end(other)
    assert ev.trained().count("breastmnist/seed0/small/uniform") == 1
    assert evidence.recorded("breastmnist", "small", "uniform", 0) and len(evidence.results["runs"]) == 3


def test_teachers_another_live_process_trains_are_waited_for(ev, tmp_path):
    """The candidate recipe the other process holds is not trained here: the selection waits for its record."""
    evidence = _evidence(ev, tmp_path)
    root = ev.teacher_root(tmp_path / "work", "breastmnist", "stem1bn_e20")
    root.parent.mkdir(parents=True)
    other = _sleeper()
    go = threading.Event()

    def other_process_finishes():  # records the candidate as the holder would (same results file), then ends
        go.wait(60)
        time.sleep(0.1)  # while this process waits
        _evidence(ev, tmp_path).teacher_candidate("breastmnist", "stem1bn_e20")
        _end(other)

    root.with_name(root.name + ".claim").write_text(str(other.pid))
    thread = threading.Thread(target=other_process_finishes, name="other")
    try:
        thread.start()
        evidence.teacher_candidates(RECIPES)  # trains the candidate nobody holds, leaves the held one
        assert ev.trained() == ["breastmnist/teachers_legacy_e20"]
        go.set()
        teachers, _ = evidence.teachers("breastmnist", RECIPES["breastmnist"])  # waits
    finally:
        go.set()
        thread.join()
        _end(other)
    log = (tmp_path / "trained.log").read_text().splitlines()
    assert [line.split()[1:] for line in log] == [["MainThread", "breastmnist/teachers_legacy_e20"],
                                                 ["other", "breastmnist/teachers_stem1bn_e20"]]  # nothing twice
    assert evidence.results["selection"]["breastmnist/teacher_recipe"]["chosen"] == "stem1bn_e20"
    assert teachers.parts[-3] == "teachers_stem1bn_e20"


def test_two_evidence_objects_sharing_one_results_file_choose_the_same_recipe(ev, tmp_path):
    first, second = _evidence(ev, tmp_path), _evidence(ev, tmp_path)
    first.teacher_candidate("breastmnist", "legacy_e20")  # each trains one candidate ...
    second.teacher_candidate("breastmnist", "stem1bn_e20")
    chosen = [e.teachers("breastmnist", RECIPES["breastmnist"]) for e in (first, second)]  # ... and chooses
    assert chosen[0] == chosen[1] and chosen[0][1] == ev.TEACHER_RECIPES["stem1bn_e20"]
    selections = [e.results["selection"]["breastmnist/teacher_recipe"] for e in (first, second)]
    assert selections[0] == selections[1]  # the same numbers: each candidate was scored once, by its trainer
    assert selections[0]["mean_val_nll"] == pytest.approx({"legacy_e20": 0.40, "stem1bn_e20": 0.30}, abs=1e-4)
    assert sorted(ev.trained()) == ["breastmnist/teachers_legacy_e20", "breastmnist/teachers_stem1bn_e20"]
    on_file = json.loads((tmp_path / "results.json").read_text())
    assert on_file["selection"]["breastmnist/teacher_recipe"] == selections[0]
    assert on_file["teachers"]["breastmnist"] == on_file["teacher_candidates"]["breastmnist/stem1bn_e20"]


def test_two_processes_running_the_same_command_split_the_runs(ev, tmp_path):
    """Two forked processes run the whole (fake) protocol at once: every run is trained and recorded exactly once,
    both end with the same teacher choice and the same records."""
    def one_process(name):
        evidence = _evidence(ev, tmp_path)
        evidence.run([0, 1], ["breastmnist"], RECIPES, ["small", "large"], METHODS)
        (tmp_path / f"{name}.json").write_text(json.dumps(evidence.results))

    context = multiprocessing.get_context("fork")
    processes = [context.Process(target=one_process, args=(name,)) for name in ("a", "b")]
    for p in processes:
        p.start()
    for p in processes:
        p.join(120)
    assert [p.exitcode for p in processes] == [0, 0]
    trained = ev.trained()
    assert len(trained) == len(set(trained)) == 2 + 2 * 2 * len(METHODS)  # nothing trained twice
    assert len({line.split()[0] for line in (tmp_path / "trained.log").read_text().splitlines()}) == 2  # both worked
    a, b = (json.loads((tmp_path / f"{n}.json").read_text()) for n in ("a", "b"))
    assert a["selection"]["breastmnist/teacher_recipe"] == b["selection"]["breastmnist/teacher_recipe"]
    assert a["selection"]["breastmnist/teacher_recipe"]["chosen"] == "stem1bn_e20"
    on_file = json.loads((tmp_path / "results.json").read_text())
    assert len(on_file["runs"]) == len({ev._key(r) for r in on_file["runs"]}) == 2 * 2 * len(METHODS)
    assert not list((tmp_path / "work").rglob("*.claim"))
    # the teachers' uniform mixture is scored once, for the chosen recipe, and checked against the students alone
    mixture = on_file["teacher_mixture"]["breastmnist"]
    assert mixture["recipe"] == "stem1bn_e20" and mixture["members"] == list(on_file["teachers"]["breastmnist"])
    assert set(on_file["teacher_check"]["breastmnist"]["mixture_better"]) == {"val_accuracy", "val_auc", "val_nll"}
    assert "uniform mixture of the three teachers' probabilities" in (tmp_path / "README.md").read_text()


def test_teachers_without_the_stage_marker_are_trained_again(ev, tmp_path):
    """A ``teachers.pt`` alone may be what ``CheckpointSaver`` saved when training was interrupted by an exception:
    only ``run_stage``'s marker says the stage finished."""
    root = ev.teacher_root(tmp_path / "work", "breastmnist", "legacy_e20")
    (root / "models").mkdir(parents=True)
    (root / "models" / "teachers.pt").write_text("interrupted")
    evidence = _evidence(ev, tmp_path)
    evidence.teacher_candidate("breastmnist", "legacy_e20")
    assert ev.trained() == ["breastmnist/teachers_legacy_e20"] and (root / "done.json").is_file()
    assert evidence.results["timing"]["breastmnist/teachers_legacy_e20"] == {"seconds": 2.0, "iterations": 10}
    _evidence(ev, tmp_path).teacher_candidate("breastmnist", "legacy_e20")  # recorded: neither trained nor scored
    (tmp_path / "results.json").unlink()
    _evidence(ev, tmp_path).teacher_candidate("breastmnist", "legacy_e20")  # trained (marker): scored, not trained
    assert ev.trained() == ["breastmnist/teachers_legacy_e20"] and len(ev.evaluated) == 2 * 3 * 2


def test_a_new_machine_trains_only_the_chosen_teachers_again_and_checks_them(ev, tmp_path):
    """Run folders are not in git: a session on a new machine has the records but no checkpoints. The chosen recipe's
    teachers (and no other candidate) are trained again, checked against the recorded scores, and the run goes on."""
    evidence = _evidence(ev, tmp_path)
    evidence.run([0], ["breastmnist"], RECIPES, ["small"], ["student_alone"])
    import shutil
    shutil.rmtree(tmp_path / "work")  # the new machine
    log = tmp_path / "trained.log"
    log.unlink()
    again = _evidence(ev, tmp_path)
    again.run([0], ["breastmnist"], RECIPES, ["small"], ["student_alone", "uniform"])
    assert ev.trained() == ["breastmnist/teachers_stem1bn_e20", "breastmnist/seed0/small/uniform"]
    restored = again.results["teacher_restored"]["breastmnist/stem1bn_e20"]
    assert len(restored) == 1 and restored[0]["max_abs_difference"] < ev.REPRODUCE_TOLERANCE
    assert json.loads((tmp_path / "results.json").read_text())["teacher_restored"] == again.results["teacher_restored"]
    assert [r["method"] for r in again.results["runs"]] == ["student_alone", "uniform"]


def test_teachers_trained_again_that_score_differently_stop_the_run(ev, tmp_path, monkeypatch):
    """Students distilled from other teachers would not be comparable with the recorded ones: no student is trained."""
    _evidence(ev, tmp_path).run([0], ["breastmnist"], RECIPES, ["small"], ["student_alone"])
    import shutil
    shutil.rmtree(tmp_path / "work")
    (tmp_path / "trained.log").unlink()
    monkeypatch.setitem(RECIPE_NLL, "stem1bn_e20", 0.31)  # the retrained teachers: validation NLL off by 0.01
    with pytest.raises(RuntimeError, match="trained again score up to 0.01"):
        _evidence(ev, tmp_path).run([0], ["breastmnist"], RECIPES, ["small"], ["student_alone", "uniform"])
    assert ev.trained() == ["breastmnist/teachers_stem1bn_e20"]
    on_file = json.loads((tmp_path / "results.json").read_text())
    assert on_file["teacher_restored"]["breastmnist/stem1bn_e20"][0]["max_abs_difference"] == pytest.approx(0.01, abs=1e-4)


def test_fast_student_layers_its_config_over_the_dataset_configs(ev, tmp_path):
    train = ["train.json"]
    assert [Path(f).name for f in ev._configs("pneumoniamnist", "fast")] == ["train.json", "student_fast.json"]
    assert [Path(f).name for f in ev._configs("breastmnist", "fast")] == ["train.json", "train_breastmnist.json",
                                                                         "student_fast.json"]
    assert [Path(f).name for f in ev._configs("breastmnist", "large")] == train + ["train_breastmnist.json"]
    evidence = _evidence(ev, tmp_path)
    teachers = tmp_path / "teachers.pt"
    for student in ("fast", "large"):
        evidence.student("breastmnist", student, "uniform", 0, teachers, ev.TEACHER_RECIPES["stem1bn_e20"])
    roots = {s: str(ev.student_root(tmp_path / "work", "breastmnist", 0, s, "uniform")) for s in ("fast", "large")}
    fast, large = ev.networks[roots["fast"]], ev.networks[roots["large"]]
    assert fast.get("network_def")["_target_"] == "monai_kd.networks.FastStudent"
    assert fast.get_parsed_content("student_feature_channels") == 128 and fast.get("max_epochs") == 20
    assert fast.get_parsed_content("teachers_ckpt") == str(teachers) and fast.get("method") == "uniform"
    assert sum(p.numel() for p in fast.get_parsed_content("network_def").parameters()) == 13_330  # bench_latency's
    assert large.get("network_def")["_target_"] == "monai.networks.nets.ResNet"
    assert large.get_parsed_content("network_def#block_inplanes") == [8, 16, 32, 64]
    # the evaluation builds the same network: the overlay under evaluate.json, no ResNet size for the fast student
    assert ev.evaluated[0] == (["train.json", "train_breastmnist.json", "student_fast.json", "evaluate.json"], {})
    assert ev.evaluated[-1] == (["train.json", "train_breastmnist.json", "evaluate.json"], {"student": "large"})
    runs = json.loads((tmp_path / "results.json").read_text())["runs"]
    assert [(r["dataset"], r["student"], r["method"], r["seed"]) for r in runs] == [
        ("breastmnist", "fast", "uniform", 0), ("breastmnist", "large", "uniform", 0)]
    assert {"accuracy", "auc"} <= set(runs[0])


def test_fast_student_command_and_its_latency_rows(ev, tmp_path, capsys):
    with pytest.raises(SystemExit):
        ev.main(["--students", "tiny"])
    assert "invalid choice: 'tiny'" in capsys.readouterr().err
    assert ev.STUDENTS == ("small", "large") and "fast" in ev.ALL_STUDENTS  # not in the default student set
    bench = tmp_path / "bench_latency.json"
    records = [{"bundle": "mmkd", "model": m, "runtime": "eager", "threads": 1, "batch": b, "median_s": s / 1000}
               for m, b, s in (("student_fast", 1, 0.58), ("student_fast", 64, 2.52), ("student", 64, 9.61),
                               ("teacher_resnet", 64, 65.64))]
    bench.write_text(json.dumps({"busy": False, "records": records}))
    out = tmp_path / "out"
    ev.main(["--datasets", "breastmnist", "--students", "fast", "--methods", "student_alone", "uniform", "--seeds", "0",
             "--teacher-recipes", "legacy_e20", "--work", str(tmp_path / "work"), "--out", str(out), "--bench", str(bench)])
    results = json.loads((out / "results.json").read_text())
    assert sorted((r["student"], r["method"]) for r in results["runs"]) == [("fast", "student_alone"), ("fast", "uniform")]
    text = (out / "README.md").read_text()
    assert "| fast (1,000) | uniform | 1 |" in text  # the main table
    assert "| fast student | uniform | 1 | 1,000 | 0.900 (1 seed) | 0.850 (1 seed) | 0.58 | 2.52 |" in text
    assert "| teacher_resnet | – | 1 | 1,000 | 0.900 | 0.850 | not measured | 65.64 |" in text
    assert "large student" not in text  # no records of it
    bench.write_text(json.dumps({"busy": True, "records": records}))
    assert "busy run only" in ev.render(results, json.loads(bench.read_text()))
    assert "Fast student beside its latency" not in ev.render({"runs": [r for r in results["runs"] if r["student"] != "fast"]})
