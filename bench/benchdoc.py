"""Insert a benchmark's result row at the end of its own table in docs/benchmarks.md."""

from __future__ import annotations

import datetime
import platform
from pathlib import Path

DOC = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"


def record(section: str, device: str, *cells: str) -> str:
    """Print and record the row `| today | host (device) | cells... |` in `section`'s table."""
    row = "| " + " | ".join([str(datetime.date.today()), f"{platform.node()} ({device})", *cells]) + " |"
    print(row)
    record_row(section, row)
    return row


def record_row(section: str, row: str) -> None:
    """Add `row` after the last table line of the `## {section}...` heading (which must exist)."""
    lines = DOC.read_text().splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith(f"## {section}")), None)
    if start is None:
        raise SystemExit(f"{DOC}: no section starting with '## {section}'")
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
    table = [i for i in range(start, end) if lines[i].startswith("|")]
    if not table:
        raise SystemExit(f"{DOC}: section '{section}' has no table header")
    lines.insert(table[-1] + 1, row)
    DOC.write_text("\n".join(lines) + "\n")
