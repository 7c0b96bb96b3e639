"""Stage 4, `edgekit check`: the CI gate, every threshold of a profile against the run's records and
an optional baseline (`check.json`, exit code)."""
from edgekit.gate.check import CheckResult, check_run

__all__ = ["CheckResult", "check_run"]
