"""A results file shared by several processes (``monai_kd.results_file``)."""

from __future__ import annotations

import json
import multiprocessing

from monai_kd.results_file import save_merged_results


def _key(record: dict) -> tuple:
    return record["name"], record["seed"]


def test_records_and_section_entries_of_another_writer_are_merged_not_lost(tmp_path):
    path = tmp_path / "results.json"
    a = {"runs": [], "selection": {}}  # both read the file before either wrote it
    b = {"runs": [], "selection": {}}
    a["runs"].append({"name": "teacher", "seed": 0, "auc": 0.9})
    save_merged_results(path, a, _key)
    b["runs"].append({"name": "student", "seed": 1, "auc": 0.8})
    b["selection"]["chosen"] = {"w": 1.0}
    save_merged_results(path, b, _key)
    a["runs"].append({"name": "student", "seed": 0, "auc": 0.7})
    a["selection"]["chosen"] = {"w": 10.0}  # held by this writer: kept over the one on disk
    save_merged_results(path, a, _key)
    on_disk = json.loads(path.read_text())
    assert sorted((r["name"], r["seed"], r["auc"]) for r in on_disk["runs"]) == [
        ("student", 0, 0.7), ("student", 1, 0.8), ("teacher", 0, 0.9)]
    assert on_disk["selection"] == {"chosen": {"w": 10.0}}
    assert len(a["runs"]) == 3  # the writer's own dictionary now holds the merged records too
    save_merged_results(path, b, _key)  # a record both hold is not duplicated
    assert len(json.loads(path.read_text())["runs"]) == 3
    assert not list(tmp_path.glob(".tmp-*"))


def _write_many(path: str, seed: int, n: int) -> None:
    results: dict = {"runs": []}
    for i in range(n):
        results["runs"].append({"name": f"run{i}", "seed": seed})
        save_merged_results(path, results, _key)


def test_concurrent_processes_keep_every_record(tmp_path):
    path = tmp_path / "results.json"
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_write_many, args=(str(path), seed, 25)) for seed in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(600)  # a hang guard, not a timing check: spawned children import torch, slow on a loaded machine
        assert p.exitcode == 0
    runs = json.loads(path.read_text())["runs"]
    assert sorted(_key(r) for r in runs) == sorted((f"run{i}", s) for i in range(25) for s in range(3))
