"""The example of docs/python.md runs on the miniature database and prints what it promises;
the document includes it whole."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "quickstart.py"
DOC = Path(__file__).resolve().parents[2] / "docs" / "python.md"


def test_the_documented_example_runs(demo):
    done = subprocess.run(
        [sys.executable, str(EXAMPLE), demo["normdb"], demo["case"], str(demo["age"]), demo["sex"]],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    for expected in ("bracket ", "case on the template grid:", "Deviation(", "cluster 1:", "written:"):
        assert expected in done.stdout, (expected, done.stdout)


def test_the_document_shows_the_example_as_it_is():
    doc = DOC.read_text()
    start = doc.index("```python\n# python/examples/quickstart.py\n") + len("```python\n# python/examples/quickstart.py\n")
    shown = doc[start : doc.index("```", start)]
    assert shown == EXAMPLE.read_text()
