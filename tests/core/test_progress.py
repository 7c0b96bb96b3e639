"""Progress lines: stage, model, step, elapsed time and the remaining-time estimate."""
from __future__ import annotations

import io

import pytest

from edgekit.core import progress as progress_mod
from edgekit.core.progress import Progress, _clock


class Clock:
    """A settable monotonic clock, so elapsed/left figures are exact."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture()
def clock(monkeypatch) -> Clock:
    c = Clock()
    monkeypatch.setattr(progress_mod.time, "monotonic", c)
    return c


def test_clock_format():
    assert _clock(0) == "00:00" and _clock(59.9) == "00:59" and _clock(61) == "01:01"
    assert _clock(3600 + 62) == "1:01:02" and _clock(-5) == "00:00"


def test_lines_and_estimate(clock):
    out = io.StringIO()
    p = Progress(stream=out)
    clock.now += 5
    p.start_stage("train")
    clock.now += 30
    p.update("epoch 1/4", model="cnn", fraction=0.25)
    clock.now += 30
    p.update("epoch 4/4", model="cnn", fraction=1.0)
    p.update("saving")  # no model, no fraction
    p.done("2 models")
    assert out.getvalue().splitlines() == [
        "[00:05] | train | train started",
        "[00:35] | train | cnn | epoch 1/4 | ~01:30 left in train",  # 30 s for 1/4: 90 s to go
        "[01:05] | train | cnn | epoch 4/4",
        "[01:05] | train | saving",
        "[01:05] | train | train done in 01:00 (2 models)",
    ]


@pytest.mark.parametrize("fraction", [None, 0.0, 1.0, 1.5, -0.1])
def test_no_estimate_outside_open_interval(clock, fraction):
    out = io.StringIO()
    Progress(stream=out).update("step", fraction=fraction)
    assert "left" not in out.getvalue() and out.getvalue().startswith("[00:00] | edgekit | step")


def test_quiet_prints_nothing(capsys):
    p = Progress(quiet=True)
    p.start_stage("export")
    p.update("x", model="cnn", fraction=0.5)
    p.done()
    assert capsys.readouterr() == ("", "")


def test_default_stream_is_the_current_stderr(capsys):
    p = Progress()
    p.update("hello")
    p.done()
    captured = capsys.readouterr()
    assert captured.out == "" and "edgekit | hello" in captured.err and "edgekit done in" in captured.err
    assert p.stream is __import__("sys").stderr


def test_no_shared_progress_at_module_level():
    """A default Progress is made per call: one shared instance would carry a stage name (and its
    clock) from one caller into the next."""
    assert not [name for name, value in vars(progress_mod).items() if isinstance(value, Progress)]
