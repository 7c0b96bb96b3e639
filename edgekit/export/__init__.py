"""Stage 2, `edgekit export`: QAT and every variant's file from a trained network or a user's model file,
each checked against its source (`export/<net>/`, `export/parity.json`)."""
from edgekit.export.stage import export_model, export_run

__all__ = ["export_model", "export_run"]
