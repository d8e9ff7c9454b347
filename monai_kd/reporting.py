# Copyright (c) MONAI KD contributors.
# Licensed under the Apache License, Version 2.0.
"""Generated sections of Markdown documents: result tables written by scripts between comment markers.

A document holds ``<!-- NAME:begin -->`` and ``<!-- NAME:end -->`` lines; :func:`write_section` replaces what is
between them, so hand-written text around a generated table survives re-running the script that made it.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["markers", "write_section"]


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
