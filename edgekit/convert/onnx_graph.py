"""A small mutable view of an ONNX graph for edgekit's rewrite passes (edgekit.convert.onnx_rewrite):
producers, consumers, initializers as arrays, and the DequantizeLinear parameters of a tensor."""
from __future__ import annotations


import numpy as np

# Ops that only move or select values: running them on the quantized tensor is exact.
PASSTHROUGH = frozenset({"MaxPool", "Reshape", "Transpose", "Squeeze", "Unsqueeze", "Flatten", "Identity"})
WEIGHTED = frozenset({"Conv", "MatMul", "Gemm"})


class _Graph:
    """Just enough bookkeeping over an onnx GraphProto to rewrite it in place."""

    def __init__(self, model) -> None:
        self.model, self.g = model, model.graph
        self._counter = 0

    @property
    def inits(self) -> dict:
        return {i.name: i for i in self.g.initializer}

    def producer(self, name: str):
        for n in self.g.node:
            if name in n.output:
                return n
        return None

    def consumers(self, name: str) -> list:
        return [n for n in self.g.node if name in n.input]

    def is_graph_output(self, name: str) -> bool:
        return any(o.name == name for o in self.g.output)

    def const(self, name: str):
        from onnx import numpy_helper

        init = self.inits.get(name)
        return None if init is None else numpy_helper.to_array(init)

    def unique(self, base: str) -> str:
        self._counter += 1
        return f"{base}__ek{self._counter}"

    def add_init(self, name: str, array: np.ndarray) -> str:
        from onnx import numpy_helper

        self.g.initializer.append(numpy_helper.from_array(np.asarray(array), name))
        return name

    def insert_after(self, anchor, *nodes) -> None:
        """Insert nodes right after `anchor` (keeps the node list topologically sorted)."""
        idx = list(self.g.node).index(anchor) + 1
        for k, n in enumerate(nodes):
            self.g.node.insert(idx + k, n)

    def insert_before(self, anchor, *nodes) -> None:
        idx = list(self.g.node).index(anchor)
        for k, n in enumerate(nodes):
            self.g.node.insert(idx + k, n)

    def remove(self, node) -> None:
        self.g.node.remove(node)

    def prune(self) -> None:
        """Drop nodes whose outputs nobody reads, then unused initializers and stale value_info."""
        changed = True
        while changed:
            changed = False
            used = {i for n in self.g.node for i in n.input} | {o.name for o in self.g.output}
            for n in list(self.g.node):
                if not any(o in used for o in n.output if o):
                    self.g.node.remove(n)
                    changed = True
        used = {i for n in self.g.node for i in n.input} | {o.name for o in self.g.output}
        for init in list(self.g.initializer):
            if init.name not in used:
                self.g.initializer.remove(init)
        del self.g.value_info[:]  # types changed (float -> uint8); ORT re-infers them


def _dq_params(graph: _Graph, node) -> tuple[np.ndarray, np.ndarray] | None:
    """(scale, zero point) of a DequantizeLinear/QuantizeLinear with constant per-tensor params."""
    scale = graph.const(node.input[1])
    zp = graph.const(node.input[2]) if len(node.input) > 2 and node.input[2] else None
    if scale is None or scale.size != 1 or (len(node.input) > 2 and node.input[2] and zp is None):
        return None
    return scale, zp
