"""Judging a file against its source: parity and agreement, fast vs reference kernels, emulated CPUs,
the int8 audit and saturation, weight bytes."""
