"""Read a SavedModel folder as data for edgekit.security.scan: its Keras configs and its graph ops.

Two things in a SavedModel run on load or on every call, and neither needs TensorFlow to load it
to be seen:
- the Keras metadata: one JSON per saved object (the model config with every nested layer, then
  each layer's own), in keras_metadata.pb, or for SavedModels older than TF 2.5 in saved_model.pb's
  object graph (`user_object.metadata`). tf_keras revives Lambda layers and op layers from it, so
  both places get the same config walk as a `.keras` file;
- the graph: ops that call Python, write or read files (tf.print to a file, summaries, debug
  dumps, file-backed datasets, memory-mapped constants), in every graph and function. Checkpoint
  ops are normal only where the SavedModel keeps them: the functions its saver_def names
  (tf_keras writes them as `__inference__traced_save_*` / `__inference__traced_restore_*`).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

from edgekit.errors import ModelError
from edgekit.security.findings import PYTHON_CALLBACK_OPS, Finding

METADATA_FILE = "keras_metadata.pb"
# Ops that read or write files (or map them into memory) as the graph runs; modelscan already
# lists ReadFile and WriteFile. Names ending in a version suffix are matched by prefix.
FILE_OPS = frozenset({"PrintV2", "MatchingFiles", "ImmutableConst", "LoadDataset", "DatasetToTFRecord",
                      "ExperimentalDatasetToTFRecord", "CreateSummaryFileWriter", "CreateSummaryDbWriter",
                      "SummaryWriter", "ImportEvent", "FlushSummaryWriter", "CloseSummaryWriter",
                      "WholeFileReader", "WholeFileReaderV2", "TFRecordReader", "TFRecordReaderV2",
                      "TextLineReader", "TextLineReaderV2", "FixedLengthRecordReader",
                      "FixedLengthRecordReaderV2", "LMDBReader"})
FILE_OP_PREFIXES = ("TFRecordDataset", "TextLineDataset", "FixedLengthRecordDataset", "SaveDataset",
                    "DebugIdentity", "CSVDataset", "ExperimentalCSVDataset", "SqlDataset",
                    "ExperimentalSqlDataset", "LMDBDataset", "ExperimentalLMDBDataset", "SnapshotDataset")
SAVE_OPS = frozenset({"Save", "SaveSlices", "SaveV2", "MergeV2Checkpoints"})
RESTORE_OPS = frozenset({"Restore", "RestoreSlice", "RestoreV2"})


def metadata_configs(path: Path) -> Iterator[tuple[dict, str]]:
    """Every Keras metadata JSON of the SavedModel, with the file it came from; both places are
    read (tf_keras reads the .pb file when present, else the object graph)."""
    from google.protobuf.message import DecodeError
    from tf_keras.protobuf import saved_metadata_pb2

    meta = path / METADATA_FILE
    if meta.is_file():
        try:
            nodes = saved_metadata_pb2.SavedMetadata.FromString(meta.read_bytes()).nodes
        except (OSError, DecodeError) as e:
            raise ModelError(f"{meta}: not readable Keras metadata ({type(e).__name__}: {e}); "
                             f"save the model again") from e
        for node in nodes:
            yield _json(node.metadata, meta), str(meta)
    pb = path / "saved_model.pb"
    for graph in read_saved_model(path).meta_graphs:
        for node in graph.object_graph_def.nodes:
            if node.WhichOneof("kind") == "user_object" and node.user_object.metadata:
                yield _json(node.user_object.metadata, pb), str(pb)


def graph_op_findings(path: Path) -> list[Finding]:
    """Ops that call Python or touch files, in every meta graph and every function of its library."""
    pb = str(path / "saved_model.pb")
    found = set()
    for graph in read_saved_model(path).meta_graphs:
        functions = {fn.signature.name: fn for fn in graph.graph_def.library.function}
        save_fns, restore_fns = _saver_functions(graph, functions)
        bodies = [("", graph.graph_def.node)] + [(name, fn.node_def) for name, fn in functions.items()]
        for fn_name, nodes in bodies:
            for node in nodes:
                op = node.op
                if op in PYTHON_CALLBACK_OPS:
                    found.add(Finding("python-callback-op", op, pb, "edgekit"))
                elif op in FILE_OPS or op.startswith(FILE_OP_PREFIXES) or _is_summary_write(op):
                    found.add(Finding("file-op", op, pb, "edgekit"))
                elif op in SAVE_OPS and fn_name not in save_fns or op in RESTORE_OPS and fn_name not in restore_fns:
                    found.add(Finding("checkpoint-op", op, pb, "edgekit"))
    return sorted(found, key=lambda f: (f.kind, f.name))


def read_saved_model(path: Path):
    """saved_model.pb as a protobuf message (parsed, never loaded)."""
    from google.protobuf.message import DecodeError
    from tensorflow.core.protobuf import saved_model_pb2

    pb = path / "saved_model.pb"
    try:
        return saved_model_pb2.SavedModel.FromString(pb.read_bytes())
    except (OSError, DecodeError) as e:
        raise ModelError(f"{pb}: not a readable SavedModel ({type(e).__name__}: {e}); save the model again") from e


def _is_summary_write(op: str) -> bool:
    return op.startswith(("Write", "ExperimentalWrite")) and op.endswith("Summary")


def _saver_functions(graph, functions: dict) -> tuple[set[str], set[str]]:
    """The functions the saver_def's save and restore nodes call, with everything they call."""
    saver = graph.saver_def
    by_name = {n.name: n for n in graph.graph_def.node}
    out = []
    for tensor in (saver.save_tensor_name, saver.restore_op_name):
        node = by_name.get(tensor.split(":")[0].lstrip("^")) if tensor else None
        out.append(_callees([node] if node is not None else [], functions))
    return out[0], out[1]


def _callees(nodes: list, functions: dict) -> set[str]:
    """Names of the library functions these nodes call, transitively (attr `f` or the op name)."""
    seen: set[str] = set()
    todo = list(nodes)
    while todo:
        node = todo.pop()
        names = [a.func.name for a in node.attr.values() if a.HasField("func")] + [node.op]
        for name in names:
            if name in functions and name not in seen:
                seen.add(name)
                todo.extend(functions[name].node_def)
    return seen


def _json(text: str, where: Path) -> dict:
    try:
        value = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as e:
        raise ModelError(f"{where}: Keras metadata that is not JSON ({type(e).__name__}); refusing to load it; "
                         f"save the model again") from e
    if not isinstance(value, dict):
        return {"metadata": value}
    value.pop("training_config", None)   # optimizer and losses: read only by compile=True, never by edgekit
    return value
