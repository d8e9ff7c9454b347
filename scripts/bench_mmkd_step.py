#!/usr/bin/env python
"""Time of one MMKD bilevel training iteration relative to the plain multi-teacher (uniform) iteration.

    OMP_NUM_THREADS=1 python scripts/bench_mmkd_step.py [--datasets pneumoniamnist breastmnist]
        [--students small large fast] [--iterations 20] [--rounds 4] [--threads 1] [--max-load 0.5] [--allow-busy]

Issue 12 asks for the bilevel step's time relative to a plain multi-teacher step. The whole-run seconds per
iteration of ``scripts/mmkd_evidence.py`` (``timing_ratio`` in ``bundles/mmkd/docs/results.json``) come from runs
made at different times while two evidence processes shared the cores, so they carry the machine's load. Here every
method is timed in one process, on an idle machine, interleaved:

- for each dataset (its bundle config: ``train.json``, BreastMNIST ``+ train_breastmnist.json``) and student
  (``fast``: ``+ student_fast.json``), one ``train#trainer`` per method of the evidence (``uniform``, ``camkd``,
  ``gate``, ``mmkd_logits``, ``mmkd_logits_features``: the overrides of ``scripts/mmkd_evidence.py``), built from the
  bundle exactly as users run it but without its handlers (no checkpoint, validation or progress bar; the teachers
  keep their seeded random weights: the time of a step does not depend on the weight values), on the real training
  split and the bundle's batch size;
- ``--rounds`` rounds; in each, every method's trainer runs ``--iterations`` iterations in turn (round 1 is warm-up
  and not counted), so a slow spell of the machine hits every method alike;
- the time of an iteration is from ignite's ``ITERATION_STARTED`` to ``ITERATION_COMPLETED``: the whole step (teacher
  forwards, the weighting, and for MMKD the quiz batch, the virtual step and the meta step), not the loading of the
  training batch;
- per method: the median and quartiles over all counted iterations, and the median as a ratio to ``uniform``'s.

A busy machine gives no honest timing: the 1-minute load average is read before and after each dataset/student;
above ``--max-load`` before the run it is refused (exit 3) unless ``--allow-busy``, and a busy run is flagged in the
JSON and never replaces an idle-machine table. Writes ``--output`` (default ``docs/bench_mmkd_step.json``), the
``mmkd-step`` section of ``docs/bench_mmkd_step.md`` and of ``bundles/mmkd/docs/README.md``.
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from monai_kd.reporting import busy_refusal, busy_section, is_busy, load_average, run_header  # noqa: E402
from monai_kd.reporting import save_timing_run, write_timing_section  # noqa: E402

BUNDLE = REPO / "bundles" / "mmkd"
MARKER = "mmkd-step"
MEASURED = "Measured on an idle machine"  # heads every idle-machine table; a busy run never replaces one


@functools.cache
def _evidence() -> Any:
    """``scripts/mmkd_evidence.py`` as a module: its configs per dataset and student and its method overrides are the
    ones timed here (loaded once)."""
    spec = importlib.util.spec_from_file_location("mmkd_evidence", Path(__file__).with_name("mmkd_evidence.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def build_trainer(dataset: str, student: str, method: str, data_root: Path, work: Path) -> Any:
    """The bundle's ``train#trainer`` for ``method`` without handlers (and without an epoch limit: the caller stops
    it, :func:`time_iterations`).

    Args:
        dataset: ``pneumoniamnist`` or ``breastmnist``.
        student: ``small``, ``large`` or ``fast``.
        method: a method of ``scripts/mmkd_evidence.py`` other than ``student_alone``.
        data_root: the folder holding the MedMNIST data folders.
        work: a scratch ``bundle_root``.
    """
    from monai.bundle import ConfigParser

    ev = _evidence()
    parser = ConfigParser()
    parser.read_config(ev._configs(dataset, student))
    parser.update({"bundle_root": str(work), "dataset_dir": str(data_root / dataset), **ev._student_override(student),
                   **ev.METHOD_OVERRIDES[method], "train#trainer#train_handlers": [], "train#trainer#max_epochs": 10**6})
    return parser.get_parsed_content("train#trainer")


def time_iterations(trainer: Any, iterations: int) -> list[float]:
    """Run (or resume) ``trainer`` for ``iterations`` iterations, across epoch ends; the seconds of each,
    ``ITERATION_STARTED`` to ``ITERATION_COMPLETED``."""
    from ignite.engine import Events

    times: list[float] = []
    start = {}

    def _start(_):
        start["t"] = time.perf_counter()

    def _end(engine):
        times.append(time.perf_counter() - start["t"])
        if len(times) == iterations:
            engine.terminate()  # the next run resumes from here

    trainer.add_event_handler(Events.ITERATION_STARTED, _start)
    trainer.add_event_handler(Events.ITERATION_COMPLETED, _end)
    try:
        trainer.run()
    finally:
        trainer.remove_event_handler(_start, Events.ITERATION_STARTED)
        trainer.remove_event_handler(_end, Events.ITERATION_COMPLETED)
    return times


def measure(dataset: str, student: str, methods: list[str], data_root: Path, iterations: int, rounds: int,
            seed: int = 0) -> dict[str, Any]:
    """Interleaved rounds of every method's trainer; per method its counted iteration times and their summary."""
    from monai.utils import set_determinism

    set_determinism(seed)
    with tempfile.TemporaryDirectory() as tmp:
        trainers = {m: build_trainer(dataset, student, m, data_root, Path(tmp)) for m in methods}
        counted: dict[str, list[float]] = {m: [] for m in methods}
        for r in range(rounds):
            for m in methods:
                t = time_iterations(trainers[m], iterations)
                if r > 0:  # round 1 warms up every method
                    counted[m].extend(t)
        params = sum(p.numel() for p in trainers[methods[0]].network.parameters())
    out: dict[str, Any] = {"student_parameters": params, "methods": {}}
    for m, t in counted.items():
        q = statistics.quantiles(t, n=4)
        out["methods"][m] = {"median_s": statistics.median(t), "q1_s": q[0], "q3_s": q[2], "iterations": len(t)}
    base = out["methods"].get("uniform", {}).get("median_s")
    for m in out["methods"]:
        out["methods"][m]["x_uniform"] = out["methods"][m]["median_s"] / base if base else None
    return out


def table(result: dict[str, Any]) -> str:
    """The generated section: how it was measured, then one table per dataset."""
    head = (f"{MEASURED if not result['busy'] else 'Busy run'}. Machine: {result['machine']}; {result['threads']} "
            f"thread(s); 1-minute load average {result['load_before']:.2f} before, {result['load_after']:.2f} after "
            f"(refused above {result['max_load']}); {result['rounds'] - 1} counted rounds of {result['iterations']} "
            "iterations per method after one warm-up round, the methods interleaved; median [q1, q3] ms of one "
            "training iteration (the whole step, not the batch loading), on the real training split at the bundle's "
            f"batch size. Command: `{result['command']}`.")
    if result["busy"]:
        return busy_section(head, result["max_load"], "OMP_NUM_THREADS=1 python scripts/bench_mmkd_step.py")
    lines = [head, ""]
    for key, entry in result["entries"].items():
        dataset, student = key.split("/")
        lines += [f"**{dataset}, {student} student** ({entry['student_parameters']:,} parameters)", "",
                  "| method | ms per iteration | x uniform |", "|---|---:|---:|"]
        for m, s in entry["methods"].items():
            lines.append(f"| {m} | {1000 * s['median_s']:.1f} [{1000 * s['q1_s']:.1f}, {1000 * s['q3_s']:.1f}] | "
                         f"{s['x_uniform']:.2f} |")
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    ev = _evidence()
    ev_methods = [m for m in ev.METHODS if m != "student_alone"]
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--datasets", nargs="+", default=["pneumoniamnist", "breastmnist"], choices=ev.DATASETS)
    p.add_argument("--students", nargs="+", default=list(ev.ALL_STUDENTS), choices=ev.ALL_STUDENTS)
    p.add_argument("--methods", nargs="+", default=ev_methods, choices=ev_methods)
    p.add_argument("--iterations", type=int, default=20, help="iterations per method per round")
    p.add_argument("--rounds", type=int, default=4, help="rounds (the first is warm-up)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--data-root", type=Path, default=REPO.parent / "shared" / "data")
    p.add_argument("--max-load", type=float, default=0.5)
    p.add_argument("--allow-busy", action="store_true", help="measure anyway, flagging the result as busy")
    p.add_argument("--output", type=Path, default=REPO / "docs" / "bench_mmkd_step.json")
    p.add_argument("--markdown", type=Path, default=REPO / "docs" / "bench_mmkd_step.md")
    p.add_argument("--readme", type=Path, default=BUNDLE / "docs" / "README.md")
    args = p.parse_args(argv)
    if args.rounds < 2 or args.iterations < 2:
        p.error("--rounds and --iterations must be at least 2 (one warm-up round, quartiles need two values)")
    if "uniform" not in args.methods:
        p.error("--methods must include uniform: every time is reported relative to it")
    refusal = busy_refusal(load_average(), args.max_load, args.allow_busy)
    if refusal:
        print(refusal, file=sys.stderr)
        return 3
    import torch

    torch.set_num_threads(args.threads)
    load_before, loads_after = load_average(), []
    result = run_header(threads=args.threads, iterations=args.iterations, rounds=args.rounds,
                        max_load=args.max_load, load_before=load_before, entries={})
    for dataset in args.datasets:
        for student in args.students:
            started = time.perf_counter()
            entry = measure(dataset, student, args.methods, args.data_root, args.iterations, args.rounds)
            loads_after.append(load_average())
            result["entries"][f"{dataset}/{student}"] = entry
            ratios = ", ".join(f"{m} {s['x_uniform']:.2f}" for m, s in entry["methods"].items())
            print(f"{dataset} {student}: x uniform: {ratios} ({time.perf_counter() - started:.0f} s, load "
                  f"{loads_after[-1]:.2f})", flush=True)
    result["load_after"] = max(loads_after)
    result["busy"] = is_busy(load_before, loads_after, args.max_load, args.threads)
    text = table(result)
    save_timing_run(result, args.output, args.markdown, text, MARKER, MEASURED)
    if args.readme.is_file() and f"<!-- {MARKER}:begin -->" in args.readme.read_text():
        write_timing_section(args.readme, text, MARKER, result["busy"], MEASURED)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
