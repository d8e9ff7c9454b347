"""Resumable evidence runs: a finished stage is not run again, a recorded run is not recorded again."""

from __future__ import annotations

import json

from monai_kd.evidence import MARKER, RecordStore, run_stage


class CountingStage:
    """A fake training stage: counts its calls and writes a 'checkpoint' into its run folder."""

    def __init__(self, root, fail: bool = False):
        self.root, self.calls, self.fail = root, 0, fail

    def __call__(self):
        self.calls += 1
        (self.root / "models").mkdir(parents=True, exist_ok=True)
        (self.root / "models" / "model.pt").write_text("weights")
        if self.fail:
            raise KeyboardInterrupt  # interrupted mid-run: the checkpoint may be partial
        return "trained"


def test_a_finished_stage_is_skipped_on_rerun(tmp_path):
    root = tmp_path / "seed0" / "student"
    stage = CountingStage(root)
    first = run_stage(root, stage, info={"run_id": "run_student"})
    assert first.ran and first.value == "trained" and stage.calls == 1
    marker = json.loads((root / MARKER).read_text())
    assert marker["run_id"] == "run_student" and marker["seconds"] >= 0
    again = run_stage(root, stage)
    assert not again.ran and again.value is None and stage.calls == 1


def test_an_interrupted_stage_is_cleaned_and_run_again(tmp_path):
    root = tmp_path / "run"
    broken = CountingStage(root, fail=True)
    try:
        run_stage(root, broken)
    except KeyboardInterrupt:
        pass
    assert (root / "models" / "model.pt").is_file() and not (root / MARKER).is_file()
    (root / "stale.txt").write_text("left by the interrupted run")
    stage = CountingStage(root)
    assert run_stage(root, stage).ran and stage.calls == 1
    assert not (root / "stale.txt").exists()  # removed before the new run
    assert (root / MARKER).is_file()


def test_a_stage_done_when_its_checkpoint_exists_keeps_its_folder(tmp_path):
    root = tmp_path / "run"
    (root / "models").mkdir(parents=True)
    (root / "models" / "link_1.pt").write_text("a finished earlier link")  # resumed by the stage itself
    stage = CountingStage(root)
    ckpt = root / "models" / "model.pt"
    assert run_stage(root, stage, done=ckpt, clean=False).ran
    assert (root / "models" / "link_1.pt").is_file() and not (root / MARKER).exists()
    assert not run_stage(root, stage, done=ckpt).ran and stage.calls == 1


def _key(r):
    return r["method"], r["seed"]


def test_records_are_saved_at_once_skipped_when_recorded_and_merged_across_processes(tmp_path):
    output = tmp_path / "results.json"
    calls = 0

    def protocol(store: RecordStore, seeds) -> None:  # a stage runner as the scripts use it: skip recorded runs
        nonlocal calls
        for seed in seeds:
            if store.recorded({"method": "kd", "seed": seed}):
                continue
            calls += 1
            store.record({"method": "kd", "seed": seed, "auc": 0.9 + 0.01 * seed})

    a = RecordStore(output, _key, defaults={"selection": {}})
    b = RecordStore(output, _key, defaults={"selection": {}})  # a second process, started before a wrote anything
    protocol(a, [0, 1])
    assert calls == 2 and len(json.loads(output.read_text())["runs"]) == 2  # written after each record
    b.results["selection"]["kd"] = {"chosen": 4.0}
    protocol(b, [2])
    on_disk = json.loads(output.read_text())
    assert sorted(_key(r) for r in on_disk["runs"]) == [("kd", 0), ("kd", 1), ("kd", 2)]
    assert on_disk["selection"] == {"kd": {"chosen": 4.0}}
    resumed = RecordStore(output, _key)
    protocol(resumed, [0, 1, 2])  # everything recorded: nothing runs again
    assert calls == 3 and not resumed.record({"method": "kd", "seed": 0, "auc": 0.0})
    assert len(json.loads(output.read_text())["runs"]) == 3


def test_a_corrupt_results_file_is_named(tmp_path):
    output = tmp_path / "results.json"
    output.write_text("{not json")
    try:
        RecordStore(output, _key)
    except ValueError as e:
        assert str(output) in str(e)
    else:
        raise AssertionError("a corrupt results file was accepted")
