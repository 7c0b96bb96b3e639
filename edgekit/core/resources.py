"""This process's memory, as the kernel counts it: the peak resident set (VmHWM) since a reset,
so a stage, a variant or a bench session can say how much memory it took (Linux; elsewhere the
peak since the process started)."""
from __future__ import annotations

import sys


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
