# Copyright (c) MONAI KD contributors.
# Licensed under the Apache License, Version 2.0.
"""Generated sections of Markdown documents: result tables written by scripts between comment markers.

A document holds ``<!-- NAME:begin -->`` and ``<!-- NAME:end -->`` lines; :func:`write_section` replaces what is
between them, so hand-written text around a generated table survives re-running the script that made it.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Hashable, Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "accuracy_latency_table",
    "busy_latency_note",
    "busy_refusal",
    "busy_section",
    "changes_table",
    "is_busy",
    "latency_ms",
    "load_average",
    "markers",
    "render_fast_section",
    "run_header",
    "save_timing_run",
    "write_section",
    "write_timing_section",
]


def markers(name: str = "results") -> tuple[str, str]:
    """The begin and end markers of the section ``name``, e.g. ``<!-- results:begin -->``."""
    return f"<!-- {name}:begin -->", f"<!-- {name}:end -->"


def write_section(path: str | os.PathLike, text: str, name: str = "results") -> None:
    """Replace the text between the markers of section ``name`` in the file ``path`` with ``text``.

    Args:
        path: a Markdown file holding both markers (once each).
        text: the new content of the section.
        name: section name (see :func:`markers`).

    Raises:
        ValueError: When the file lacks one of the markers or holds one several times.
    """
    path = Path(path)
    begin, end = markers(name)
    content = path.read_text()
    if content.count(begin) != 1 or content.count(end) != 1 or content.index(begin) > content.index(end):
        raise ValueError(f"{path} must hold one {begin} line followed by one {end} line.")
    head, rest = content.split(begin, 1)
    _, tail = rest.split(end, 1)
    path.write_text(f"{head}{begin}\n{text.strip()}\n{end}{tail}")


def changes_table(
    before: Sequence[dict],
    after: Sequence[dict],
    group: Callable[[dict], Hashable],
    metrics: dict[str, Callable[[dict], float]],
    label: Callable[[Hashable], str] = str,
) -> str:
    """A Markdown table of how the mean of each metric moved between two sets of run records.

    Used after a fix that invalidates earlier evidence: each group (e.g. dataset and model) present in both sets
    gets its mean before, its mean after and the difference, so a README says which numbers changed and by how much.

    Args:
        before: run records of the earlier evidence.
        after: run records of the re-run.
        group: the group a record belongs to (records of one group are averaged over seeds).
        metrics: column name -> the metric's value in a record.
        label: text of a group in the first column.

    Returns:
        the table, or an empty string when no group is in both sets.
    """
    groups: dict[Hashable, tuple[list[dict], list[dict]]] = {}
    for which, records in enumerate((before, after)):
        for record in records:
            groups.setdefault(group(record), ([], []))[which].append(record)
    rows = []
    for key, (old, new) in groups.items():
        if not old or not new:
            continue
        cells = []
        for value in metrics.values():
            m_old, m_new = statistics.mean(map(value, old)), statistics.mean(map(value, new))
            cells.append(f"{m_old:.3f} -> {m_new:.3f} ({m_new - m_old:+.3f})")
        rows.append(f"| {label(key)} | {len(old)} -> {len(new)} | " + " | ".join(cells) + " |")
    if not rows:
        return ""
    head = "| group | runs | " + " | ".join(f"{name} (mean before -> after, change)" for name in metrics) + " |"
    return "\n".join([head, "|---|---|" + "---:|" * len(metrics), *rows])


def latency_ms(
    bench: dict[str, Any] | None, bundle: str, model: str, runtime: str = "eager", batch: int = 64, threads: int = 1
) -> str:
    """One latency cell of a results table: the median (ms) ``scripts/bench_latency.py`` measured for a model.

    Args:
        bench: the contents of ``docs/bench_latency.json`` (``None``: no benchmark yet).
        bundle: the benchmark's bundle entry (e.g. ``kd``, ``weckd``, ``emtkd_pneumonia``).
        model: the entry's model (``teacher``, ``student``, ``student_fast``, ...).
        runtime: ``eager``, ``torchscript``, ``onnxruntime`` or ``onnxruntime_int8``.
        batch: batch size.
        threads: thread count.

    Returns:
        the median in ms with two decimals; ``busy run only`` when the benchmark ran on a busy machine (a README
        shows no latency measured then); ``not measured`` when there is no such record.
    """
    if not bench:
        return "not measured"
    if bench.get("busy"):
        return "busy run only"
    wanted = (bundle, model, runtime, threads, batch)
    for r in bench.get("records", []):
        if (r["bundle"], r["model"], r["runtime"], r["threads"], r["batch"]) == wanted:
            return f"{1000 * r['median_s']:.2f}"
    return "not measured"


def busy_latency_note(bench: dict[str, Any] | None, report_command: str) -> list[str]:
    """The lines heading a table with latency columns when ``docs/bench_latency.json`` is a busy-machine draft.

    Args:
        bench: the contents of ``docs/bench_latency.json`` (or ``None``).
        report_command: the command that re-renders the table once an idle benchmark exists.
    """
    if not (bench and bench.get("busy")):
        return []
    return ["Latency: `docs/bench_latency.json` holds only a busy-machine draft (not evidence), so no latency is "
            f"shown; `python scripts/bench_latency.py` on an idle machine, then `{report_command}`, fills the "
            "columns.", ""]


def accuracy_latency_table(
    header: Sequence[str],
    rows: Sequence[tuple[Sequence[str], Sequence[dict], str | None]],
    bench: dict[str, Any] | None,
    bundle: str,
    metrics: dict[str, str] | None = None,
) -> list[str]:
    """A Markdown table of test metrics (mean ± std over seeds) with each model's one-thread latency beside them.

    Args:
        header: the names of the label columns (e.g. ``["method", "student"]``).
        rows: per row, its label cells, its run records (one per seed) and its model in ``docs/bench_latency.json``
            (``None``: no latency, e.g. a model the benchmark does not build).
        bench: the contents of ``docs/bench_latency.json`` (or ``None``).
        bundle: the benchmark's bundle entry of the rows' models.
        metrics: column name -> record field; default test accuracy and test AUC.

    Returns:
        the table's lines: label columns, ``seeds``, the metrics, then eager latency at batch 64 and batch 1.
    """
    from monai_kd.evidence.report import mean_std  # no torch/MONAI import: stays cheap

    metrics = metrics or {"test accuracy": "accuracy", "test AUC": "auc"}
    lines = ["| " + " | ".join([*header, "seeds", *metrics, "latency b64, 1 thread (ms)", "latency b1, 1 thread (ms)"])
             + " |", "|" + "---|" * len(header) + "---:|" * (len(metrics) + 3)]
    for labels, records, model in rows:
        cells = [mean_std([r[field] for r in records]) for field in metrics.values()]
        latency = [latency_ms(bench, bundle, model, batch=b) if model else "" for b in (64, 1)]
        lines.append("| " + " | ".join([*labels, str(len(records)), *cells, *latency]) + " |")
    return lines


def render_fast_section(
    readme: str | os.PathLike,
    markdown: Callable[[dict, dict, dict | None], str],
    results: dict,
    main_results: str | os.PathLike,
    bench: str | os.PathLike,
) -> str:
    """Write a bundle's fast-student section (``fast`` markers) from its records, the main run's records (the
    default student and teachers beside the fast one) and the latency benchmark's JSON; absent files read as empty.

    Args:
        readme: the bundle README.
        markdown: ``markdown(results, main_results, bench)`` -> the section's text (the evidence script's table).
        results: the fast arm's records.
        main_results: the main run's ``results.json``.
        bench: ``scripts/bench_latency.py``'s JSON.

    Returns:
        the section's text.
    """
    main_results, bench = Path(main_results), Path(bench)
    text = markdown(results, json.loads(main_results.read_text()) if main_results.is_file() else {},
                    json.loads(bench.read_text()) if bench.is_file() else None)
    write_section(readme, text, "fast")
    return text


def load_average() -> float:
    """The 1-minute load average (``os.getloadavg``)."""
    return os.getloadavg()[0]


def is_busy(load_before: float, loads_after: Sequence[float], max_load: float, own_threads: int = 1) -> bool:
    """Whether a timing run shared the CPU with other work.

    Before the run only other processes count, so ``load_before`` must be at most ``max_load``. A load read after
    (part of) the run also holds the run's own busy threads: up to ``own_threads`` of it is the benchmark itself
    (a one-thread benchmark leaves a 1-minute load near 1.0 on an idle machine), so a later reading is busy only
    above ``own_threads + max_load / 2``: more than half the idle allowance of other work on top of the run.

    Args:
        load_before: the 1-minute load average before the run started.
        loads_after: the readings taken during or after the run.
        max_load: the highest load average of other work at which timings are honest.
        own_threads: the number of threads the benchmark itself keeps busy.
    """
    return load_before > max_load or max(loads_after, default=0.0) > own_threads + max_load / 2


def run_header(**fields: Any) -> dict[str, Any]:
    """What every timing run records first: the machine, the date (UTC) and the command line, then ``fields``."""
    return {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPU(s), {platform.system()}",
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "command": " ".join(sys.argv),
        **fields,
    }


def save_timing_run(
    result: dict[str, Any], output: str | os.PathLike, markdown: str | os.PathLike, text: str, name: str,
    measured_marker: str,
) -> bool:
    """Write a timing run's JSON to ``output`` and its section ``name`` of ``markdown`` (never over a measured table
    when the run was busy: :func:`write_timing_section`), saying so when the table was kept.

    Args:
        result: the run's record; ``result["busy"]`` decides whether its section may replace a measured one.
        output: the JSON file (its folder is created).
        markdown: the document holding the generated section.
        text: the section's new content.
        name: the section's marker name.
        measured_marker: text found only in a section measured on an idle machine.

    Returns:
        Whether the section was written.
    """
    Path(output).parent.mkdir(parents=True, exist_ok=True)
    Path(output).write_text(json.dumps(result, indent=2) + "\n")
    written = write_timing_section(markdown, text, name, bool(result.get("busy")), measured_marker)
    if not written:
        print(f"busy run: {markdown} keeps its measured table; this run is only in {output}")
    return written


def busy_refusal(load: float, max_load: float, allow_busy: bool) -> str | None:
    """The message refusing a timing run on a busy machine, or ``None`` when it may run (idle, or ``allow_busy``).

    Args:
        load: the 1-minute load average now.
        max_load: the highest load average at which timings are honest.
        allow_busy: measure anyway (the result must then be flagged busy).
    """
    if load <= max_load or allow_busy:
        return None
    return (f"refused: the machine is busy (1-minute load average {load:.2f} > {max_load}); timings measured now would "
            "not be a property of the code. Re-run when idle, or --allow-busy for a flagged smoke run.")


def busy_section(head: str, max_load: float, command: str) -> str:
    """The generated section of a busy timing run: what was run, and that its numbers are not results."""
    return (f"{head}\n\n**Busy run: not a result.** The 1-minute load average exceeded {max_load} (other processes "
            "shared the CPU), so its seconds are not a property of the code; they are kept only in the JSON, flagged "
            f"`busy`. Re-run on an idle machine:\n\n    {command}\n")


def write_timing_section(path: str | os.PathLike, text: str, name: str, busy: bool, measured_marker: str) -> bool:
    """:func:`write_section`, except that a busy run never replaces a measured table (one holding ``measured_marker``).

    Returns:
        Whether the section was written.
    """
    if busy:
        begin, end = markers(name)
        content = Path(path).read_text()
        if measured_marker in content.split(begin, 1)[-1].split(end, 1)[0]:
            return False
    write_section(path, text, name)
    return True
