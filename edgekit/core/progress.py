"""One progress display for long work: stage, model, step, elapsed time and an estimate.

Plain lines on stderr (they read well in CI logs and in a terminal alike). Stages call
`progress.update(...)`; the estimate comes from the fraction of the stage done so far.
"""
from __future__ import annotations

import sys
import time
from typing import TextIO


def _clock(seconds: float) -> str:
    seconds = int(max(0, seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


class Progress:
    """Prints `[elapsed] stage | model | step | ~left` lines; quiet=True prints nothing."""

    def __init__(self, stream: TextIO | None = None, quiet: bool = False) -> None:
        self._stream = stream
        self.quiet = quiet
        self.t0 = time.monotonic()
        self.stage_name = ""
        self.stage_t0 = self.t0

    @property
    def stream(self) -> TextIO:
        """The given stream, else the *current* sys.stderr (looked up per line, so a Progress
        made at import time still writes where stderr points now)."""
        return self._stream or sys.stderr

    def start_stage(self, name: str) -> None:
        self.stage_name = name
        self.stage_t0 = time.monotonic()
        self.update(f"{name} started")

    def update(self, what: str, model: str = "", fraction: float | None = None) -> None:
        """`fraction` (0..1) of the current stage done, for the remaining-time estimate."""
        if self.quiet:
            return
        now = time.monotonic()
        parts = [f"[{_clock(now - self.t0)}]", self.stage_name or "edgekit"]
        if model:
            parts.append(model)
        parts.append(what)
        if fraction and 0.0 < fraction < 1.0:
            left = (now - self.stage_t0) * (1.0 - fraction) / fraction
            parts.append(f"~{_clock(left)} left in {self.stage_name}")
        print(" | ".join(parts), file=self.stream, flush=True)

    def done(self, what: str = "") -> None:
        self.update(f"{self.stage_name or 'edgekit'} done in {_clock(time.monotonic() - self.stage_t0)}"
                    + (f" ({what})" if what else ""))
