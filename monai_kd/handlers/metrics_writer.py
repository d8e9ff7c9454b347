"""Write an engine's final metrics into a shared JSON file, one entry per named model."""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING

from monai.utils import optional_import

from monai_kd.io.atomic import atomic_paths

if TYPE_CHECKING:
    from ignite.engine import Engine, Events
else:
    Engine, _ = optional_import("ignite.engine", name="Engine")
    Events, _ = optional_import("ignite.engine", name="Events")


class MetricsJSONWriter:
    """On ``COMPLETED``, store ``engine.state.metrics`` under ``name`` in the JSON file ``filepath``.

    Several evaluators (teacher, student alone, distilled student) can write to one file; existing entries
    of other names are kept. The file is replaced atomically (temporary file, then rename), so a crash
    never leaves a half-written file.

    Args:
        filepath: JSON file to create or update.
        name: key for this engine's metrics, e.g. ``"teacher"``.
        extra: constant values stored with the metrics (e.g. parameter count, checkpoint path).
    """

    def __init__(self, filepath: str | os.PathLike, name: str, extra: dict | None = None) -> None:
        self.filepath = os.fspath(filepath)
        self.name = name
        self.extra = dict(extra or {})

    def attach(self, engine: Engine) -> None:
        """Write the metrics when ``engine`` completes."""
        engine.add_event_handler(Events.COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        """Merge this engine's metrics into the file."""
        content: dict = {}
        if os.path.isfile(self.filepath):
            with open(self.filepath) as f:
                content = json.load(f)
        content[self.name] = {**{k: float(v) for k, v in engine.state.metrics.items()}, **self.extra}
        with atomic_paths(self.filepath) as (tmp,), open(tmp, "w") as f:
            json.dump(content, f, indent=2)
