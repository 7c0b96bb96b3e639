"""Run exported files under qemu-user with another CPU model: int8 parity on CPUs nobody here owns.

ONNX Runtime (MLAS) and XNNPACK pick their int8 kernels from the CPU they find at run time, so
the same file can compute different outputs on an AVX2-only CPU (U8S8 through VPMADDUBSW, whose
int16 pair sums saturate), a VNNI one, an SSE4 one or an ARM64 one. qemu-user translates every
instruction of the emulated CPU exactly, and answers CPUID (x86) or the auxiliary vector's HWCAP
(ARM64) as that CPU would, so the runtimes dispatch that CPU's kernels and their outputs are the
ones that CPU computes. Emulation is slow (a quick-run CNN int8 ONNX file under Haswell: ~50x
native CPU time with fused kernels, ~200x unfused) and says nothing about speed: latency is never
measured here, only outputs.

One qemu process per call runs every file, with both the fast kernels (ORT graph optimizations
"all", LiteRT with XNNPACK) and the reference ones (ORT optimizations off: the QDQ graph's own
meaning; LiteRT's builtin kernels), because starting Python and the runtimes under emulation is
the cost. The child is `python -m edgekit.verify.emulation --worker ...`: it imports numpy, the runtime
and edgekit's runtime wrappers (the same code the native parity runs), never TensorFlow.
"""
from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from functools import lru_cache
from pathlib import Path

import numpy as np

from edgekit.core.machine import EMULATED_CPUS, EmulatedCpu
from edgekit.core.variants import Format, file_format
from edgekit.errors import ConfigError, EdgekitError, ModelError

KINDS = ("fast", "reference")  # fast: ORT "all" / XNNPACK on; reference: ORT "disable" / builtin kernels
_PACKAGE_PARENT = Path(__file__).resolve().parents[2]  # puts `edgekit` on the child's path
_QEMU_NOISE = ("TCG doesn't support requested feature", "Error in cpuinfo:", "cpuid_info warning:",
               "onnxruntime warning: cpuinfo_initialize failed", "Created TensorFlow Lite XNNPACK delegate")


def label(cpu: str) -> str:
    """How results name a parity CPU ('native' is this machine, never emulated)."""
    if cpu == "native":
        return "native"
    return _get(cpu).label


def arm64_dir() -> Path:
    """Where scripts/setup_arm64.sh keeps the arm64 sysroot and wheels."""
    explicit = os.environ.get("EDGEKIT_ARM64_DIR")
    if explicit:
        return Path(explicit)
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "edgekit" / "arm64"


def available(cpu: str) -> tuple[bool, str]:
    """(usable, why not): False with the reason and the fix when qemu or the sysroot is missing."""
    if cpu == "native":
        return True, ""
    spec = _get(cpu)
    if shutil.which(spec.qemu) is None:
        return False, f"{spec.qemu} is not installed (Debian/Ubuntu: apt-get install qemu-user)"
    if spec.arch == "x86_64" and platform.machine() not in ("x86_64", "AMD64"):
        return False, (f"{cpu} runs this venv's own x86_64 Python under {spec.qemu}; "
                       f"this host is {platform.machine()}")
    if spec.arch == "aarch64":
        root = arm64_dir()
        if not (root / "READY").is_file():
            return False, f"no arm64 sysroot at {root}; run: bash scripts/setup_arm64.sh"
        stale = _stale_wheels((root / "READY").read_text())
        if stale:
            return False, (f"the arm64 sysroot at {root} has other versions than this venv "
                           f"({', '.join(stale)}); run: bash scripts/setup_arm64.sh")
        if _unshare_prefix(str(root)) is None:
            return False, ("cannot bind a fake /proc/cpuinfo in a private mount namespace "
                           "(needs root or unprivileged user namespaces for `unshare`)")
    if spec.arch == "x86_64":
        return _numpy_runs(cpu)
    return True, ""


@lru_cache(maxsize=None)
def _numpy_runs(cpu: str) -> tuple[bool, str]:
    """Whether this venv's numpy starts on the emulated x86 CPU: the emulated run uses the venv's
    own wheels, and a numpy wheel built for a newer baseline (seen here: one needing AVX) dies with
    an illegal instruction on an SSE4-only model, so that row cannot be measured with it."""
    from importlib.metadata import version

    cmd, env = _command(_get(cpu), ["-c", "import numpy"])
    try:
        rc = subprocess.run(cmd, env=env, capture_output=True, timeout=300).returncode
    except subprocess.TimeoutExpired:
        return False, f"this venv's Python did not start under {label(cpu)} within 300 s"
    if rc == 0:
        return True, ""
    why = "illegal instruction: the wheel needs a newer CPU" if rc in (-4, 132) else f"exit code {rc}"
    return False, (f"this venv's numpy {version('numpy')} does not start under {label(cpu)} ({why}); "
                   f"a numpy built for that CPU is needed to measure it")


def run_emulated(cpu: str, files: list[Path], x: np.ndarray, timeout_s: float | None = None,
                 batch_size: int = 256, kinds: tuple[str, ...] = KINDS) -> dict[str, dict[str, np.ndarray]]:
    """Outputs of each file under the emulated `cpu`: {str(file): {"fast": y, "reference": y}}.

    `x` is float32 in the model's input convention, as for the native parity (int8-I/O TFLite
    files are fed through the file's own scale and zero point by edgekit's LiteRT wrapper); each
    y is float32, dequantized. One qemu process runs all files, one thread each. `kinds=("fast",)`
    skips the reference kernels, about 3/4 of the emulated time on a CNN (unfused QDQ graphs).
    """
    ok, why = available(cpu)
    if not ok:
        raise ConfigError(f"parity CPU '{cpu}' is not available: {why}")
    if cpu == "native":
        raise ConfigError("run_emulated is for emulated CPUs; the native parity runs in-process")
    files = [Path(f) for f in files]
    if not kinds or set(kinds) - set(KINDS):
        raise ConfigError(f"kinds must be a non-empty subset of {KINDS}, got {kinds}")
    for f in files:
        file_format(f, "emulated parity")
        if not f.is_file():
            raise ConfigError(f"{f}: no such file to run under {cpu}")
    with tempfile.TemporaryDirectory(prefix="edgekit-emu-") as tmp:
        inp, out = Path(tmp) / "inputs.npz", Path(tmp) / "outputs.npz"
        np.savez(inp, x=np.ascontiguousarray(x, dtype=np.float32))
        worker = ["-m", "edgekit.verify.emulation", "--worker", str(inp), str(out), str(batch_size),
                  ",".join(kinds), *[str(f.resolve()) for f in files]]
        argv, env = _command(_get(cpu), worker)
        try:
            proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout_s)
        except subprocess.TimeoutExpired as e:
            raise ModelError(f"{cpu}: the emulated run took over {timeout_s:.0f} s; "
                             f"pass fewer images or a longer timeout") from e
        if proc.returncode != 0 or not out.is_file():
            raise ModelError(f"{cpu}: the emulated run failed (exit {proc.returncode}): "
                             f"{_last_line(proc.stderr)}")
        with np.load(out) as z:
            results = {str(f): {k: z[f"{i}.{k}"] for k in kinds}
                       for i, f in enumerate(files) if f"{i}.error" not in z}
            errors = {str(f): str(z[f"{i}.error"]) for i, f in enumerate(files) if f"{i}.error" in z}
    if errors:
        path, msg = next(iter(errors.items()))
        raise ModelError(f"{path}: cannot run under {label(cpu)}: {msg}")
    return results


def child_features(cpu: str) -> dict:
    """What the emulated CPU told the child (x86: the CPUID bits ORT dispatches on; arm64: HWCAP's
    asimddp/i8mm), so a result can show the kernel family was the one its label claims."""
    ok, why = available(cpu)
    if not ok:
        raise ConfigError(f"parity CPU '{cpu}' is not available: {why}")
    argv, env = _command(_get(cpu), ["-m", "edgekit.verify.emulation", "--features"])
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        raise ModelError(f"{cpu}: the emulated probe failed (exit {proc.returncode}): {_last_line(proc.stderr)}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# --- the parent side: how a CPU's child process is started -------------------------------------

def _get(cpu: str) -> EmulatedCpu:
    try:
        return EMULATED_CPUS[cpu]
    except KeyError as e:
        raise ConfigError(f"unknown parity CPU '{cpu}'; use native or one of {', '.join(EMULATED_CPUS)}") from e


def _command(spec: EmulatedCpu, python_args: list[str]) -> tuple[list[str], dict]:
    if spec.arch == "x86_64":
        # The venv's own interpreter and packages: the native run's exact binaries, another CPU.
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(
            [str(_PACKAGE_PARENT), *filter(None, [os.environ.get("PYTHONPATH")])]))
        return [shutil.which(spec.qemu), "-cpu", spec.model, sys.executable, *python_args], env
    root = arm64_dir()
    sysroot = root / "sysroot"
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8", "HOME": str(root),
           "PYTHONPATH": os.pathsep.join([str(root / "site"), str(_PACKAGE_PARENT)]),
           "PYTHONDONTWRITEBYTECODE": "1"}
    qemu = [shutil.which(spec.qemu), "-cpu", spec.model, "-L", str(sysroot),
            str(sysroot / "usr" / "bin" / "python3.11"), *python_args]
    return [*_unshare_prefix(str(root)), *qemu], env


# ORT's cpuinfo library parses the host's x86 /proc/cpuinfo and /sys/devices/system/cpu as if
# they were ARM's and crashes; in a private mount namespace, an empty directory and an aarch64
# cpuinfo (written by setup_arm64.sh) are bound over them, for the child alone.
_BIND = ('mount --bind "$1" /sys/devices/system/cpu && mount --bind "$2" /proc/cpuinfo '
         '&& shift 2 && exec "$@"')


@lru_cache(maxsize=4)
def _unshare_prefix(root: str) -> tuple[str, ...] | None:
    """The unshare command that can bind those files here (root: -m; others: a user namespace)."""
    unshare = shutil.which("unshare")
    if unshare is None:
        return None
    bind = ("sh", "-c", _BIND, "sh", str(Path(root) / "empty"), str(Path(root) / "cpuinfo"))
    options = [("-m",), ("-r", "-m")] if os.geteuid() == 0 else [("-r", "-m")]
    for opts in options:
        prefix = (unshare, *opts, *bind)
        try:
            if subprocess.run([*prefix, "true"], capture_output=True, timeout=30).returncode == 0:
                return prefix
        except (OSError, subprocess.TimeoutExpired):
            continue
    return None


def _stale_wheels(ready: str) -> list[str]:
    """The runtimes whose venv version the sysroot's READY stamp does not name (setup_arm64.sh
    writes `name==version` for each), so an upgraded venv is never compared with an old arm64 ORT."""
    from importlib.metadata import PackageNotFoundError, version

    stale = []
    for name in ("onnxruntime", "numpy", "ai-edge-litert"):
        try:
            pinned = f"{name}=={version(name)}"
        except PackageNotFoundError:
            continue
        if pinned not in ready.split():
            stale.append(pinned)
    return stale


def _last_line(stderr: str) -> str:
    lines = [ln for ln in stderr.splitlines() if ln.strip() and not any(n in ln for n in _QEMU_NOISE)]
    return lines[-1].strip() if lines else "no message (killed by a signal?)"


# --- the child side: runs under qemu, imports numpy and one runtime only ---------------------

def _open(path: Path, kind: str):
    if file_format(path, "emulated parity") is Format.ONNX:
        from edgekit.runtimes.onnxrt import ORTSession
        return ORTSession(path, threads=1, graph_optimization="all" if kind == "fast" else "disable")
    from edgekit.runtimes.litert import LiteRTSession
    return LiteRTSession(path, threads=1, xnnpack=kind == "fast")


def _worker(inputs: Path, outputs: Path, batch_size: int, kinds: list[str], files: list[Path]) -> None:
    with np.load(inputs) as z:
        x = z["x"]
    arrays: dict[str, np.ndarray] = {}
    for i, path in enumerate(files):
        try:
            for kind in kinds:
                arrays[f"{i}.{kind}"] = _open(path, kind).predict(x, batch_size=batch_size)
        except Exception as e:  # reported per file to the parent, which raises a ModelError
            for kind in kinds:
                arrays.pop(f"{i}.{kind}", None)
            msg = str(e) if isinstance(e, EdgekitError) else f"{type(e).__name__}: {e}"
            arrays[f"{i}.error"] = np.array(msg.removeprefix(f"{path}: "))
    tmp = outputs.with_name(outputs.name + ".part.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, outputs)


def _features() -> dict:
    """The emulated CPU's int8-relevant features, as the child sees them."""
    machine = platform.machine()
    if machine == "aarch64":
        import ctypes

        getauxval = ctypes.CDLL(None).getauxval
        getauxval.restype = ctypes.c_ulong
        hwcap, hwcap2 = getauxval(16), getauxval(26)  # AT_HWCAP, AT_HWCAP2
        flags = {"asimd": bool(hwcap & (1 << 1)), "asimddp": bool(hwcap & (1 << 20)),
                 "i8mm": bool(hwcap2 & (1 << 13))}  # HWCAP_ASIMD, HWCAP_ASIMDDP, HWCAP2_I8MM
    else:  # CPUID as numpy's dispatcher read it, in machine.X86_INT8_FLAGS spelling
        from numpy._core._multiarray_umath import __cpu_features__ as cpuid

        names = {"sse4_1": "SSE41", "avx2": "AVX2", "fma": "FMA3", "avx512f": "AVX512F",
                 "avx512bw": "AVX512BW", "avx512_vnni": "AVX512VNNI"}
        flags = {ours: bool(cpuid.get(theirs)) for ours, theirs in names.items()}
    return {"machine": machine, "flags": [k for k, v in flags.items() if v]}


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["--worker"] and len(args) >= 5:
        _worker(Path(args[1]), Path(args[2]), int(args[3]), args[4].split(","), [Path(a) for a in args[5:]])
        return 0
    if args[:1] == ["--features"]:
        print(json.dumps(_features()))
        return 0
    print("usage: python -m edgekit.verify.emulation --worker INPUTS.npz OUTPUTS.npz BATCH KINDS FILE... | --features",
          file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
