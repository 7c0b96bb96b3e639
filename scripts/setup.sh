#!/usr/bin/env bash
# Create or reuse .venv, install edgekit (editable, with test extras) and, where missing,
# Debian's dataset-fashion-mnist. Sourced by run.sh and test.sh; safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${EDGEKIT_VENV:-.venv}"
PYTHON="${PYTHON:-python3}"
if [ ! -x "$VENV/bin/python" ]; then
  echo "setup: creating $VENV" >&2
  "$PYTHON" -m venv "$VENV"
fi
stamp="$VENV/.edgekit-installed"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  echo "setup: installing edgekit and its pinned dependencies into $VENV (first time: a few minutes)" >&2
  "$VENV/bin/python" -m pip install -q --upgrade pip
  "$VENV/bin/python" -m pip install -q -e '.[test]'
  touch "$stamp"
fi
FMNIST_DIR="${EDGEKIT_FASHION_MNIST_DIR:-/usr/share/datasets/fashion-mnist}"
if [ ! -f "$FMNIST_DIR/train-images-idx3-ubyte.gz" ] && [ ! -f "$FMNIST_DIR/train-images-idx3-ubyte" ]; then
  echo "setup: installing Debian's dataset-fashion-mnist" >&2
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq dataset-fashion-mnist >/dev/null
fi
# qemu-user runs the int8 parity under emulated CPUs (AVX2 without VNNI, SSE4, ARM64): see
# edgekit/verify/emulation.py. Without it those checks are skipped with their reason, never passed.
if ! command -v qemu-x86_64 >/dev/null 2>&1; then
  echo "setup: installing Debian's qemu-user (emulated-CPU parity)" >&2
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  { $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq qemu-user >/dev/null; } \
    || { echo "setup: could not install qemu-user; emulated-CPU parity will be skipped" >&2
         [ -z "${CI:-}" ] || exit 1; }  # CI must prove the emulated-CPU checks, not skip them
fi
