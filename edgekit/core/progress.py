"""One progress display for long work: stage, model, step, elapsed time and an estimate.

Plain lines on stderr (they read well in CI logs and in a terminal alike). Stages call
`progress.update(...)`; the estimate comes from the fraction of the stage done so far. Inside
library_log.stage_log the lines go to the terminal (fd 2 is then the stage's log), and a copy
goes to the log so each library message there sits under the step that caused it.
"""
from __future__ import annotations

import sys
import time
from typing import TextIO

from edgekit.core import library_log


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
        """The given stream, else the terminal's stderr as library_log knows it: the *current*
        sys.stderr outside stage_log (looked up per line, so a Progress made at import time still
        writes where stderr points now), the saved terminal inside it."""
        return self._stream or library_log.terminal_stderr()

    def start_stage(self, name: str) -> None:
        self.stage_name = name
        self.stage_t0 = time.monotonic()
        self.update(f"{name} started")

    def update(self, what: str, model: str = "", fraction: float | None = None) -> None:
        """`fraction` (0..1) of the current stage done, for the remaining-time estimate."""
        now = time.monotonic()
        parts = [f"[{_clock(now - self.t0)}]", self.stage_name or "edgekit"]
        if model:
            parts.append(model)
        parts.append(what)
        if fraction and 0.0 < fraction < 1.0:
            left = (now - self.stage_t0) * (1.0 - fraction) / fraction
            parts.append(f"~{_clock(left)} left in {self.stage_name}")
        line = " | ".join(parts)
        if not self.quiet:
            print(line, file=self.stream, flush=True)
        library_log.mark(line, f"{model} {what.split()[0]}" if model and what.strip() else model)

    def done(self, what: str = "") -> None:
        self.update(f"{self.stage_name or 'edgekit'} done in {_clock(time.monotonic() - self.stage_t0)}"
                    + (f" ({what})" if what else ""))
