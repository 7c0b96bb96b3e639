"""Run-to-run identical tf2onnx output.

tf2onnx 1.17's optimizers walk Python sets whose order changes from one process to the next, and
that order decides which node is handled first, hence the global `make_name` counter each new node
gets (`pad_const__47` vs `pad_const__422`), which of two identical constants merge_duplication
keeps, and the name-sorted node order of the final topological sort:

- `Graph.extract_sub_graph_nodes` returns `list(set_of_Node)`: ordered by object address (ASLR),
  and `delete_unused_nodes` makes that the graph's node order;
- `Graph.find_output_consumers` walks `_output_to_consumers[name]`, a set of node-name strings:
  ordered by the str hash (PYTHONHASHSEED);
- TransposeOptimizer iterates `set(node.inputs)` (addresses), BackToBackOptimizer seeds its
  work queue from `set(str) - set(str)` (hash seed);
- `utils.make_name`'s counter is process-global: a second conversion in one process numbers
  its nodes after the first's.

`deterministic_tf2onnx()` fixes those orders for the duration of one conversion (graph order,
name order, insertion order) and restores tf2onnx afterwards. The graph tf2onnx builds is the
same set of nodes either way; only the order of equal choices is pinned.
"""
from __future__ import annotations

import contextlib


class _InsertionOrderedSet(dict):
    """The parts of `set` tf2onnx's transpose/back-to-back optimizers use, iterating in insertion
    order instead of hash order (a dict's keys)."""

    def __init__(self, items=()) -> None:
        super().__init__(dict.fromkeys(items))

    def add(self, item) -> None:
        self[item] = None

    def discard(self, item) -> None:
        self.pop(item, None)

    def __sub__(self, other):
        return _InsertionOrderedSet(k for k in self if k not in other)

    def __and__(self, other):
        return _InsertionOrderedSet(k for k in self if k in other)

    def __or__(self, other):
        return _InsertionOrderedSet([*self, *other])

    def intersection(self, other):
        return self & _InsertionOrderedSet(other)

    def union(self, other):
        return self | _InsertionOrderedSet(other)

    def issubset(self, other) -> bool:
        return all(k in other for k in self)


@contextlib.contextmanager
def deterministic_tf2onnx():
    import tf2onnx.graph as tg
    import tf2onnx.utils as tu
    from tf2onnx.optimizer import back_to_back_optimizer, transpose_optimizer

    graph_cls = tg.Graph
    orig_consumers = graph_cls.find_output_consumers
    orig_extract = graph_cls.extract_sub_graph_nodes

    def find_output_consumers(self, output_name):
        return sorted(orig_consumers(self, output_name), key=lambda n: n.name)

    def extract_sub_graph_nodes(self, *args, **kwargs):
        found = orig_extract(self, *args, **kwargs)
        ids = {id(n) for n in found}
        ordered = [n for n in self.get_nodes() if id(n) in ids]
        return ordered if len(ordered) == len(found) else sorted(found, key=lambda n: n.name)

    modules = (transpose_optimizer, back_to_back_optimizer)
    had_set = [("set" in vars(m), vars(m).get("set")) for m in modules]
    graph_cls.find_output_consumers = find_output_consumers
    graph_cls.extract_sub_graph_nodes = extract_sub_graph_nodes
    for m in modules:
        m.set = _InsertionOrderedSet  # module global shadows the builtin in that module only
    tu.INTERNAL_NAME = 1  # every conversion numbers its new nodes from the same start
    try:
        yield
    finally:
        graph_cls.find_output_consumers = orig_consumers
        graph_cls.extract_sub_graph_nodes = orig_extract
        for m, (had, old) in zip(modules, had_set):
            if had:
                m.set = old
            else:
                del m.set
