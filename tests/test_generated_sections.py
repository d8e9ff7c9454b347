"""Generated README sections match what their scripts render from the committed records and benchmark JSON.

A section rendered before a benchmark was re-run keeps the old latency (the kd fast section once showed a teacher 58 ms
at batch 64 after the idle re-run had measured 42 ms): every section beside a latency is re-rendered here from the
files in git and compared with the README's text. Nothing is trained or timed."""

from __future__ import annotations

import json

import pytest

from conftest import REPO, load_script
from monai_kd.reporting import markers

BENCH = REPO / "docs" / "bench_latency.json"


def _section(readme, name: str) -> str:
    begin, end = markers(name)
    return readme.read_text().split(begin, 1)[1].split(end, 1)[0].strip()


def _json(path):
    return json.loads(path.read_text()) if path.is_file() else {}


@pytest.mark.parametrize("bundle, script", [("emtkd", "emtkd_evidence"), ("kdml_cls", "kdml_evidence"),
                                            ("weckd", "weckd_evidence")])
def test_fast_sections_are_rendered_from_the_committed_records(bundle, script):
    docs = REPO / "bundles" / bundle / "docs"
    text = load_script(script).fast_markdown(_json(docs / "results_fast.json"), _json(docs / "results.json"), _json(BENCH))
    assert text.strip() == _section(docs / "README.md", "fast")


def test_kd_fast_section_is_rendered_from_the_committed_records():
    docs = REPO / "bundles" / "kd" / "docs"
    text = load_script("fast_evidence").markdown(_json(docs / "results_fast.json"), _json(BENCH))
    assert text.strip() == _section(docs / "README.md", "fast")


def test_mmkd_results_section_is_rendered_from_the_committed_records():
    docs = REPO / "bundles" / "mmkd" / "docs"
    text = load_script("mmkd_evidence").render(_json(docs / "results.json"), _json(BENCH))
    assert text.strip() == _section(docs / "README.md", "results")
