"""What a model scan reports: one `Finding` per risky thing, its kind's risk, and the op names
both scanners (edgekit.security.scan and edgekit.security.savedmodel) match on. A module of its own so the
SavedModel reader and the scan can share them without importing each other.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

# Graph ops that call back into Python: modelscan reports them by name, scan_savedmodel finds them.
PYTHON_CALLBACK_OPS = frozenset({"PyFunc", "PyFuncStateless", "EagerPyFunc"})
# Finding.kind -> the one-line risk a refusal shows.
RISKS = {
    "lambda-layer": "Python code stored in the file, run when the model is loaded or called",
    "custom-object": "a class from outside tf_keras/tfmot: loading it imports and runs that code",
    "tf-function": ("a TensorFlow function that is not a pure math/array op: the loader looks it up by "
                    "name and runs it on every call (tf.print, for one, writes to files)"),
    "builtin-function": ("a Python built-in that is not a tf_keras activation, loss or initializer: "
                         "the loader looks it up by name and calls it"),
    "python-callback-op": "a graph op that calls Python code when the graph runs",
    "file-op": "a graph op that reads or writes files when the graph runs",
    "checkpoint-op": ("a checkpoint op outside the SavedModel's own save/restore functions: it reads or "
                      "writes files when the graph runs"),
    "unknown-op": "an op TensorFlow does not know, from a custom kernel library",
    "scan-error": "the file could not be scanned, so nothing vouches for it",
}


@dataclass(frozen=True)
class Finding:
    """One thing in a model file that can run code or touch the machine when it is loaded or run."""
    kind: str        # a key of RISKS
    name: str        # layer name and class, or op name
    where: str       # the file (or archive member) it was found in
    found_by: str    # "modelscan" or "edgekit"

    def __post_init__(self) -> None:
        # names come from the file: no control characters (the refusal stays one line), no essays
        for field in ("name", "where"):
            text = "".join(c if c.isprintable() else "?" for c in str(getattr(self, field)))
            object.__setattr__(self, field, text if len(text) <= 160 else text[:157] + "...")

    @property
    def risk(self) -> str:
        return RISKS[self.kind]

    def to_dict(self) -> dict:
        return dict(asdict(self), risk=self.risk)
