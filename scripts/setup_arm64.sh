#!/usr/bin/env bash
# Build (once) the arm64 sysroot that edgekit.verify.emulation runs the "arm64" parity CPU in:
# Debian's own arm64 Python 3.11 and the C libraries it loads, unpacked with `dpkg -x` (nothing
# is installed on this machine), plus the aarch64 wheels of onnxruntime, numpy and ai-edge-litert
# at the versions this venv runs, so the emulated child computes with the same releases as the
# native one. Run under `qemu-aarch64 -L SYSROOT` (see edgekit/verify/emulation.py).
#
#   bash scripts/setup_arm64.sh   # first time: 25 s here with no pip cache (~240 MB unpacked); then 0.3 s
#
# Where: $EDGEKIT_ARM64_DIR, else ${XDG_CACHE_HOME:-~/.cache}/edgekit/arm64 (sysroot/, site/,
# cpuinfo, empty/, READY). Idempotent: when READY names the same versions, it does nothing.
# It adds the arm64 architecture to apt (`dpkg --add-architecture arm64`) so that
# `apt-get download pkg:arm64` can find the packages; no arm64 package is ever installed.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${EDGEKIT_VENV:-.venv}"
ROOT="${EDGEKIT_ARM64_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/edgekit/arm64}"
SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"

# Debian's arm64 Python and what its interpreter, its stdlib extension modules and the wheels'
# shared objects (libstdc++, libgcc_s) link against. Only what `import numpy, onnxruntime,
# ai_edge_litert` and np.load/np.savez touch; the rest of the stdlib's C modules may fail to import.
PACKAGES=(python3.11-minimal libpython3.11-minimal libpython3.11-stdlib
          libc6 libgcc-s1 libstdc++6 zlib1g libexpat1 libffi8 libssl3 libbz2-1.0 liblzma5
          libuuid1 libcrypt1 libsqlite3-0 libncursesw6 libtinfo6 libreadline8)

versions="$("$VENV/bin/python" - <<'EOF'
from importlib.metadata import version
print(" ".join(f"{p}=={version(p)}" for p in ("onnxruntime", "numpy", "ai-edge-litert")))
EOF
)"
fingerprint="debian-bookworm ${PACKAGES[*]} | $versions"
if [ -f "$ROOT/READY" ] && [ "$(cat "$ROOT/READY")" = "$fingerprint" ]; then
  echo "setup_arm64: ready at $ROOT" >&2
  exit 0
fi
for tool in qemu-aarch64 unshare dpkg apt-get; do
  command -v "$tool" >/dev/null 2>&1 || { echo "setup_arm64: '$tool' is missing; install Debian's qemu-user (and util-linux, dpkg, apt)" >&2; exit 1; }
done

echo "setup_arm64: building the arm64 sysroot in $ROOT ($versions)" >&2
if ! dpkg --print-foreign-architectures | grep -qx arm64; then
  $SUDO dpkg --add-architecture arm64
fi
# `apt-cache policy` lists candidates only after the arm64 package lists have been fetched.
if ! apt-cache policy python3.11-minimal:arm64 2>/dev/null | grep -q 'Candidate: [0-9]'; then
  $SUDO apt-get update -qq
fi

build="$ROOT.building.$$"
rm -rf "$build"
mkdir -p "$build/debs" "$build/sysroot" "$build/site" "$build/empty"
trap 'rm -rf "$build"' EXIT
sandbox=(); [ "$(id -u)" -eq 0 ] && sandbox=(-o APT::Sandbox::User=root)  # _apt cannot enter ~root
# shellcheck disable=SC2046
(cd "$build/debs" && apt-get download -qq "${sandbox[@]}" $(printf '%s:arm64 ' "${PACKAGES[@]}"))
for deb in "$build"/debs/*.deb; do
  dpkg -x "$deb" "$build/sysroot"
done
rm -rf "$build/debs"

# aarch64 wheels as PyPI tags them (manylinux2014 = manylinux_2_17; newer ones up to bookworm's
# glibc 2.36), for CPython 3.11, installed into a plain directory that goes on PYTHONPATH.
platforms=(--platform manylinux2014_aarch64)
for minor in $(seq 17 36); do platforms+=(--platform "manylinux_2_${minor}_aarch64"); done
# shellcheck disable=SC2086
"$VENV/bin/python" -m pip install -q --target "$build/site" "${platforms[@]}" \
  --python-version 311 --implementation cp --abi cp311 --only-binary=:all: $versions

# ONNX Runtime's cpuinfo library reads /proc/cpuinfo and /sys/devices/system/cpu and crashes
# on the host's x86 ones; edgekit.verify.emulation binds these two over them (in a private mount
# namespace). The features are a Cortex-A53's (ARMv8.0: no asimddp, no i8mm), the CPU that
# edgekit.verify.emulation asks qemu for, so ORT's generic NEON int8 kernels are the ones that run.
cat >"$build/cpuinfo" <<'EOF'
processor	: 0
BogoMIPS	: 50.00
Features	: fp asimd evtstrm aes pmull sha1 sha2 crc32 cpuid
CPU implementer	: 0x41
CPU architecture: 8
CPU variant	: 0x0
CPU part	: 0xd03
CPU revision	: 4

EOF
echo "$fingerprint" >"$build/READY"
rm -rf "$ROOT"
mkdir -p "$(dirname "$ROOT")"
mv "$build" "$ROOT"
trap - EXIT
echo "setup_arm64: ready at $ROOT ($(du -sh "$ROOT" | cut -f1))" >&2
