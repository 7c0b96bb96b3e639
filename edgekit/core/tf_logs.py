"""Quiet TensorFlow start-up: its absl log lines below TF_CPP_MIN_LOG_LEVEL, nothing else.

TF 2.21 logs through absl. Its LoggingInitializer (a static constructor in
libtensorflow_framework.so.2 and again in _pywrap_profiler_plugin.so, each with its own absl)
applies TF_CPP_MIN_LOG_LEVEL, but other static constructors of the same libraries log first
("cudart_stub.cc:31] Could not find cuda drivers", "port.cc:153] oneDNN custom operations",
absl's "All log messages before absl::InitializeLog()..."), so no environment variable can
silence them. edgekit therefore sets TF_CPP_MIN_LOG_LEVEL (if unset) and, for the first
`import tensorflow` only, routes fd 2 through a tiny filter process that drops the absl/TSL log
lines below that same level and forwards every other byte at once (Python warnings,
tracebacks, a crash message: nothing is delayed or lost, even if TensorFlow aborts).
EDGEKIT_TF_LOG=1 leaves TensorFlow's logging completely alone.
"""
import os
import sys

TF_MIN_LOG_LEVEL_DEFAULT = "3"  # 2 would still print "E ... failed call to cuInit" on every CPU-only run

_LOG_FILTER = r"""
import os, re, signal, sys
signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is for the parent; EOF ends the filter
level = int(sys.argv[1])
absl = re.compile(rb"^(?:([IWEF])\d{4} \d\d:\d\d:\d+\.\d+ +\d+ "
                  rb"|\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+: ([IWEF]) )\S+:\d+\] ")
notice = b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR"
out = sys.stdout.buffer
for line in sys.stdin.buffer:
    m = absl.match(line)
    if m and "IWEF".index((m.group(1) or m.group(2)).decode()) < level:
        continue
    if line.rstrip(b"\r\n") == notice:
        continue
    out.write(line)
    out.flush()
"""


def _tf_min_log_level() -> int:
    """TF_CPP_MIN_LOG_LEVEL as TensorFlow parses it (a leading integer; anything else is 0)."""
    import re

    m = re.match(r"\s*(\d+)", os.environ.get("TF_CPP_MIN_LOG_LEVEL", ""))
    return int(m.group(1)) if m else 0


class _QuietTensorFlowImport:
    """One-shot meta-path finder: wraps the loader of the top-level `tensorflow` package."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname != "tensorflow":
            return None
        import importlib.util

        if self in sys.meta_path:
            sys.meta_path.remove(self)  # one shot; also keeps the lookup below from recursing
        spec = importlib.util.find_spec(fullname)
        if spec is not None and spec.loader is not None and hasattr(spec.loader, "exec_module"):
            spec.loader = _FilteredLoader(spec.loader)
        return spec


class _FilteredLoader:
    def __init__(self, loader) -> None:
        self._loader = loader

    def __getattr__(self, name):
        return getattr(self._loader, name)

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module) -> None:
        try:
            with _stderr_filtered(_tf_min_log_level()):
                self._loader.exec_module(module)
        finally:  # leave no trace of the wrapper on the module
            module.__loader__ = self._loader
            if getattr(module, "__spec__", None) is not None:
                module.__spec__.loader = self._loader


class _stderr_filtered:
    """Route fd 2 through the filter process for the duration of a `with` block."""

    def __init__(self, level: int) -> None:
        self.level, self.proc, self.saved = level, None, None

    def __enter__(self):
        if self.level <= 0 or not sys.executable:
            return self
        import subprocess

        try:
            _flush_stderr()
            self.saved = os.dup(2)
            self.proc = subprocess.Popen([sys.executable, "-I", "-S", "-c", _LOG_FILTER, str(self.level)],
                                         stdin=subprocess.PIPE, stdout=self.saved, stderr=self.saved)
            os.dup2(self.proc.stdin.fileno(), 2)
        except OSError:  # no fd 2 or no way to start a process: leave stderr as it is
            self._restore()
        return self

    def __exit__(self, *exc) -> None:
        self._restore()

    def _restore(self) -> None:
        if self.saved is not None:
            _flush_stderr()
            os.dup2(self.saved, 2)
            os.close(self.saved)
            self.saved = None
        if self.proc is not None:
            import subprocess

            self.proc.stdin.close()  # EOF: the filter forwards what is left and exits
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:  # a process TF started still holds the pipe
                self.proc.kill()
            self.proc = None


def _flush_stderr() -> None:
    try:
        sys.stderr.flush()
    except (AttributeError, OSError, ValueError):
        pass


def install() -> None:
    """Set TF_CPP_MIN_LOG_LEVEL (if unset) and filter the first `import tensorflow`; edgekit's
    __init__ calls it before anything can import TensorFlow. EDGEKIT_TF_LOG=1: does nothing."""
    if os.environ.get("EDGEKIT_TF_LOG", "0").strip() not in ("", "0"):
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", TF_MIN_LOG_LEVEL_DEFAULT)
    if "tensorflow" not in sys.modules and not any(type(f).__name__ == "_QuietTensorFlowImport"
                                                   for f in sys.meta_path):  # once, even on reload
        sys.meta_path.insert(0, _QuietTensorFlowImport())
