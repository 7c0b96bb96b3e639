"""What ONNX Runtime makes of an int8 ONNX file: the stored type of every MAC op's weight, and
which MACs run in integer kernels after ORT's own graph optimization (for quantize.audit_int8)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from edgekit.errors import ExportError, one_line

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
