"""Generated Markdown sections (``monai_kd.reporting``)."""

from __future__ import annotations

import pytest

from monai_kd.reporting import changes_table, markers, write_section


def test_section_is_replaced_and_the_rest_kept(tmp_path):
    begin, end = markers("bench")
    assert (begin, end) == ("<!-- bench:begin -->", "<!-- bench:end -->")
    doc = tmp_path / "README.md"
    doc.write_text(f"# title\n\nintro\n{begin}\nold table\n{end}\n\nanalysis\n")
    write_section(doc, "| a |\n|---|\n", "bench")
    assert doc.read_text() == f"# title\n\nintro\n{begin}\n| a |\n|---|\n{end}\n\nanalysis\n"
    write_section(doc, "new", "bench")  # idempotent structure: re-running replaces again
    assert doc.read_text().count("new") == 1 and "| a |" not in doc.read_text()


@pytest.mark.parametrize(
    "content",
    ["no markers", "<!-- results:begin -->\nonly begin", "<!-- results:end -->\n<!-- results:begin -->\nreversed",
     "<!-- results:begin -->\n<!-- results:end -->\n<!-- results:begin -->\n<!-- results:end -->\ntwice"],
)
def test_missing_or_ambiguous_markers_are_refused(content, tmp_path):
    doc = tmp_path / "README.md"
    doc.write_text(content)
    with pytest.raises(ValueError, match="must hold one"):
        write_section(doc, "table")
    assert doc.read_text() == content


def test_changes_table_gives_means_before_after_and_the_difference():
    before = [{"m": "a", "auc": 0.8}, {"m": "a", "auc": 0.9}, {"m": "b", "auc": 0.5}]
    after = [{"m": "a", "auc": 0.95}, {"m": "a", "auc": 0.85}, {"m": "a", "auc": 0.9}, {"m": "c", "auc": 0.7}]
    table = changes_table(before, after, lambda r: r["m"], {"AUC": lambda r: r["auc"]})
    lines = table.splitlines()
    assert len(lines) == 3  # header, rule, one row: only "a" is in both sets
    assert lines[2] == "| a | 2 -> 3 | 0.850 -> 0.900 (+0.050) |"
    assert changes_table(before, [], lambda r: r["m"], {"AUC": lambda r: r["auc"]}) == ""
