"""How many bytes of a model file are its constant tensors (the weights), not its format.

A 15 KiB model is mostly flatbuffer or protobuf framing (op codes, tensor names, shapes,
signatures, metadata), which int8 does not shrink: its int8 file can be 0.75x its fp32 file
although every weight went from 4 bytes to 1. A size *ratio* that judges quantization must
count what quantization changes, so `max_size_ratio` is judged on these bytes (and the file's
bytes are reported beside them); a flash budget (`max_size_bytes`) stays on file bytes.

What counts, per format (each ratio compares a file with the fp32 file of its own format):
- TFLite: the data of every buffer a tensor of any subgraph points at (weights, biases, fp16
  copies, shape constants). Quantization scales and zero points are tensor metadata in the
  flatbuffer, not buffers, so they are not counted.
- ONNX: every initializer and every Constant node's tensor, including int32 biases and the
  scale / zero-point tensors of QDQ pairs (in ONNX those are tensors like any other).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from edgekit.core.variants import Format, file_format
from edgekit.errors import ModelError


def weight_bytes(path: str | Path) -> int:
    """Bytes of the constant tensors stored in a .tflite or .onnx file."""
    path = Path(path)
    fmt = file_format(path, "the weight-byte count")
    return tflite_weight_bytes(path) if fmt is Format.TFLITE else onnx_weight_bytes(path)


def tflite_weight_bytes(path: Path) -> int:
    """Sum of the buffers referenced by tensors, each buffer counted once (tensors may share one)."""
    from ai_edge_litert import schema_py_generated as schema

    data = path.read_bytes()
    try:
        if not schema.Model.ModelBufferHasIdentifier(data, 0):
            raise ValueError("no TFL3 file identifier")
        model = schema.Model.GetRootAs(data, 0)
        used: set[int] = set()
        for s in range(model.SubgraphsLength()):
            sub = model.Subgraphs(s)
            for t in range(sub.TensorsLength()):
                used.add(int(sub.Tensors(t).Buffer()))
        total = 0
        for b in sorted(used):
            if b <= 0 or b >= model.BuffersLength():  # buffer 0 is the empty sentinel
                continue
            buf = model.Buffers(b)
            # files over 2 GiB keep buffer data after the flatbuffer, located by offset and size
            total += int(buf.Size()) if buf.Offset() > 1 else int(buf.DataLength())
    except Exception as e:  # a truncated or foreign file raises from deep inside flatbuffers
        raise ModelError(f"{path}: cannot read the TFLite flatbuffer ({type(e).__name__}: {e}); "
                         f"re-export it") from e
    return total


def onnx_weight_bytes(path: Path) -> int:
    """Sum of initializer and Constant-node tensor bytes, subgraphs (If/Loop bodies) included."""
    import onnx
    from onnx import numpy_helper

    try:
        model = onnx.load(str(path))
    except Exception as e:  # onnx raises DecodeError and friends
        raise ModelError(f"{path}: cannot read the ONNX file ({type(e).__name__}: {e}); re-export it") from e

    def graph_bytes(graph) -> int:
        total = sum(_tensor_bytes(t, numpy_helper) for t in graph.initializer)
        for node in graph.node:
            for attr in node.attribute:
                if node.op_type == "Constant" and attr.type == onnx.AttributeProto.TENSOR:
                    total += _tensor_bytes(attr.t, numpy_helper)
                if attr.type == onnx.AttributeProto.GRAPH:
                    total += graph_bytes(attr.g)
                for g in attr.graphs:
                    total += graph_bytes(g)
        return total

    return graph_bytes(model.graph)


def _tensor_bytes(tensor, numpy_helper) -> int:
    """Stored bytes of one tensor: elements x element size (raw_data or typed fields alike)."""
    return int(np.asarray(numpy_helper.to_array(tensor)).nbytes)
