"""Library output goes to a log file per stage; the terminal keeps edgekit's own lines.

TensorFlow, the TFLite converter ("fully_quantize: 0, inference_type: 6, ..."), XNNPACK ("INFO:
Created TensorFlow Lite XNNPACK delegate for CPU."), tf2onnx, modelscan and tf_keras write from
native code to file descriptors 1 and 2, or through Python's `logging`, `warnings` and sys.stderr.
`stage_log(run_dir, stage)` points all of these at `run_dir/logs/<stage>.log` for a `with` block:

    with stage_log(run_dir, "export"):
        export_run(run_dir, profile, progress=Progress())

Descriptors 1 and 2 are duplicated onto the log (so native writes and subprocesses that inherit
them land there too), sys.stdout/sys.stderr become the log, and logging handlers that wrote to
the console write to the log. edgekit's own lines reach the terminal through `terminal_stderr()`,
which Progress uses, and a known library message that costs something (tf2onnx skipping an
optimizer pass) becomes one `note:` line on the terminal per variant. Everything is restored on
exit, also on errors and Ctrl-C, so the CLI's one-line error message reaches the terminal.
The manifest records the log under `logs.<stage>` (relative path, size). `debug=True` changes
nothing (all output on the terminal, as without the block). Code that calls a stage directly
(export_run, bench_run) without this block prints what the libraries print.

A subprocess started inside the block inherits fds 1/2, so its library output goes to the log;
to show its own progress lines, pass it a pipe and its number in EDGEKIT_PROGRESS_FD (see
edgekit.export.contained): `terminal_stderr()` in the child then writes to that pipe.
"""
from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, TextIO

LOGS_DIR = "logs"
PROGRESS_FD_ENV = "EDGEKIT_PROGRESS_FD"
# (logger name prefix, message pattern, note): library messages worth one line on the terminal.
NOTES = (
    ("tf2onnx", re.compile(r"Failed to apply (\w+)"),
     "tf2onnx skipped its {0} optimizer pass; the ONNX file is still correct but may be larger or slower"),
)


@dataclass
class _Capture:
    """One active stage_log block: where the log is and where edgekit's own lines go."""
    log_path: Path
    shown_path: str                 # how notes name the log (run_dir/logs/<stage>.log)
    terminal: TextIO
    log_stream: TextIO
    where: str = ""                 # "<model> <variant>" of the latest progress line
    noted: set = field(default_factory=set)


_active: list[_Capture] = []
_inherited: list[TextIO] = []       # the EDGEKIT_PROGRESS_FD stream, opened once
# Taken out of the environment at import, before this process can start one of its own: a
# grandchild must not inherit a descriptor number it does not hold.
_progress_fd = os.environ.pop(PROGRESS_FD_ENV, None)


def terminal_stderr() -> TextIO:
    """Where edgekit's own lines go now: the terminal's stderr inside stage_log, the parent's
    progress pipe in a subprocess given one, else sys.stderr (looked up per call)."""
    if _active:
        return _active[-1].terminal
    return _inherited_stream() or sys.stderr


def active_log() -> Path | None:
    """The log file library output goes to now (None outside stage_log)."""
    return _active[-1].log_path if _active else None


def mark(line: str, where: str = "") -> None:
    """Copy one of edgekit's progress lines into the active log (so each library message there
    sits under the step that caused it) and remember which model and variant is being worked on."""
    if not _active:
        return
    _active[-1].where = where
    with contextlib.suppress(OSError, ValueError):
        _active[-1].log_stream.write(f"edgekit: {line.rstrip()}\n")
        _active[-1].log_stream.flush()


@contextlib.contextmanager
def stage_log(run_dir: str | os.PathLike, stage: str, debug: bool = False,
              keep_stdout: bool = False) -> Iterator[Path | None]:
    """Send library output to run_dir/logs/<stage>.log (appended) for the block; yields that path
    (None with debug=True, which leaves all output on the terminal). keep_stdout=True leaves
    Python's sys.stdout on the terminal, for a block that prints its own results there (the CLI's
    commands); native writes to fd 1 still go to the log."""
    if debug:
        yield None
        return
    run_dir = Path(run_dir)
    final = run_dir / LOGS_DIR / f"{stage}.log"
    existed = run_dir.is_dir()   # a stage that fails before creating its run directory leaves none
    fresh = not final.exists()
    try:
        if existed:
            final.parent.mkdir(exist_ok=True)
        log_path = final if existed else _temporary_log(stage)
    except OSError:              # no writable logs/ folder: the stage itself will say what is wrong
        existed, log_path = False, _temporary_log(stage)
    outer = terminal_stderr() if (_active or _inherited_stream()) else None
    _flush_all()
    saved = _dup_std_fds()
    log_stream = open(log_path, "a", buffering=1, encoding="utf-8", errors="replace")
    terminal = outer or _terminal_from(sys.stderr, 2, saved)
    stdout = _terminal_from(sys.stdout, 1, saved) if keep_stdout else log_stream
    capture = _Capture(log_path, str(final), terminal, log_stream)
    old_streams = sys.stdout, sys.stderr
    handlers: list[tuple[logging.StreamHandler, object]] = []
    note_handler = _NoteHandler(capture)
    interrupted = False
    try:
        if saved:
            for fd in (1, 2):
                os.dup2(log_stream.fileno(), fd)
        sys.stdout, sys.stderr = stdout, log_stream
        handlers = _redirect_handlers(old_streams, log_stream)
        logging.getLogger().addHandler(note_handler)
        _active.append(capture)
        yield final
    except KeyboardInterrupt:
        interrupted = True
        raise
    finally:
        if capture in _active:
            _active.remove(capture)
        logging.getLogger().removeHandler(note_handler)
        _flush_all()
        for ours, old in ((terminal, old_streams[1]), (stdout, old_streams[0])):
            if ours is not old and ours is not log_stream and ours is not outer:   # on a saved fd
                with contextlib.suppress(OSError, ValueError):
                    ours.close()
        _restore_handlers(handlers, log_stream, old_streams[1])
        sys.stdout, sys.stderr = old_streams
        if saved:
            for fd, copy in zip((1, 2), saved):
                os.dup2(copy, fd)
                os.close(copy)
        log_stream.close()
        if not existed:
            _move_in(log_path, final)
        elif fresh and final.stat().st_size == 0:   # nothing said: no file, no record
            final.unlink()
            with contextlib.suppress(OSError):
                final.parent.rmdir()
        if not interrupted:      # Ctrl-C must not wait for the manifest's lock
            _record(run_dir, stage, final)


class _NoteHandler(logging.Handler):
    """Turns the library messages in NOTES into one terminal line per model and variant, and
    writes warnings and errors no other handler puts in the log there (Python's lastResort
    would print them to stderr, but this handler on the root logger stands in its way)."""

    def __init__(self, capture: _Capture) -> None:
        super().__init__(logging.DEBUG)
        self.capture = capture
        self.setFormatter(logging.Formatter("%(levelname)s:%(name)s:%(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno >= logging.WARNING and not self._logged_elsewhere(record):
            with contextlib.suppress(Exception):
                self.capture.log_stream.write(self.format(record) + "\n")
        for prefix, pattern, note in NOTES:
            if not record.name.startswith(prefix):
                continue
            with contextlib.suppress(Exception):
                m = pattern.search(record.getMessage())
                if m is None:
                    continue
                text = note.format(*m.groups())
                if (self.capture.where, text) in self.capture.noted:
                    return
                self.capture.noted.add((self.capture.where, text))
                where = f"{self.capture.where}: " if self.capture.where else ""
                print(f"note: {where}{text} (details: {self.capture.shown_path})",
                      file=self.capture.terminal, flush=True)
            return

    def _logged_elsewhere(self, record: logging.LogRecord) -> bool:
        logger: logging.Logger | None = logging.getLogger(record.name)
        while logger is not None:
            if any(h is not self and getattr(h, "stream", None) is self.capture.log_stream
                   for h in logger.handlers):
                return True
            logger = logger.parent if logger.propagate else None
        return False


def _inherited_stream() -> TextIO | None:
    """The progress pipe a parent passed in EDGEKIT_PROGRESS_FD, opened on first use."""
    global _progress_fd
    if not _inherited and _progress_fd is not None:
        value, _progress_fd = _progress_fd, None
        with contextlib.suppress(ValueError, OSError):
            fd = int(value)
            os.fstat(fd)
            _inherited.append(open(fd, "w", buffering=1, encoding="utf-8", errors="replace", closefd=False))
    return _inherited[0] if _inherited else None


def _dup_std_fds() -> tuple[int, int] | None:
    """Copies of fds 1 and 2 to restore (None when the process has no such descriptors)."""
    try:
        out = os.dup(1)
    except OSError:
        return None
    try:
        return out, os.dup(2)
    except OSError:
        os.close(out)
        return None


def _terminal_from(stream: TextIO, fd: int, saved: tuple[int, int] | None) -> TextIO:
    """`stream` (sys.stdout, sys.stderr) itself unless it writes to `fd`, which is about to be the
    log: then a stream on the saved copy of `fd`. Under pytest's capsys or in Jupyter they are no
    descriptors and stay as they are."""
    try:
        on_fd = stream.fileno() == fd
    except (AttributeError, OSError, ValueError):
        on_fd = False
    if not on_fd or saved is None:
        return stream
    return open(saved[fd - 1], "w", buffering=1, encoding=getattr(stream, "encoding", None) or "utf-8",
                errors="replace", closefd=False)


def _redirect_handlers(consoles: tuple, log_stream: TextIO) -> list[tuple[logging.StreamHandler, object]]:
    """Console handlers of every logger so far (root, tf2onnx, tensorflow, absl, ...) pointed at
    the log; (handler, old stream). Handlers made later write to sys.stderr, the log by then."""
    console = {id(s) for s in (*consoles, sys.__stdout__, sys.__stderr__) if s is not None}
    changed = []
    for logger in [logging.getLogger(), *logging.root.manager.loggerDict.values()]:
        for h in getattr(logger, "handlers", ()):   # a PlaceHolder has none
            if type(h) is logging.StreamHandler or type(h).__module__.startswith("absl"):
                if id(getattr(h, "stream", None)) in console:
                    changed.append((h, h.setStream(log_stream)))
    return changed


def _restore_handlers(changed: list, log_stream: TextIO, stderr: TextIO) -> None:
    """Put changed handlers back; a handler made inside the block on the log gets stderr."""
    for h, old in changed:
        with contextlib.suppress(Exception):
            h.setStream(old)
    for logger in [logging.getLogger(), *logging.root.manager.loggerDict.values()]:
        for h in getattr(logger, "handlers", ()):
            if isinstance(h, logging.StreamHandler) and getattr(h, "stream", None) is log_stream:
                with contextlib.suppress(Exception):
                    h.setStream(stderr)


def _flush_all() -> None:
    """Python's and C's buffered output, written before the descriptors switch."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(AttributeError, OSError, ValueError):
            stream.flush()
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL(None).fflush(None)


def _temporary_log(stage: str) -> Path:
    fd, name = tempfile.mkstemp(prefix=f"edgekit-{stage}-", suffix=".log")
    os.close(fd)
    return Path(name)


def _move_in(tmp: Path, final: Path) -> None:
    """A run directory the stage created: its log joins it; otherwise the log goes."""
    try:
        if final.parent.parent.is_dir() and tmp.stat().st_size:
            final.parent.mkdir(exist_ok=True)
            with open(final, "ab") as out:
                out.write(tmp.read_bytes())
    except OSError:
        pass
    finally:
        tmp.unlink(missing_ok=True)


def _record(run_dir: Path, stage: str, log: Path) -> None:
    """logs.<stage> in the manifest (path relative to the run, size); never masks the stage's error."""
    from edgekit.core import rundir
    from edgekit.errors import EdgekitError

    if not (run_dir / rundir.MANIFEST).exists() or not log.exists():
        return
    entry = {"path": f"{LOGS_DIR}/{log.name}", "size_bytes": log.stat().st_size}
    with contextlib.suppress(EdgekitError, OSError, ValueError):
        rundir.update_manifest(run_dir, lambda m: m.setdefault("logs", {}).__setitem__(stage, entry))
