"""ONNX int8 with integer weights: the QAT model as a real int8 QDQ graph, and ORT's static PTQ,
both stored in the weight encoding that computes what the graph says on every CPU.

QAT route: tf2onnx keeps the QAT model's weights as folded float32 constants; edgekit.convert.onnx_rewrite
re-quantizes them exactly onto the QAT grid and makes the graph fusable (QLinearConv / QGemm).
PTQ route: ONNX Runtime's own quantize_static (QDQ, uint8 activations, symmetric int8 weights).

Encoding (Profile.onnx_int8_encoding): "u8s8" keeps int8 weights. ORT's x86 kernels for uint8
activations x int8 weights without VNNI (AVX2, AVX-512BW) multiply with VPMADDUBSW, whose int16
pair sums saturate (edgekit.verify.saturation counts where), so the fused file can compute something
other than its graph. "u8u8" (the default) stores every weight code w as the uint8 w + 128 with
zero point 128: (w + 128) - 128 == w, so the graph's function is bit for bit the same, and MLAS
then runs U8U8 kernels: on AVX2, VPMADDWD on zero-extended int16 (no saturation); with AVX-VNNI it
flips B back to int8 and runs the exact VPDPBUSD kernel (onnxruntime core/mlas/lib/platform.cpp).
The price: QLinearConv's fastest x86 path (ConvSym, fused requantization) takes only int8
weights, so u8u8 convolutions run im2col + QGEMM, 1.4-2x the p50 of u8s8 on an AVX512-VNNI EPYC
(bench/results/onnx_encoding.md). A profile for a known VNNI target may choose "u8s8".
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from edgekit.errors import ConfigError, ExportError, one_line
from edgekit.convert.onnx_graph import WEIGHTED, _Graph
from edgekit.convert.onnx_rewrite import rewrite_qat_onnx  # noqa: F401  (re-exported)

ENCODINGS = ("u8u8", "u8s8")  # the same pair as edgekit.core.config.ONNX_INT8_ENCODINGS


# ----------------------------------------------------------------------------- QAT weight codes

def qat_weight_codes(qat_model) -> dict[str, dict]:
    """Quantized kernels of a tfmot QAT model: wrapper name -> {"attr", "codes" (int8, Keras
    layout), "scale" (per channel of the last axis, or scalar)}, computed by the layer's own
    weight quantizer from its stored min/max (what inference and tf2onnx see)."""
    out: dict[str, dict] = {}
    for layer in _all_layers(qat_model):
        for weight, quantizer, qvars in getattr(layer, "_weight_vars", None) or []:
            attr = weight.name.split(":")[0].split("/")[-1]
            if attr not in ("kernel", "depthwise_kernel") or "min_var" not in qvars:
                continue
            name = getattr(layer.layer, "name", layer.name)
            bits, narrow = getattr(quantizer, "num_bits", 8), getattr(quantizer, "narrow_range", True)
            if bits != 8 or not narrow or not getattr(quantizer, "symmetric", True):
                raise ExportError(f"layer '{name}' is QAT-quantized with {bits}-bit (narrow_range={narrow}) "
                                  f"weights; int8 export needs the default 8-bit symmetric scheme")
            wq = np.asarray(quantizer(weight, False, weights=qvars), np.float64)
            lo = np.asarray(qvars["min_var"].numpy(), np.float64)
            hi = np.asarray(qvars["max_var"].numpy(), np.float64)
            if np.any(np.abs(lo + hi) > 1e-6 * np.maximum(np.abs(hi), 1e-12)):
                raise ExportError(f"layer '{name}': QAT weight range is not symmetric; int8 export "
                                  f"needs the default symmetric 8-bit weight quantizer")
            scale = (hi - lo) / 254.0
            codes = np.rint(wq / np.where(scale > 0, scale, 1.0))
            out[layer.name] = {"attr": attr, "codes": np.clip(codes, -127, 127).astype(np.int8),
                               "scale": scale.astype(np.float32), "layer": name}
    return out


def _all_layers(model) -> list:
    layers = []
    for layer in model.layers:
        layers.append(layer)
        if hasattr(layer, "layers") and not hasattr(layer, "layer"):
            layers.extend(_all_layers(layer))
    return layers


# ----------------------------------------------------------------------------- the two int8 routes

def nhwc_reshape_as_transpose(model) -> int:
    """tf2onnx turns the NHWC->NCHW Transpose of a 1-channel input into a Reshape; put the
    Transpose back so ORT's layout optimizer can cancel it against its own NCHW->NHWC one
    (int8) or fold it into the NCHWc reorder (float) instead of running two copies."""
    from onnx import helper, numpy_helper

    g = model.graph
    shapes = {}
    for vi in g.input:
        dims = vi.type.tensor_type.shape.dim
        shapes[vi.name] = [d.dim_value if d.HasField("dim_value") else -1 for d in dims]
    inits = {i.name: i for i in g.initializer}
    done = 0
    for node in g.node:
        if node.op_type in ("QuantizeLinear", "DequantizeLinear", "Identity") and node.input[0] in shapes:
            shapes[node.output[0]] = shapes[node.input[0]]
            continue
        if node.op_type != "Reshape" or node.input[0] not in shapes or node.input[1] not in inits:
            continue
        src, target = shapes[node.input[0]], numpy_helper.to_array(inits[node.input[1]]).tolist()
        if len(src) == 4 and src[3] == 1 and len(target) == 4 and target[1:] == [1, src[1], src[2]] \
                and target[0] in (-1, src[0]) and src[1] > 0 and src[2] > 0:
            node.op_type = "Transpose"
            del node.input[1:]
            node.attribute.append(helper.make_attribute("perm", [0, 3, 1, 2]))
            done += 1
    used = {i for n in g.node for i in n.input}
    for init in [i for i in g.initializer if i.name not in used]:
        g.initializer.remove(init)
    return done


def _short_name(k: int) -> str:
    """0 -> "a", 25 -> "z", 26 -> "aa": lowercase letters only (bijective base 26)."""
    name = ""
    k += 1
    while k:
        k, r = divmod(k - 1, 26)
        name = chr(ord("a") + r) + name
    return name


def compact(model, output_names: list[str] | None = None):
    """Short tensor and node names, no doc strings or stale value_info: tf2onnx's scope names
    cost more bytes than a small network's int8 weights' savings can spare (size ratio target).
    Graph inputs keep their names; outputs take `output_names` when given.

    Names are given in order of first use by the nodes, and the initializers are stored in that
    order, so the file does not depend on the order tf2onnx happened to list its constants in.
    They are lowercase letters only ("a", "b", ... "aa"): ONNX Runtime's quantizer names the copy
    of a shared initializer `name + str(k)` checking only initializer names (onnx_model.py
    get_largest_initializer_name_suffix / qdq_quantizer._dup_initializer); with digit-suffixed
    names ("t14" + "6" == "t146") that copy took an activation's name and ORT wired the
    activation's consumers to a constant. A letters-only name plus digits is never another name."""
    g = model.graph
    keep = {i.name for i in g.input}
    rename: dict[str, str] = {}
    if output_names:
        for o, new in zip(g.output, output_names):
            rename[o.name] = new
    keep |= {o.name for o in g.output if o.name not in rename}
    counter = 0

    def short(name: str) -> str:
        nonlocal counter
        if not name or name in keep:
            return name
        while name not in rename:
            candidate, counter = _short_name(counter), counter + 1
            if candidate not in keep and candidate not in rename.values():
                rename[name] = candidate
        return rename[name]

    first_use: dict[str, int] = {}
    for k, node in enumerate(g.node):
        for n in [*node.input, *node.output]:
            first_use.setdefault(n, k)
            short(n)
    inits = sorted(g.initializer, key=lambda i: first_use.get(i.name, len(g.node)))  # stable
    del g.initializer[:]
    g.initializer.extend(inits)
    for init in g.initializer:
        init.name = short(init.name)
        init.doc_string = ""
    for k, node in enumerate(g.node):
        node.input[:] = [short(n) for n in node.input]
        node.output[:] = [short(n) for n in node.output]
        node.name = f"n{k}_{node.op_type}"
        node.doc_string = ""
    for o in g.output:
        o.name = short(o.name)
    for i in g.input:
        i.doc_string = ""
    del g.value_info[:]
    g.doc_string = model.doc_string = ""
    return model


def keras_to_onnx(model, opset: int, input_name: str):
    """tf2onnx conversion of a tf_keras model with a named, batch-dynamic input."""
    import logging

    import tensorflow as tf
    import tf2onnx

    from edgekit.convert.onnx_determinism import deterministic_tf2onnx

    logging.getLogger("tf2onnx").setLevel(logging.WARNING)  # its INFO lines would flood the CLI
    spec = (tf.TensorSpec([None, *model.input_shape[1:]], tf.float32, name=input_name),)
    try:
        with deterministic_tf2onnx():  # the same file from every process (edgekit.convert.onnx_determinism)
            proto, _ = tf2onnx.convert.from_keras(model, input_signature=spec, opset=opset)
    except Exception as e:  # tf2onnx raises bare Exception/ValueError for unsupported ops
        raise ExportError(f"tf2onnx cannot convert model '{model.name}' ({one_line(e, 200)}); use layers with ONNX equivalents") from e
    nhwc_reshape_as_transpose(proto)
    return proto


def qat_onnx_int8(qat_model, path: Path, opset: int = 17, input_name: str = "image",
                  encoding: str = "u8u8") -> dict:
    """Write the QAT model as an int8-weight QDQ ONNX file; returns rewrite statistics."""
    import onnx

    _check_encoding(encoding)
    proto = keras_to_onnx(qat_model, opset, input_name)
    proto, stats = rewrite_qat_onnx(proto, qat_weight_codes(qat_model))
    if stats["weights"] == 0:
        raise ExportError(f"model '{qat_model.name}' has no QAT-quantized weights; pass the QAT model")
    stats["u8u8_weights"] = encode_weights(proto, encoding)
    compact(proto, [n[len("quant_"):] if n.startswith("quant_") else n for n in qat_model.output_names])
    onnx.checker.check_model(proto)
    onnx.save(proto, str(path))
    return stats


# ----------------------------------------------------------------------------- weight encoding

def _check_encoding(encoding: str) -> None:
    if encoding not in ENCODINGS:
        raise ConfigError(f"onnx_int8_encoding = {encoding!r} is unknown; use one of {', '.join(ENCODINGS)}")


def encode_weights(model, encoding: str) -> int:
    """Store the int8 weights of Conv/Gemm/MatMul in `encoding`; returns how many were re-encoded.

    "u8u8": each int8 initializer behind the DequantizeLinear of a MAC op's weight becomes
    uint8 = code + 128 and its zero point zp + 128 (symmetric: 128, per channel an array of
    128s). DequantizeLinear computes (q - zp) * scale, and (code + 128) - (zp + 128) == code - zp
    in integers, so every dequantized weight, and the file's function, is unchanged bit for bit.
    "u8s8": the file is left as it is."""
    _check_encoding(encoding)
    if encoding == "u8s8":
        return 0
    graph = _Graph(model)
    done = 0
    for dq in list(graph.g.node):
        if dq.op_type != "DequantizeLinear" or not _feeds_weight(graph, dq.output[0]):
            continue
        codes = graph.const(dq.input[0])
        if codes is None or codes.dtype != np.int8:
            continue
        has_zp = len(dq.input) > 2 and bool(dq.input[2])
        zp = graph.const(dq.input[2]) if has_zp else np.zeros(graph.const(dq.input[1]).shape, np.int8)
        if zp is None:  # a zero point computed at run time: not a constant weight encoding
            continue
        base = dq.input[0]
        shifted = (codes.astype(np.int16) + 128).astype(np.uint8)
        dq.input[0] = graph.add_init(graph.unique(f"{base}_u8"), shifted)
        zp_u8 = (zp.astype(np.int16) + 128).astype(np.uint8)
        zname = graph.add_init(graph.unique(f"{base}_zp_u8"), zp_u8)
        if has_zp:
            dq.input[2] = zname
        else:
            dq.input.append(zname)
        done += 1
    graph.prune()  # drops the int8 originals and the value_info that still says int8
    return done


def _feeds_weight(graph: _Graph, name: str) -> bool:
    """True when `name` is the weight input (index 1) of a Conv/Gemm/MatMul, directly or through
    shape-only ops (Transpose/Reshape), and feeds nothing else."""
    users = graph.consumers(name)
    if not users:
        return False
    for user in users:
        if user.op_type in WEIGHTED:
            if len(user.input) < 2 or user.input[1] != name or user.input[0] == name:
                return False
        elif user.op_type in ("Transpose", "Reshape", "Identity"):
            if not _feeds_weight(graph, user.output[0]):
                return False
        else:
            return False
    return True


# ----------------------------------------------------------------------------- ORT static PTQ

class _Reader:
    """ORT's CalibrationDataReader protocol over an array, in small batches."""

    def __init__(self, x: np.ndarray, input_name: str, batch: int = 32) -> None:
        self.x, self.input_name, self.batch, self.i = x, input_name, batch, 0

    def get_next(self):
        if self.i >= len(self.x):
            return None
        xb = self.x[self.i:self.i + self.batch]
        self.i += self.batch
        return {self.input_name: np.ascontiguousarray(xb, np.float32)}

    def rewind(self) -> None:
        self.i = 0


def ptq_onnx_int8(float_onnx: Path, representative: np.ndarray, path: Path, input_name: str = "image",
                  per_channel: bool = True, encoding: str = "u8u8", reduce_range: bool = False,
                  calibration_batch: int = 32) -> dict:
    """ONNX Runtime static quantization (QDQ, uint8 activations, per-channel symmetric int8
    weights) of a float ONNX, stored in `encoding` (see encode_weights); returns
    {"u8u8_weights": how many weights were re-encoded}.

    Symmetric int8 weights are what u8u8 re-encodes exactly; `reduce_range` (7-bit weights, ORT's
    other cure for VPMADDUBSW saturation) costs one bit of weight precision and stays off by
    default; bench/bench_onnx_encoding.py measures it side by side. ORT's calibration keeps every
    tensor of every representative image until it computes the ranges (its CalibMaxIntermediateOutputs
    flush discards the data in ORT 1.32 instead of folding it in), so the caller sizes the
    representative set to memory; `calibration_batch` images run per session call."""
    import tempfile

    import onnx
    from onnxruntime.quantization.shape_inference import quant_pre_process

    _check_encoding(encoding)
    with tempfile.TemporaryDirectory(prefix="edgekit-ptq-") as tmp:
        # ORT's own preparation: shape inference and basic fusions (MatMul+Add -> Gemm -> QGemm)
        prepared = str(Path(tmp) / "prepared.onnx")
        quant_pre_process(str(float_onnx), prepared, skip_symbolic_shape=True)  # no sympy needed
        # ORT's pre-processing may add or rename tensors: give every tensor a collision-proof
        # name again (see compact) right before quantize_static names its copies
        onnx.save(compact(onnx.load(prepared)), prepared)
        _quantize_static(prepared, path, representative, input_name, per_channel, reduce_range, calibration_batch)
    proto = onnx.load(str(path))
    done = encode_weights(proto, encoding)
    onnx.save(compact(proto), str(path))
    return {"u8u8_weights": done}


def _quantize_static(prepared: str, path: Path, representative: np.ndarray, input_name: str,
                     per_channel: bool, reduce_range: bool, calibration_batch: int = 32) -> None:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    quantize_static(prepared, str(path), _Reader(representative, input_name, batch=calibration_batch),
                    quant_format=QuantFormat.QDQ, per_channel=per_channel, reduce_range=reduce_range,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    calibrate_method=CalibrationMethod.MinMax,
                    extra_options={"WeightSymmetric": True, "ActivationSymmetric": False})
