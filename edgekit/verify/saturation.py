"""Which int8 weight pairs ONNX Runtime's AVX2 U8S8 kernels would saturate, from the file alone.

Why: on x86 without VNNI (AVX2; AVX-512BW alike), MLAS multiplies uint8 activations by int8
weights with VPMADDUBSW, which adds each pair of products a*w_a + b*w_b into a *saturating*
int16 before VPMADDWD widens it to int32. With activations up to 255, a pair overflows when
255 * (w_a + w_b) > 32767 or < -32768, i.e. |w_a + w_b| >= 129: only same-sign pairs can. The
fused QLinearConv / QGemm then computes something other than the file's graph, on those CPUs
only. Counting the pairs needs no such CPU, so a VNNI or ARM machine can see what an AVX2 one
would suffer.

Which weights form a pair (onnxruntime, microsoft/onnxruntime, read for ORT 1.2x):
- GEMM kernel: core/mlas/lib/x86_64/QgemmU8X8KernelAvx2.S (MultiplyAccumulateRowU8S8Avx2:
  vpmaddubsw then vpmaddwd with 1s) on B packed by MlasGemmU8S8CopyPackBAvx2
  (core/mlas/lib/qgemm_kernel_avx2.cpp, PackedK = 4): for each output column, 4 consecutive K
  values sit in one dword against 4 broadcast activation bytes, so the pairs are K-elements
  (4i, 4i+1) and (4i+2, 4i+3), i.e. (2j, 2j+1); K is zero-padded to a multiple of 4, and a weight
  paired with padding cannot overflow (255 * 128 = 32640). Batch-1 QGemm goes through
  core/mlas/lib/x86_64/QgemvU8S8KernelAvx2.S: 4 rows of B interleaved, the same pairs.
- QLinearConv: core/providers/cpu/quantization/qlinearconv.cc, ReorderFilter ("MCK1..Kn to
  K1...KnCM") lays the filter out as K = (kh, kw, cin) per output channel before packing for the
  GEMM above. Symmetric int8 filters with cin % 4 == 0 and cout % 8 == 0 take the ConvSym path
  instead (core/mlas/lib/convsym.cpp, MlasConvSymPackW: per kernel position, input channels in
  packs of 4; core/mlas/lib/x86_64/ConvSymKernelAvx2.S, MultiplyAccumulateRowAvx2: vpmaddubsw):
  the same (kh, kw, cin) order, so the same pairs.
- Depthwise convolutions (one input and one output channel per group) use neither:
  MlasConvSymDepthwiseKernelAvx2 (ConvSymKernelAvx2.S: vpmovsxbd / vpmovzxbd to int32 lanes,
  then vpmaddwd) and MlasConvDepthwiseKernelAvx2 (core/mlas/lib/intrinsics/avx2/qdwconv_avx2.cpp:
  int16 operands, full 32-bit products) never add two products in int16. They are listed with
  0 pairs, never counted as safe pairs of the GEMM kind.
- uint8 weights (the "u8u8" encoding) run MlasGemmU8U8KernelAvx2 on AVX2 (QgemmU8X8KernelAvx2.S,
  MultiplyAccumulateRowU8U8Avx2: vpmovzxbw + vpmaddwd, no int16 sums), and with AVX-VNNI the
  U8S8 VNNI kernel after flipping B's sign bit (core/mlas/lib/platform.cpp). For them the audit
  reports the pairs the same codes (u - 128) *would* overflow as u8s8, and affects_file False.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

INT16_MAX, INT16_MIN = 32767, -32768
ACTIVATION_MAX = 255  # uint8 activations: the worst case of a VPMADDUBSW pair

# op type -> index of the weight input: QDQ graphs, and already-fused QOperator graphs
_WEIGHT_INPUT = {"Conv": 1, "Gemm": 1, "MatMul": 1, "QLinearConv": 3, "QGemm": 3, "QLinearMatMul": 3}
_THROUGH = ("DequantizeLinear", "Identity")


def pair_counts(k_major: np.ndarray) -> tuple[int, int]:
    """(pairs, overflowing pairs) of a weight matrix laid out (output channels, K) in int8 codes.

    Pairs are K-elements (2j, 2j+1); an odd last element pairs with zero padding and is not
    counted (it cannot overflow)."""
    w = np.asarray(k_major, np.int32)
    half = w.shape[1] // 2
    if half == 0:
        return 0, 0
    s = w[:, 0:2 * half:2] + w[:, 1:2 * half:2]
    over = (ACTIVATION_MAX * s > INT16_MAX) | (ACTIVATION_MAX * s < INT16_MIN)
    return int(s.size), int(over.sum())


def saturation_audit(path: str | Path) -> dict:
    """Per MAC layer and in total: pairs of int8 weights VPMADDUBSW would sum in int16, and how
    many of them overflow with uint8 activations. See the module docstring for the pairing.

    {"encoding": "u8s8" | "u8u8" | "none" (no 8-bit weights), "pairs", "overflowing_pairs",
     "share", "affects_file" (u8s8 file with overflowing pairs), "layers": [{"name", "op",
     "kernel": "gemm" | "depthwise", "pairs", "overflowing_pairs", "share"}]}"""
    import onnx

    model = onnx.load(str(path))
    layers, dtypes = [], set()
    for name, op, codes, dtype, depthwise in _weights(model):
        dtypes.add(dtype)
        if depthwise:
            pairs, over = 0, 0
        else:
            pairs, over = pair_counts(codes)
        layers.append({"name": name, "op": op, "kernel": "depthwise" if depthwise else "gemm",
                       "pairs": pairs, "overflowing_pairs": over, "share": round(over / pairs, 6) if pairs else 0.0})
    encoding = "u8s8" if "int8" in dtypes else "u8u8" if "uint8" in dtypes else "none"
    pairs = sum(layer["pairs"] for layer in layers)
    over = sum(layer["overflowing_pairs"] for layer in layers)
    return {"encoding": encoding, "pairs": pairs, "overflowing_pairs": over,
            "share": round(over / pairs, 6) if pairs else 0.0,
            "affects_file": encoding == "u8s8" and over > 0, "layers": layers}


def _weights(model):
    """(name, op, int8 codes as (out channels, K) in ORT's K order, stored dtype, depthwise) per
    MAC op whose weight is a stored 8-bit initializer (directly or through DequantizeLinear)."""
    from onnx import numpy_helper

    inits = {i.name: i for i in model.graph.initializer}
    producer = {o: n for n in model.graph.node for o in n.output}
    for node in model.graph.node:
        idx = _WEIGHT_INPUT.get(node.op_type)
        if idx is None or len(node.input) <= idx:
            continue
        name = node.input[idx]
        while name not in inits and name in producer and producer[name].op_type in _THROUGH:
            name = producer[name].input[0]
        if name not in inits:
            continue
        w = numpy_helper.to_array(inits[name])
        if w.dtype == np.int8:
            codes = w.astype(np.int16)
        elif w.dtype == np.uint8:
            codes = w.astype(np.int16) - 128  # what the U8S8 kernel would see (B ^ 0x80)
        else:
            continue
        attrs = {a.name: a for a in node.attribute}
        if "Conv" in node.op_type:
            group = attrs["group"].i if "group" in attrs else 1
            depthwise = group > 1 and codes.shape[1] == 1 and codes.shape[0] == group
            # (M, C/g, *spatial) -> per output channel K = (*spatial, C/g): ReorderFilter's order
            k_major = np.moveaxis(codes, 1, -1).reshape(codes.shape[0], -1)
        else:
            depthwise = False
            if codes.ndim != 2:  # batched MatMul weights: not a GEMM B matrix ORT packs
                continue
            trans_b = "transB" in attrs and attrs["transB"].i
            k_major = codes if trans_b else codes.T  # (N, K)
        yield node.name or node.output[0], node.op_type, k_major, w.dtype.name, depthwise
