"""Redraw the quality PNG charts from a finished run's ``quality_per_image.csv`` (no re-running of models).

Usage: python benchmarks/redraw_quality_charts.py [benchmarks/results/quality]
The CSV and Markdown of the run stay as the run wrote them; only the PNGs are (re)written.
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from srgan.runtime import charts  # noqa: E402
from srgan.runtime.bench import QualityReport, machine_info, read_quality_rows  # noqa: E402


def main() -> None:
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "benchmarks/results/quality")
    rows = read_quality_rows(out / "quality_per_image.csv")
    report = QualityReport(rows, list(dict.fromkeys(r.method for r in rows)), scale=4, machine=machine_info())
    for path in charts.quality_charts(report, out):
        print(path)


if __name__ == "__main__":
    main()
