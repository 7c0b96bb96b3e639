"""The constant tensors of an exported file, each with what it is to the op that reads it.

The same tensors edgekit.verify.weight_bytes counts (TFLite buffers, each once; ONNX initializers
and Constant tensors), so per-tensor figures add up to the file's weight bytes. A tensor's role
comes from its reader, followed through DEQUANTIZE / DequantizeLinear (and layout ops in ONNX):
"weight" or "bias" of a MAC op (convolution, fully connected, MatMul, Gemm; a MatMul's Add
constant is its bias), "qparam" (an ONNX scale or zero point of a quantized constant),
"activation_qparam" (the same for an activation) or "other" (Rescaling constants, shapes, axes).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgekit.core.variants import Format, file_format
from edgekit.errors import ModelError


@dataclass(frozen=True)
class ConstTensor:
    """One constant tensor of a file, as stored, with its role."""
    name: str
    shape: tuple[int, ...]
    dtype: str            # numpy name of the stored type (int8, uint8, float16, float32, int32, int64)
    nbytes: int
    role: str             # "weight", "bias", "qparam", "activation_qparam" or "other"
    op: str               # the op that reads it (through dequantization), "-" if none
    channels: int         # output channels of its MAC op (the per-channel scale count); 1 otherwise

    @property
    def elements(self) -> int:
        return int(np.prod(self.shape)) if self.shape else 1


def file_tensors(path: str | Path) -> tuple[ConstTensor, ...]:
    """The constant tensors of a .tflite or .onnx file, in file order, with their roles."""
    path = Path(path)
    if file_format(path, "the tensor listing") is Format.TFLITE:
        return _tflite_tensors(path)
    return _onnx_tensors(path)


# ----------------------------------------------------------------------------- TFLite

# op -> (weight input index, bias input index)
_TFLITE_MAC = {"CONV_2D": (1, 2), "DEPTHWISE_CONV_2D": (1, 2), "FULLY_CONNECTED": (1, 2),
               "TRANSPOSE_CONV": (1, 3), "CONV_3D": (1, 2)}


def _tflite_tensors(path: Path) -> tuple[ConstTensor, ...]:
    from ai_edge_litert import schema_py_generated as schema

    op_names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    type_names = {v: k.lower() for k, v in vars(schema.TensorType).items() if not k.startswith("_")}
    data = path.read_bytes()
    out: list[ConstTensor] = []
    try:
        if not schema.Model.ModelBufferHasIdentifier(data, 0):
            raise ValueError("no TFL3 file identifier")
        model = schema.Model.GetRootAs(data, 0)
        seen: set[int] = set()
        for s in range(model.SubgraphsLength()):
            sub = model.Subgraphs(s)
            readers: dict[int, list[tuple[str, int, list[int]]]] = {}
            for o in range(sub.OperatorsLength()):
                op = sub.Operators(o)
                code = model.OperatorCodes(op.OpcodeIndex())
                name = op_names.get(max(code.BuiltinCode(), code.DeprecatedBuiltinCode()), "?")
                outs = [int(i) for i in op.OutputsAsNumpy()] if op.OutputsLength() else []
                for k, i in enumerate(op.InputsAsNumpy() if op.InputsLength() else []):
                    readers.setdefault(int(i), []).append((name, k, outs))
            for t in range(sub.TensorsLength()):
                tensor = sub.Tensors(t)
                b = int(tensor.Buffer())
                if b <= 0 or b >= model.BuffersLength() or b in seen:  # buffer 0: the empty sentinel
                    continue
                buf = model.Buffers(b)
                nbytes = int(buf.Size()) if buf.Offset() > 1 else int(buf.DataLength())
                if nbytes == 0:  # an activation's empty buffer
                    continue
                seen.add(b)
                shape = tuple(int(d) for d in tensor.ShapeAsNumpy()) if tensor.ShapeLength() else ()
                role, op_name = _tflite_role(t, readers)
                out.append(ConstTensor(name=tensor.Name().decode(errors="replace"), shape=shape,
                                       dtype=type_names.get(tensor.Type(), "?"), nbytes=nbytes, role=role,
                                       op=op_name, channels=_tflite_channels(role, op_name, shape)))
    except Exception as e:  # a truncated or foreign file raises from deep inside flatbuffers
        raise ModelError(f"{path}: cannot read the TFLite flatbuffer ({type(e).__name__}: {e}); "
                         f"re-export it") from e
    return tuple(out)


def _tflite_role(t: int, readers: dict, depth: int = 0) -> tuple[str, str]:
    for name, k, outs in readers.get(t, []):
        if name == "DEQUANTIZE" and outs and depth < 3:  # fp16 and some int8 weights
            return _tflite_role(outs[0], readers, depth + 1)
        if name in _TFLITE_MAC:
            w, b = _TFLITE_MAC[name]
            if k in (w, b):
                return ("weight" if k == w else "bias"), name
    first = readers.get(t, [])
    return "other", first[0][0] if first else "-"


def _tflite_channels(role: str, op: str, shape: tuple[int, ...]) -> int:
    if not shape or role not in ("weight", "bias"):
        return 1
    # TFLite layouts: CONV_2D / FULLY_CONNECTED [out, ...], DEPTHWISE_CONV_2D [1, h, w, out]
    return shape[-1] if role == "weight" and op == "DEPTHWISE_CONV_2D" else shape[0]


# ----------------------------------------------------------------------------- ONNX

# op -> (weight input index, bias input index or None)
_ONNX_MAC = {"Conv": (1, 2), "ConvTranspose": (1, 2), "Gemm": (1, 2), "MatMul": (1, None),
             "QLinearConv": (3, 8), "QGemm": (3, 6), "QLinearMatMul": (3, None)}
_LAYOUT = ("DequantizeLinear", "Transpose", "Reshape", "Identity", "Cast", "Unsqueeze")
_QDQ = ("QuantizeLinear", "DequantizeLinear")


def _onnx_tensors(path: Path) -> tuple[ConstTensor, ...]:
    import onnx
    from onnx import numpy_helper

    try:
        model = onnx.load(str(path))
    except Exception as e:  # onnx raises DecodeError and friends
        raise ModelError(f"{path}: cannot read the ONNX file ({type(e).__name__}: {e}); re-export it") from e
    graph = model.graph   # the top graph: edgekit's exports have no If/Loop bodies
    consts = [(t.name, t) for t in graph.initializer]
    consts += [(n.output[0], a.t) for n in graph.node if n.op_type == "Constant"
               for a in n.attribute if a.type == onnx.AttributeProto.TENSOR]
    names = {name for name, _ in consts}
    readers: dict[str, list] = {}
    for node in graph.node:
        for k, i in enumerate(node.input):
            readers.setdefault(i, []).append((node, k))
    producer = {o: n for n in graph.node for o in n.output}
    out = []
    for name, t in consts:
        arr = np.asarray(numpy_helper.to_array(t))
        role, op, node = _onnx_role(name, readers, producer, names)
        out.append(ConstTensor(name=name, shape=tuple(int(d) for d in arr.shape), dtype=arr.dtype.name,
                               nbytes=int(arr.nbytes), role=role, op=op,
                               channels=_onnx_channels(role, node, arr.shape)))
    return tuple(out)


def _onnx_role(name: str, readers: dict, producer: dict, consts: set, depth: int = 0):
    for node, k in readers.get(name, []):
        if node.op_type in _QDQ and k > 0:
            return ("qparam" if node.input[0] in consts else "activation_qparam"), node.op_type, node
        if node.op_type in _LAYOUT and k == 0 and depth < 4:
            role, op, n = _onnx_role(node.output[0], readers, producer, consts, depth + 1)
            if role != "other":
                return role, op, n
        if node.op_type in _ONNX_MAC:
            w, b = _ONNX_MAC[node.op_type]
            if k in (w, b):
                return ("weight" if k == w else "bias"), node.op_type, node
        if node.op_type == "Add" and k < 2 and _after_matmul(node.input[1 - k], producer):
            return "bias", "MatMul+Add", node
    first = readers.get(name, [])
    return "other", first[0][0].op_type if first else "-", None


def _after_matmul(name: str, producer: dict) -> bool:
    """Whether an Add's other input is a MatMul's output (through a QDQ pair): a Dense layer's bias."""
    for _ in range(3):
        node = producer.get(name)
        if node is None:
            return False
        if node.op_type in ("MatMul", "QLinearMatMul"):
            return True
        if node.op_type not in _QDQ:
            return False
        name = node.input[0]
    return False


def _onnx_channels(role: str, node, shape) -> int:
    if role not in ("weight", "bias") or not len(shape):
        return 1
    if role == "bias" or node.op_type in ("Conv", "QLinearConv"):
        return int(shape[0])                       # Conv W [out, in/groups, kh, kw]; B [out]
    if node.op_type == "ConvTranspose":
        return int(shape[1]) if len(shape) > 1 else 1
    trans_b = any(a.name == "transB" and a.i for a in node.attribute)
    return int(shape[0] if trans_b else shape[-1])   # MatMul / Gemm B [in, out]
