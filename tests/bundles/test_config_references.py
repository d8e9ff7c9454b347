"""Every ``@id`` an evaluation config names exists in the configs it is layered over.

Evaluation configs are merged over a train config; when a train config is thinned (an id renamed or folded into a
component) a stale reference only fails when that evaluation runs. This resolves the reference ids statically.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PAIRS = sorted(
    (ev.parent / ("train_classification.json" if "classification" in ev.name else "train.json"), ev)
    for ev in REPO.glob("bundles/*/configs/evaluate*.json")
)


def _ids(config, prefix: str = "") -> set[str]:
    out = set()
    items = config.items() if isinstance(config, dict) else enumerate(config) if isinstance(config, list) else ()
    for k, v in items:
        key = f"{prefix}#{k}" if prefix else str(k)
        out |= {key} | _ids(v, key)
    return out


@pytest.mark.parametrize("train,evaluate", PAIRS, ids=[f"{e.parts[-3]}/{e.name}" for _, e in PAIRS])
def test_every_reference_of_the_evaluation_config_exists(train: Path, evaluate: Path) -> None:
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config([str(train), str(evaluate)])
    known = _ids(parser.config)
    refs = set(re.findall(r"@([A-Za-z0-9_#]+)", evaluate.read_text()))
    assert not sorted(r for r in refs if r not in known), f"{evaluate.name} names ids its configs do not define"
