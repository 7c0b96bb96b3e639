"""The int8 audit of an exported file, TFLite or ONNX: does a file that claims int8 hold int8
weights and run its multiply-accumulates in integer kernels?

It exists because a file can *claim* int8 and not be: tf2onnx's QAT ONNX keeps float32 weights and
ONNX Runtime runs it in float. It reads the weights' storage types (through DEQUANTIZE /
DequantizeLinear) and counts which MACs run in integer kernels *after* the runtime's own graph
optimization (LiteRT's builtin kernels; ORT's optimized graph, read back from disk).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from edgekit.core.variants import Format, file_format
from edgekit.errors import ExportError, ModelError, one_line

MIN_INT8_WEIGHT_FRACTION = 0.95   # share of MAC-op weight elements stored as int8
MIN_INTEGER_MAC_FRACTION = 0.95   # share of MACs in integer kernels after runtime optimization


def audit_int8(path: str | Path) -> dict:
    """Does an int8 file hold int8 weights and run its MACs in integer kernels?

    {"weight_dtypes": {dtype: elements of MAC-op weights as stored}, "int8_weight_fraction"
     (8-bit: int8, or uint8 with a zero point as in u8u8 ONNX files), "integer_mac_fraction"
     (after the runtime's graph optimization), "macs": {"integer", "float"}, "ops": [per MAC op],
     "passed", "reason"}; ONNX files also get "saturation" (edgekit.verify.saturation.saturation_audit).
    Saturation does not fail the audit: it is a property of some CPUs' kernels, judged by the
    kernel-fidelity check; the audit reports it so that any machine can see it."""
    path = Path(path)
    if file_format(path, "the int8 audit") is Format.TFLITE:
        ops, weights = tflite_mac_ops(path)
        return summarize_audit(ops, weights, "litert builtin kernels")
    from edgekit.verify.saturation import saturation_audit

    ops, weights = onnx_mac_ops(path), onnx_weight_dtypes(path)
    audit = summarize_audit(ops, weights, "onnxruntime CPU, graph_optimization=all")
    audit["saturation"] = saturation_audit(path)  # what ORT's AVX2 U8S8 kernels would do to it
    return audit


def summarize_audit(ops: list[dict], weight_dtypes: dict[str, int], runtime: str) -> dict:
    """Per-op records {op, macs, integer} and stored weight element counts -> the verdict."""
    total_w = sum(weight_dtypes.values())
    eight_bit = weight_dtypes.get("int8", 0) + weight_dtypes.get("uint8", 0)  # u8u8: uint8, zero point 128
    int8_frac = eight_bit / total_w if total_w else 0.0
    int_macs = sum(op["macs"] for op in ops if op["integer"])
    all_macs = sum(op["macs"] for op in ops)
    mac_frac = int_macs / all_macs if all_macs else 0.0
    reasons = []
    if not ops:
        reasons.append("no Conv/MatMul/FullyConnected ops found")
    if int8_frac < MIN_INT8_WEIGHT_FRACTION:
        reasons.append(f"only {int8_frac:.1%} of weights are stored as int8 ({_fmt_dtypes(weight_dtypes)})")
    if ops and mac_frac < MIN_INTEGER_MAC_FRACTION:
        floats = sorted({op["op"] for op in ops if not op["integer"]})
        reasons.append(f"only {mac_frac:.1%} of MACs run in integer kernels (float ops: {', '.join(floats)})")
    return {"weight_dtypes": dict(sorted(weight_dtypes.items())), "int8_weight_fraction": round(int8_frac, 6),
            "integer_mac_fraction": round(mac_frac, 6),
            "macs": {"integer": int(int_macs), "float": int(all_macs - int_macs)},
            "ops": ops, "runtime": runtime,
            "limits": {"int8_weight_fraction": MIN_INT8_WEIGHT_FRACTION,
                       "integer_mac_fraction": MIN_INTEGER_MAC_FRACTION},
            "passed": not reasons, "reason": "; ".join(reasons) if reasons else "int8 weights, integer kernels"}


def _fmt_dtypes(dtypes: dict) -> str:
    return ", ".join(f"{k}: {v}" for k, v in sorted(dtypes.items())) or "none"


_TFLITE_MAC_OPS = {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "TRANSPOSE_CONV", "CONV_3D", "BATCH_MATMUL"}
_INT_TYPES = ("int8", "uint8", "int16")


def tflite_mac_ops(path: Path) -> tuple[list[dict], dict[str, int]]:
    """Per MAC op of a .tflite file (batch 1): its MACs and whether activations and weights are
    integer; plus the stored dtypes of those weights (followed back through DEQUANTIZE)."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    try:
        it = Interpreter(model_path=str(path),
                         experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
        it.allocate_tensors()
    except (ValueError, RuntimeError) as e:
        raise ModelError(f"{path}: LiteRT cannot load this file ({e}); re-export it") from e
    details = it._get_ops_details()
    producer = {o: op for op in details for o in op["outputs"]}

    def tensor(i: int) -> dict:
        return it._get_tensor_details(int(i), 0)

    ops, weights = [], {}
    for op in details:
        name = op["op_name"]
        if name not in _TFLITE_MAC_OPS:
            continue
        ins = [i for i in op["inputs"] if i >= 0]
        x_i, w_i = (ins[2], ins[1]) if name == "TRANSPOSE_CONV" else (ins[0], ins[1])
        src = w_i
        while src in producer and producer[src]["op_name"] == "DEQUANTIZE":
            src = [i for i in producer[src]["inputs"] if i >= 0][0]
        x, w, stored = tensor(x_i), tensor(w_i), tensor(src)
        stored_dtype = np.dtype(stored["dtype"]).name
        weights[stored_dtype] = weights.get(stored_dtype, 0) + int(np.prod(stored["shape"]))
        out = tensor(op["outputs"][0])
        out_elems = int(np.prod(out["shape"][1:]))
        wshape = [int(d) for d in w["shape"]]
        if name == "DEPTHWISE_CONV_2D":
            k = int(np.prod(wshape[1:-1]))
        elif name == "BATCH_MATMUL":
            k = int(x["shape"][-1])
        else:
            k = int(np.prod(wshape[1:]))
        integer = np.dtype(x["dtype"]).name in _INT_TYPES and np.dtype(w["dtype"]).name in _INT_TYPES
        ops.append({"op": name, "macs": out_elems * k, "integer": bool(integer),
                    "input_dtype": np.dtype(x["dtype"]).name, "weight_dtype": np.dtype(w["dtype"]).name})
    return ops, weights


# ----------------------------------------------------------------------------- ONNX Runtime

# op type -> index of its weight input; integer kernels first, then float ones (any domain).
INTEGER_MAC_OPS = {"QLinearConv": 3, "QLinearMatMul": 3, "QGemm": 3, "ConvInteger": 1, "MatMulInteger": 1,
                   "MatMulIntegerToFloat": 1, "DynamicQuantizeMatMul": 1}
FLOAT_MAC_OPS = {"Conv": 1, "FusedConv": 1, "NhwcFusedConv": 1, "ConvTranspose": 1, "MatMul": 1,
                 "FusedMatMul": 1, "Gemm": 1, "FusedGemm": 1}
_CONV_LIKE = {"QLinearConv", "ConvInteger", "Conv", "FusedConv", "NhwcFusedConv", "ConvTranspose"}


def onnx_weight_dtypes(path: Path) -> dict[str, int]:
    """Stored element type of every MAC op's weight in the file (through DequantizeLinear)."""
    import onnx
    from onnx import helper

    model = onnx.load(str(path))
    inits = {i.name: i for i in model.graph.initializer}
    producer = {o: n for n in model.graph.node for o in n.output}
    counts: dict[str, int] = {}
    for node in model.graph.node:
        idx = INTEGER_MAC_OPS.get(node.op_type, FLOAT_MAC_OPS.get(node.op_type))
        if idx is None or len(node.input) <= idx:
            continue
        name = node.input[idx]
        while name not in inits and name in producer and producer[name].op_type in (
                "DequantizeLinear", "Transpose", "Reshape", "Identity", "Cast"):
            name = producer[name].input[0]
        if name in inits:
            t = inits[name]
            dtype = np.dtype(helper.tensor_dtype_to_np_dtype(t.data_type)).name
            counts[dtype] = counts.get(dtype, 0) + int(np.prod(t.dims))
        else:
            counts["activation"] = counts.get("activation", 0)
    return counts


def onnx_mac_ops(path: Path, graph_optimization: str = "all") -> list[dict]:
    """Per MAC op of the graph ONNX Runtime actually runs (its optimized model, saved through
    SessionOptions.optimized_model_filepath): op type, MACs at batch 1, integer or float.

    MACs = output elements x reduction length; shapes come from running the optimized graph
    once on a zero input with every intermediate tensor exposed."""
    import tempfile

    import onnx
    import onnxruntime as ort

    from edgekit.runtimes.onnxrt import session_options

    with tempfile.TemporaryDirectory(prefix="edgekit-audit-") as tmp:
        opt_path = str(Path(tmp) / "optimized.onnx")
        try:
            ort.InferenceSession(str(path), session_options(1, graph_optimization, opt_path),
                                 providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime's own Fail/InvalidGraph types
            raise ExportError(f"{path}: ONNX Runtime cannot load this file ({one_line(e, 160)}); re-export it") from e
        model = onnx.load(opt_path)
        shapes = _probe_shapes(model)
    inits = {i.name: tuple(int(d) for d in i.dims) for i in model.graph.initializer}
    ops = []
    for node in model.graph.node:
        integer = node.op_type in INTEGER_MAC_OPS
        idx = INTEGER_MAC_OPS.get(node.op_type, FLOAT_MAC_OPS.get(node.op_type))
        if idx is None or len(node.input) <= idx:
            continue
        w = inits.get(node.input[idx]) or shapes.get(node.input[idx])
        out = shapes.get(node.output[0])
        x = shapes.get(node.input[0])
        if w is None or out is None:
            raise ExportError(f"{path}: cannot size op '{node.name}' ({node.op_type}) for the int8 audit")
        if node.op_type in _CONV_LIKE:
            k = int(np.prod(w)) // max(int(w[0]), 1)
        else:
            trans_a = any(a.name == "transA" and a.i for a in node.attribute)
            k = int(x[-2] if trans_a else x[-1]) if x else int(w[0])
        ops.append({"op": node.op_type if not node.domain else f"{node.domain}.{node.op_type}",
                    "macs": int(np.prod(out[1:])) * k, "integer": integer})
    return ops


def _probe_shapes(model) -> dict[str, tuple[int, ...]]:
    """Shapes of every tensor of a (possibly ORT-optimized) graph for one zero-valued sample."""
    import onnxruntime as ort
    from onnx import helper

    from edgekit.runtimes.onnxrt import session_options

    probe = type(model)()
    probe.CopyFrom(model)
    known = {o.name for o in probe.graph.output}
    for node in probe.graph.node:
        for o in node.output:
            if o and o not in known:
                probe.graph.output.append(helper.ValueInfoProto(name=o))
                known.add(o)
    sess = ort.InferenceSession(probe.SerializeToString(), session_options(1, "disable"),
                                providers=["CPUExecutionProvider"])
    feeds = {}
    for inp in sess.get_inputs():
        shape = [d if isinstance(d, int) else 1 for d in inp.shape]
        dtypes = {"tensor(float)": np.float32, "tensor(uint8)": np.uint8, "tensor(int8)": np.int8}
        feeds[inp.name] = np.zeros(shape, dtypes.get(inp.type, np.float32))
    names = [o.name for o in sess.get_outputs()]
    values = sess.run(names, feeds)
    return {n: tuple(int(d) for d in np.shape(v)) for n, v in zip(names, values)}
