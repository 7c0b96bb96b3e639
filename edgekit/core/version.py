"""edgekit's version: one place, read by the package root, the run directory's records and the wheel."""
__version__ = "0.1.0"
