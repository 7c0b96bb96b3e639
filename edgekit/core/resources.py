"""This process's memory, as the kernel counts it: the peak resident set (VmHWM) since a reset,
so a stage, a variant or a bench session can say how much memory it took (Linux; elsewhere the
peak since the process started)."""
from __future__ import annotations

import contextlib
import sys
import time
from typing import Iterator


def _status_kb(field: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def reset_peak_rss() -> bool:
    """Reset the kernel's high-water mark to the current RSS (Linux >= 4.0); False if unsupported,
    in which case peak_rss_mb is the process's peak since it started."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def release_memory() -> None:
    """Collect garbage and hand free heap pages back to the OS (glibc malloc_trim), so memory an
    earlier piece of work freed does not count in the next one's peak."""
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to trim
        pass


def rss_mb() -> float | None:
    kb = _status_kb("VmRSS")
    return None if kb is None else round(kb / 1024.0, 2)


def peak_rss_mb() -> float:
    """VmHWM: the peak resident set of this whole process since the last reset."""
    kb = _status_kb("VmHWM")
    if kb is not None:
        return round(kb / 1024.0, 2)
    import resource  # not Linux: ru_maxrss is KiB on Linux, bytes on macOS

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / (1024.0 * 1024.0) if sys.platform == "darwin" else peak / 1024.0, 2)


@contextlib.contextmanager
def stage_resources(run_dir, stage: str) -> Iterator[None]:
    """Time a stage and the peak RSS of this process during it, and record both in the manifest's
    `resources` section (`resources.<stage>`), only if the stage finished. Worker subprocesses
    (bench runtimes, emulated CPUs, a contained export) are not counted here: the bench records
    its workers' own peaks in results.json."""
    from pathlib import Path

    from edgekit.core import rundir

    release_memory()
    reset_peak_rss()
    t0 = time.monotonic()
    yield
    if not (Path(run_dir) / rundir.MANIFEST).is_file():
        return
    rec = {"seconds": round(time.monotonic() - t0, 3), "peak_rss_mb": peak_rss_mb(),
           "measured": "this process (VmHWM since the stage started)", "finished_utc": rundir.utc_now()}
    rundir.update_manifest(run_dir, lambda m: m.setdefault("resources", {}).__setitem__(stage, rec))
