"""Which CPU a figure comes from: model name, and the instruction-set flags that pick int8 kernels.

int8 results depend on more than the file: ONNX Runtime (MLAS) and XNNPACK choose their integer
kernels by CPU feature. On x86 with AVX2 but no VNNI, u8 x s8 products go through VPMADDUBSW
(int16 pair sums, which saturate); with AVX512-VNNI or AVX-VNNI, VPDPBUSD accumulates in int32;
AMX adds tile kernels. On ARM64, SDOT/UDOT (asimddp) and SMMLA (i8mm) do the same job. So every
result records these flags, and comparisons (check --baseline) only pair like with like.
"""
from __future__ import annotations

import platform
from functools import lru_cache
from dataclasses import dataclass
from pathlib import Path

# Flags that change which int8 kernels run, as /proc/cpuinfo spells them.
X86_INT8_FLAGS = ("sse4_1", "avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "amx_int8")
ARM_INT8_FLAGS = ("asimd", "asimddp", "i8mm", "sve", "sve2")


def _cpuinfo() -> str:
    try:
        return Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""


def cpu_model(cpuinfo: str | None = None) -> str:
    text = _cpuinfo() if cpuinfo is None else cpuinfo
    for line in text.splitlines():
        key = line.split(":", 1)[0].strip().lower()
        if key in ("model name", "hardware", "cpu model") and ":" in line:
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine() or "unknown"


def cpu_flags(cpuinfo: str | None = None, arch: str | None = None) -> tuple[str, ...]:
    """The int8-relevant flags this CPU advertises (x86 'flags' or ARM 'Features' line)."""
    text = _cpuinfo() if cpuinfo is None else cpuinfo
    arch = arch or platform.machine()
    wanted = ARM_INT8_FLAGS if arch in ("aarch64", "arm64") else X86_INT8_FLAGS
    seen: set[str] = set()
    for line in text.splitlines():
        key = line.split(":", 1)[0].strip().lower()
        if key in ("flags", "features") and ":" in line:
            seen.update(line.split(":", 1)[1].split())
    return tuple(f for f in wanted if f in seen)


def cpu_class(flags: tuple[str, ...] | list[str], arch: str | None = None) -> str:
    """A short class name for the int8 kernel family this CPU gets, e.g. 'x86-avx2' (no VNNI)."""
    arch = arch or platform.machine()
    f = set(flags)
    if arch in ("aarch64", "arm64"):
        return "arm64-i8mm" if "i8mm" in f else "arm64-dotprod" if "asimddp" in f else "arm64"
    if arch not in ("x86_64", "AMD64", "i686", "x86"):
        return arch or "unknown"
    if "amx_int8" in f:
        return "x86-amx"
    if "avx512_vnni" in f:
        return "x86-avx512-vnni"
    if "avx_vnni" in f:
        return "x86-avx-vnni"
    if "avx512bw" in f:
        return "x86-avx512"
    if "avx2" in f:
        return "x86-avx2"
    return "x86-sse4" if "sse4_1" in f else "x86"


def has_int8_dot_product(cls: str) -> bool:
    """True where the ISA multiplies-and-accumulates int8 in int32 (VNNI, AMX, ARM dotprod/i8mm):
    the CPUs on which int8 is expected to beat fp32 at these model sizes."""
    return cls in ("x86-amx", "x86-avx512-vnni", "x86-avx-vnni", "arm64-dotprod", "arm64-i8mm")


@lru_cache(maxsize=1)
def describe() -> dict:
    """This machine's CPU, for results.json, the manifest and the report."""
    arch = platform.machine()
    flags = cpu_flags(arch=arch)
    cls = cpu_class(flags, arch)
    return {"cpu_model": cpu_model(), "arch": arch, "int8_flags": list(flags), "cpu_class": cls,
            "int8_dot_product": has_int8_dot_product(cls)}


def same_cpu(a: dict | None, b: dict | None) -> tuple[bool, str]:
    """(comparable, why not) for two `describe()` records: same model name and same int8 flags."""
    if not a or not b:
        return False, "one of the two results does not record its CPU"
    if a.get("cpu_model") != b.get("cpu_model"):
        return False, f"CPU differs: {a.get('cpu_model')} vs {b.get('cpu_model')}"
    if sorted(a.get("int8_flags") or []) != sorted(b.get("int8_flags") or []):
        return False, f"CPU flags differ: {','.join(a.get('int8_flags') or [])} vs {','.join(b.get('int8_flags') or [])}"
    return True, ""


# ----------------------------------------------------------------------------- emulated CPUs
# The CPUs int8 parity also runs on under qemu-user (the runner is edgekit.verify.emulation).

@dataclass(frozen=True)
class EmulatedCpu:
    """A CPU the parity can run on without owning it (names as in config.PARITY_CPUS)."""
    name: str
    qemu: str      # qemu-user binary
    model: str     # qemu -cpu model
    arch: str      # the emulated CPU's architecture (platform.machine() spelling)
    label: str     # how a result row names it: always says "emulated"
    why: str       # which int8 kernels this CPU stands for


EMULATED_CPUS: dict[str, EmulatedCpu] = {c.name: c for c in [
    # Haswell: AVX2 + FMA, no AVX-512, no VNNI: ORT's U8S8 AVX2 kernel (VPMADDUBSW, saturating).
    EmulatedCpu("x86-avx2", "qemu-x86_64", "Haswell", "x86_64", "x86-avx2 (qemu Haswell, emulated)",
                "AVX2 without VNNI: the most common CI runner; U8S8 pair sums saturate in int16"),
    # Westmere: SSE4.2, no AVX. On Linux MLAS runs its SSE2 U8X8 kernel here (qgemm_kernel_sse.cpp:
    # both operands widened to int16, products summed by PMADDWD into int32: no saturation); its
    # SSE4.1 U8S8 kernel (PMADDUBSW, qgemm_kernel_sse41.cpp) is built with MSVC only.
    EmulatedCpu("x86-sse4", "qemu-x86_64", "Westmere", "x86_64", "x86-sse4 (qemu Westmere, emulated)",
                "SSE4.2 without AVX: int8 operands widened to int16, int32 sums (no saturation)"),
    # Cortex-A53: ARMv8.0, no dot product (asimddp) and no i8mm in HWCAP nor in the fake
    # /proc/cpuinfo, so ORT and XNNPACK can only choose their generic NEON int8 kernels.
    EmulatedCpu("arm64", "qemu-aarch64", "cortex-a53", "aarch64", "arm64-generic (qemu cortex-a53, emulated)",
                "ARMv8.0 NEON without dotprod/i8mm: the generic ARM64 int8 kernels"),
]}
