# Copyright (c) MONAI KD contributors.
# Licensed under the Apache License, Version 2.0.
"""Generated sections of Markdown documents: result tables written by scripts between comment markers.

A document holds ``<!-- NAME:begin -->`` and ``<!-- NAME:end -->`` lines; :func:`write_section` replaces what is
between them, so hand-written text around a generated table survives re-running the script that made it.
"""

from __future__ import annotations

import os
import statistics
from collections.abc import Callable, Hashable, Sequence
from pathlib import Path

__all__ = ["busy_refusal", "busy_section", "changes_table", "markers", "write_section", "write_timing_section"]


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
