"""Regenerate the bad-input sweep table of ``docs/reliability.md`` from ``tests/test_bad_inputs.py``.

Usage: ``python scripts/reliability_doc.py`` (``--check`` exits 1 if the document is stale instead of writing).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "reliability.md"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only check that the table is up to date")
    args = parser.parse_args()
    sys.path.insert(0, str(REPO / "tests"))
    import test_bad_inputs as sweep

    text = DOC.read_text()
    head, rest = text.split(sweep.BEGIN, 1)
    _, tail = rest.split(sweep.END, 1)
    new = f"{head}{sweep.BEGIN}\n{sweep.reliability_table()}{sweep.END}{tail}"
    if args.check:
        print("up to date" if new == text else f"{DOC} is stale: run python scripts/reliability_doc.py")
        return 0 if new == text else 1
    DOC.write_text(new)
    print(f"wrote {DOC} ({len(sweep.CASES)} cases)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
