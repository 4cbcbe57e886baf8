"""The scripts' shared output: a dict of rows as a Markdown table, and optionally as JSON."""

from __future__ import annotations

from typing import Any

from text2lora._io import atomic_write_json


def report(first: str, rows: dict[str, dict[str, float]], json_path: str | None = None, **meta: Any) -> int:
    """Print ``{row label: {column: value}}`` as a Markdown table (columns from the first row, values
    to 3 decimals, NaN where a row lacks a column); with ``json_path``, also write ``meta`` plus
    ``rows`` there. Returns 0, the scripts' exit status."""
    cols = list(next(iter(rows.values())))
    print(f"| {first} | " + " | ".join(cols) + " |")
    print("|---|" + "---:|" * len(cols))
    for label, row in rows.items():
        print(f"| {label} | " + " | ".join(f"{row.get(c, float('nan')):.3f}" for c in cols) + " |")
    if json_path:
        atomic_write_json(json_path, {**meta, "rows": rows})
    return 0
