"""Stage 5, `edgekit report`: `report.md`, `report.html` and `plots/*.png` from the manifest,
`results.json` and `check.json`."""
from edgekit.report.stage import render_report

__all__ = ["render_report"]
