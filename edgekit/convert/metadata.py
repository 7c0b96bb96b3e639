"""What the app that deploys a file needs, written into the file itself and read back.

Every exported file carries its input and output (name, shape, dtype, int8 scale and zero point),
the float range its inputs come in and the preprocessing the model does itself (so the app knows
what to feed and how to quantize it), the class labels when given, the edgekit version and the
source model's sha256: an app or a reviewer holding only the file can check what it is.

- TFLite: a JSON blob in the flatbuffer's `metadata` list under "edgekit" (the converter's
  "min_runtime_version" entry stays). The entry is added without repacking the flatbuffer
  (repacking through the object API drops the 16-byte alignment of the weight buffers): a new
  root table, buffers and metadata vectors are inserted after the 8-byte header, a multiple of
  16 bytes long, and point forward at the converter's own tables, which keep every byte and their
  alignment. The old root table stays behind, unreferenced.
- ONNX: `metadata_props`, one key per field ("edgekit.input_shape", "edgekit.labels", ...), each
  value JSON.
"""
from __future__ import annotations

import json
import struct
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from edgekit.core.variants import Format, file_format
from edgekit.errors import ConfigError, ExportError, ModelError

TFLITE_KEY = "edgekit"        # the TFLite metadata entry's name
ONNX_PREFIX = "edgekit."      # the ONNX metadata_props keys' prefix
SCHEMA = 1                    # FileMetadata's layout; bumped when a field changes meaning
PREPROCESSING_LAYERS = ("Rescaling", "Normalization")


@dataclass(frozen=True)
class FileMetadata:
    """One exported file as its app sees it. Quantized I/O: real = (q - zero_point) * scale."""
    edgekit_version: str
    variant: str                                   # e.g. "tflite-int8-ptq"
    input_name: str
    input_shape: tuple[int, ...]                   # -1: dynamic (the batch)
    input_dtype: str
    output_name: str
    output_shape: tuple[int, ...]
    output_dtype: str
    input_scale: float | None = None               # int8 input only
    input_zero_point: int | None = None
    output_scale: float | None = None
    output_zero_point: int | None = None
    input_range: tuple[float, float] | None = None  # float range of the inputs it was calibrated/validated on
    preprocessing: tuple[str, ...] = ()            # what the model does to its input itself (app: do not repeat)
    labels: tuple[str, ...] | None = None          # class names, index = output position
    source_sha256: str | None = None               # the Keras model file it was made from
    schema: int = SCHEMA

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict) -> "FileMetadata":
        known = {f.name for f in fields(cls)}
        tuples = {"input_shape", "output_shape", "input_range", "preprocessing", "labels"}
        return cls(**{k: tuple(v) if k in tuples and v is not None else v for k, v in d.items() if k in known})


def describe(variant: str, io: tuple[list[dict], list[dict]], model: Any = None, *,
             source_sha256: str | None = None, labels: tuple[str, ...] | None = None,
             input_range: tuple[float, float] | None = None) -> FileMetadata:
    """The metadata of a converted file from its io_details (edgekit.convert.converters) and, when
    given, the Keras model it came from (for the preprocessing it does itself)."""
    from edgekit.core.version import __version__

    ins, outs = io
    if len(ins) != 1 or len(outs) != 1:
        raise ExportError(f"variant '{variant}': a file with {len(ins)} inputs and {len(outs)} outputs; "
                          f"edgekit exports single-input, single-output classifiers")
    i, o = ins[0], outs[0]
    if labels is not None:
        check_labels(labels, o["shape"][-1])
    return FileMetadata(
        edgekit_version=__version__, variant=variant,
        input_name=i["signature_key"] or i["name"], input_shape=tuple(i["shape"]), input_dtype=i["dtype"],
        output_name=o["signature_key"] or o["name"], output_shape=tuple(o["shape"]), output_dtype=o["dtype"],
        input_scale=i["scale"], input_zero_point=i["zero_point"],
        output_scale=o["scale"], output_zero_point=o["zero_point"],
        input_range=None if input_range is None else (float(input_range[0]), float(input_range[1])),
        preprocessing=model_preprocessing(model) if model is not None else (),
        labels=None if labels is None else tuple(labels), source_sha256=source_sha256)


def model_preprocessing(model: Any) -> tuple[str, ...]:
    """The Rescaling / Normalization layers a Keras model (tf_keras or Keras 3) applies to its
    input before anything else, as the formula it computes."""
    out = []
    for layer in getattr(model, "layers", []):
        kind = type(layer).__name__
        if kind == "InputLayer":
            continue
        if kind not in PREPROCESSING_LAYERS:
            break
        if kind == "Rescaling":
            out.append(f"{layer.name}: x * {float(layer.scale):.8g} + {float(layer.offset):.8g}")
        else:
            mean, var = (_floats(getattr(layer, a)) for a in ("mean", "variance"))
            out.append(f"{layer.name}: (x - {mean}) / sqrt({var})")
    return tuple(out)


def _floats(value: Any) -> float | list[float]:
    import numpy as np

    a = np.asarray(value, np.float64).ravel()
    return round(float(a[0]), 8) if a.size == 1 else [round(float(v), 8) for v in a]


def read_labels(path: str | Path) -> tuple[str, ...]:
    """Class names from a text file, one a line (`--labels FILE`); blank lines at the end are ignored."""
    path = Path(path).expanduser()
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot read the labels file ({type(e).__name__}); give a UTF-8 text file "
                          f"with one class name a line") from e
    while lines and not lines[-1].strip():
        lines.pop()
    labels = tuple(line.strip() for line in lines)
    if not labels or any(not name for name in labels):
        raise ConfigError(f"{path}: {'no class names' if not labels else 'a blank line among the class names'}; "
                          f"give one class name a line")
    return labels


def check_labels(labels: tuple[str, ...], classes: int) -> None:
    if classes > 0 and len(labels) != classes:
        raise ConfigError(f"{len(labels)} class labels but the model outputs {classes} classes; "
                          f"give one label a class, in output order")


# ----------------------------------------------------------------------------- write / read

def write_metadata(path: str | Path, meta: FileMetadata) -> None:
    """Put `meta` into the file (replacing edgekit metadata written before); the model is unchanged."""
    path = Path(path)
    if file_format(path, "metadata") is Format.TFLITE:
        blob = json.dumps(meta.to_json(), sort_keys=True).encode()
        path.write_bytes(tflite_with_metadata(path.read_bytes(), TFLITE_KEY, blob))
    else:
        _write_onnx(path, meta)


def read_metadata(path: str | Path) -> dict:
    """The edgekit metadata of a .tflite or .onnx file as its JSON dict ({} when it has none);
    FileMetadata.from_json(read_metadata(p)) for the typed view."""
    path = Path(path)
    if file_format(path, "metadata") is Format.TFLITE:
        blob = tflite_metadata(path.read_bytes()).get(TFLITE_KEY)
        return {} if blob is None else json.loads(blob)
    return _read_onnx(path)


def _write_onnx(path: Path, meta: FileMetadata) -> None:
    import onnx

    model = onnx.load(str(path))
    kept = [p for p in model.metadata_props if not p.key.startswith(ONNX_PREFIX)]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    for key, value in meta.to_json().items():
        model.metadata_props.add(key=ONNX_PREFIX + key, value=json.dumps(value))
    onnx.save(model, str(path))


def _read_onnx(path: Path) -> dict:
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as e:  # protobuf DecodeError and friends
        raise ModelError(f"{path}: not a readable ONNX file ({type(e).__name__}); re-export it") from e
    return {p.key[len(ONNX_PREFIX):]: json.loads(p.value) for p in model.metadata_props
            if p.key.startswith(ONNX_PREFIX)}


# ----------------------------------------------------------------------------- TFLite flatbuffer

def tflite_metadata(data: bytes) -> dict[str, bytes]:
    """Every metadata entry of a TFLite flatbuffer: name -> its buffer's bytes."""
    model = _tflite_model(data)
    out = {}
    for i in range(model.MetadataLength()):
        entry = model.Metadata(i)
        buf = model.Buffers(entry.Buffer())
        out[entry.Name().decode()] = buf.DataAsNumpy().tobytes() if buf.DataLength() else b""
    return out


def _tflite_model(data: bytes):
    from ai_edge_litert import schema_py_generated as schema

    if len(data) < 8 or not schema.Model.ModelBufferHasIdentifier(data, 0):
        raise ModelError("not a TFLite flatbuffer (no TFL3 identifier); re-export it")
    return schema.Model.GetRootAs(data, 0)


class _Prefix:
    """Bytes inserted after the header; `at(rel)` is their absolute position in the new file."""

    def __init__(self) -> None:
        self.b = bytearray()

    def reserve(self, n: int) -> int:
        start = len(self.b)
        self.b += bytes(n + (-n) % 4)   # every item 4-aligned: the verifier checks scalar alignment
        return start

    @staticmethod
    def at(rel: int) -> int:
        return 8 + rel


def tflite_with_metadata(data: bytes, name: str, blob: bytes) -> bytes:
    """`data` with metadata entry `name` -> `blob` (an entry of that name is replaced). Every byte
    of the converted model is kept, shifted by a multiple of 16 (see the module docstring)."""
    model = _tflite_model(data)
    root = struct.unpack_from("<I", data, 0)[0]
    vtable = root - struct.unpack_from("<i", data, root)[0]
    vt_size = struct.unpack_from("<H", data, vtable)[0]
    slots = [struct.unpack_from("<H", data, vtable + 4 + 2 * k)[0] for k in range((vt_size - 4) // 2)]
    if len(slots) > 8:  # fields this schema does not know: copying them blindly could break the file
        raise ExportError(f"the TFLite file has {len(slots)} model fields, this edgekit knows 8; "
                          f"update edgekit to add metadata to it")
    slots += [0] * (8 - len(slots))
    buffers = [model.Buffers(b) for b in range(model.BuffersLength())]
    if any(b.Offset() > 1 for b in buffers):  # >2 GiB files locate buffers by absolute offset
        raise ExportError("metadata cannot be added to a TFLite file with external buffers (over 2 GiB)")
    entries = [model.Metadata(m) for m in range(model.MetadataLength())]
    entries = [e for e in entries if e.Name().decode() != name]
    key = name.encode()

    p = _Prefix()
    model_vt = p.reserve(4 + 2 * 8)
    table = p.reserve(4 + 4 * 8)             # soffset, version, 7 offsets
    buf_vec = p.reserve(4 + 4 * (len(buffers) + 1))
    meta_vec = p.reserve(4 + 4 * (len(entries) + 1))
    new_buf_vt, new_buf = p.reserve(6), p.reserve(8)
    blob_at = p.reserve(4 + len(blob))
    new_meta_vt, new_meta = p.reserve(8), p.reserve(12)
    name_at = p.reserve(4 + len(key) + 1)
    p.reserve((-len(p.b)) % 16)              # the shift of the old bytes: a multiple of 16
    shift = len(p.b)
    b, at = p.b, p.at

    def uoffset(field_rel: int, target_abs: int) -> None:
        struct.pack_into("<I", b, field_rel, target_abs - at(field_rel))

    # the root Model table: version copied, every offset re-aimed at the shifted originals
    struct.pack_into("<HH", b, model_vt, 4 + 2 * 8, 4 + 4 * 8)
    struct.pack_into("<i", b, table, table - model_vt)
    for k, slot in enumerate(slots):
        field = table + 4 + 4 * k
        if k in (4, 6):  # buffers, metadata: the new vectors
            uoffset(field, at(buf_vec if k == 4 else meta_vec))
        elif not slot:
            continue
        elif k == 0:     # version (uint32)
            b[field:field + 4] = data[root + slot:root + slot + 4]
        else:
            old = root + slot
            uoffset(field, old + struct.unpack_from("<I", data, old)[0] + shift)
        struct.pack_into("<H", b, model_vt + 4 + 2 * k, 4 + 4 * k)
    for vec, tables, new in ((buf_vec, [t._tab.Pos for t in buffers], new_buf),
                             (meta_vec, [t._tab.Pos for t in entries], new_meta)):
        struct.pack_into("<I", b, vec, len(tables) + 1)
        for j, pos in enumerate(tables):
            uoffset(vec + 4 + 4 * j, pos + shift)
        uoffset(vec + 4 + 4 * len(tables), at(new))
    # the new Buffer (data only) and Metadata (name, buffer index) tables
    struct.pack_into("<HHH", b, new_buf_vt, 6, 8, 4)
    struct.pack_into("<i", b, new_buf, new_buf - new_buf_vt)
    uoffset(new_buf + 4, at(blob_at))
    struct.pack_into(f"<I{len(blob)}s", b, blob_at, len(blob), blob)
    struct.pack_into("<HHHH", b, new_meta_vt, 8, 12, 4, 8)
    struct.pack_into("<i", b, new_meta, new_meta - new_meta_vt)
    uoffset(new_meta + 4, at(name_at))
    struct.pack_into("<I", b, new_meta + 8, len(buffers))
    struct.pack_into(f"<I{len(key)}s", b, name_at, len(key), key)
    header = struct.pack("<I", at(table)) + data[4:8]
    return header + bytes(b) + data[8:]
