"""How each export variant's file is made from the Keras models (the rows live in edgekit.core.variants).

Every TFLite file is converted from one concrete function, `{"logits": model(image)}`, with a
dynamic batch dimension (runtimes can resize it), so every file, QAT ones included, has one
signature `serving_default` with input "image" and output "logits", and its I/O tensors carry
those names too. Every ONNX file takes a float32 NHWC input named "image" with a dynamic batch.
After conversion each file's input dtype is checked against its variant's declared `io_dtype`.
The int8 ONNX files hold 8-bit weight initializers, by default as uint8 with zero point 128
(u8u8: no CPU's integer kernel saturates on them; see edgekit.convert.onnx_int8); the orchestration
(paths, manifest, parity) lives in edgekit.export.
"""
from __future__ import annotations

import contextlib
import functools
import struct
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from edgekit.errors import ConfigError, ExportError, ModelError, one_line
from edgekit.core.variants import Format, Variant, VariantClass, file_format, register_converter

OUTPUT_NAME = "logits"  # the one output of every file (the input is ConversionInputs.input_name)


@dataclass(frozen=True)
class ConversionInputs:
    float_model: Any                  # tf_keras model, logits output
    qat_model: Any | None             # QAT-wrapped, fine-tuned tf_keras model; None if QAT unavailable
    representative: np.ndarray | None # float32 NHWC calibration images in the model's input range
    opset: int = 17
    input_name: str = "image"
    onnx_int8_encoding: str = "u8u8"  # weight storage of the int8 ONNX files (edgekit.convert.onnx_int8.encode_weights)
    # written into every file's metadata (edgekit.convert.metadata), for the app that deploys it
    source_sha256: str | None = None  # the source model file's
    labels: tuple[str, ...] | None = None  # class names in output order (--labels FILE)
    input_range: tuple[float, float] | None = None  # float range of the inputs; None: the representative set's


def checked(make: Callable[[ConversionInputs, Path], None]):
    """A converter as the registry calls it, (variant, inputs, path): first check it has the QAT model
    or calibration images its row says it needs, then write, then check the file's input dtype is
    the declared `io_dtype`, so a converter that silently keeps float I/O (or a wrong flag) cannot
    pass for an int8 file, and last write what its app needs into it (edgekit.convert.metadata).
    The bare converter stays callable as `.convert`."""
    @functools.wraps(make)
    def converter(variant: Variant, inputs: ConversionInputs, path: Path) -> None:
        from edgekit.convert import keras3

        if variant.needs_calibration:
            _require_calibration(inputs, variant.name)
        if variant.needs_qat:
            keras3.refuse_qat(inputs.float_model)
            _require_qat(inputs, variant.name)
        make(inputs, path)
        io = io_details(path)
        got = io[0][0]["dtype"]
        if got != variant.io_dtype:
            Path(path).unlink(missing_ok=True)
            raise ExportError(f"variant '{variant.name}' declares {variant.io_dtype} input but the converted file "
                              f"takes {got}; fix the variant's converter settings or its declared io_dtype")
        _write_metadata(variant, inputs, Path(path), io)
    converter.convert = make
    return converter


def _write_metadata(variant: Variant, inputs: ConversionInputs, path: Path, io) -> None:
    from edgekit.convert.metadata import describe, write_metadata

    x, span = inputs.representative, inputs.input_range
    if span is None and x is not None and len(x):
        span = (float(np.min(x)), float(np.max(x)))
    try:
        write_metadata(path, describe(variant.name, io, inputs.float_model, source_sha256=inputs.source_sha256,
                                      labels=inputs.labels, input_range=span))
    except Exception:
        path.unlink(missing_ok=True)  # a file without its metadata is not a finished file
        raise


# ----------------------------------------------------------------------------- TFLite

def _tflite(model, path: Path, configure: Callable[[Any], None], what: str, input_name: str) -> None:
    """Convert through a concrete function so the signature's keys are ours, not the layers'
    (`from_keras_model` names a QAT model's output after its `quant_logits` wrapper); a Keras 3
    model through a SavedModel with that same signature (edgekit.convert.keras3)."""
    try:
        with _tflite_converter(model, input_name) as converter:
            configure(converter)
            with warnings.catch_warnings():
                # int8 I/O: TF warns it has no input statistics, yet the input range is known
                warnings.filterwarnings("ignore", message="Statistics for quantized inputs")
                data = converter.convert()
    except ExportError:
        raise
    except Exception as e:  # the converter raises ConverterError/ValueError/RuntimeError
        raise ExportError(f"TFLite {what} conversion of '{model.name}' failed ({one_line(e, 200)}); "
                          f"check the model's layers are TFLite-supported") from e
    Path(path).write_bytes(_name_io_tensors(data))


@contextlib.contextmanager
def _tflite_converter(model, input_name: str):
    import tensorflow as tf

    from edgekit.convert import keras3

    if keras3.is_keras3(model):
        with keras3.saved_model(model, input_name, OUTPUT_NAME) as saved:
            yield keras3.tflite_converter(saved)
        return
    spec = tf.TensorSpec([None, *model.input_shape[1:]], tf.float32, name=input_name)
    fn = tf.function(lambda image: {OUTPUT_NAME: model(image, training=False)}, input_signature=[spec])
    yield tf.lite.TFLiteConverter.from_concrete_functions([fn.get_concrete_function()], model)


def _name_io_tensors(data: bytes) -> bytes:
    """Give each signature tensor its key as its name ("image", "logits"), rewriting in place.

    The converter names them after the graph: `serving_default_image:0`, `StatefulPartitionedCall:0`,
    or for int8 QAT I/O the fake-quant op it folded (`cnn/quantize_layer/...;...`, `tfl.quantize`);
    no converter option sets them. A flatbuffer string can be shortened where it lies (new length,
    bytes, NUL padding), which leaves every other byte as converted: repacking through the
    flatbuffers object API would drop the 16-byte alignment of the weight buffers. Where the key is
    longer than the converter's name, or another tensor shares the name string, the name stays.
    """
    from ai_edge_litert import schema_py_generated as schema

    buf = bytearray(data)
    model = schema.Model.GetRootAs(buf, 0)

    def name_at(tensor) -> int | None:  # where the name string (uint32 length, bytes) starts
        slot = tensor._tab.Offset(10)  # Tensor.name, as schema.Tensor.Name() reads it
        return tensor._tab.Indirect(slot + tensor._tab.Pos) if slot else None

    starts = [name_at(sub.Tensors(t)) for sub in map(model.Subgraphs, range(model.SubgraphsLength()))
              for t in range(sub.TensorsLength())]
    for s in range(model.SignatureDefsLength()):
        sig = model.SignatureDefs(s)
        sub = model.Subgraphs(sig.SubgraphIndex())
        maps = [sig.Inputs(i) for i in range(sig.InputsLength())]
        maps += [sig.Outputs(i) for i in range(sig.OutputsLength())]
        for m in maps:
            start, key = name_at(sub.Tensors(m.TensorIndex())), m.Name()
            if start is None or starts.count(start) != 1:
                continue
            old_len = struct.unpack_from("<I", buf, start)[0]
            if len(key) <= old_len:  # "s" pads the rest of the old string, and its NUL, with NULs
                struct.pack_into(f"<I{old_len + 1}s", buf, start, len(key), key)
    return bytes(buf)


def _representative_gen(x: np.ndarray):
    def gen():
        for i in range(len(x)):
            yield [np.ascontiguousarray(x[i:i + 1], np.float32)]
    return gen


def _require_calibration(inputs: ConversionInputs, variant: str, left_float: list[str] | None = None) -> np.ndarray:
    x = inputs.representative
    if x is None or len(x) == 0:
        why = (f" (its QAT model leaves {len(left_float)} layers float, e.g. '{left_float[0]}')"
               if left_float else "")
        raise ConfigError(f"variant '{variant}' needs calibration images{why}; pass a representative set "
                          f"(profile representative_samples > 0 or --calibration FILE)")
    want = tuple(int(d) for d in inputs.float_model.input_shape[1:])
    if tuple(x.shape[1:]) != want:
        raise ConfigError(f"calibration images have shape {tuple(x.shape[1:])}, the model takes {want}; "
                          f"pass images of shape (N, {', '.join(map(str, want))})")
    return np.asarray(x, np.float32)


def _require_qat(inputs: ConversionInputs, variant: str):
    if inputs.qat_model is None:
        raise ModelError(f"variant '{variant}' needs the QAT model, which is unavailable for this network; "
                         f"drop '{variant}' from the profile's variants")
    return inputs.qat_model


@register_converter(Format.TFLITE, VariantClass.FLOAT)
@checked
def make_tflite_fp32(inputs: ConversionInputs, path: Path) -> None:
    _tflite(inputs.float_model, path, lambda c: None, "fp32", inputs.input_name)


@register_converter(Format.TFLITE, VariantClass.FP16)
@checked
def make_tflite_fp16(inputs: ConversionInputs, path: Path) -> None:
    import tensorflow as tf

    def configure(c):
        c.optimizations = [tf.lite.Optimize.DEFAULT]
        c.target_spec.supported_types = [tf.float16]
    _tflite(inputs.float_model, path, configure, "fp16", inputs.input_name)


@register_converter(Format.TFLITE, VariantClass.DYNAMIC)
@checked
def make_tflite_dynamic(inputs: ConversionInputs, path: Path) -> None:
    import tensorflow as tf

    def configure(c):
        c.optimizations = [tf.lite.Optimize.DEFAULT]
    _tflite(inputs.float_model, path, configure, "dynamic-range", inputs.input_name)


@register_converter(Format.TFLITE, VariantClass.INT8_PTQ)
@checked
def make_tflite_int8_ptq(inputs: ConversionInputs, path: Path) -> None:
    import tensorflow as tf

    x = inputs.representative   # present: `checked` requires it for this row

    def configure(c):
        c.optimizations = [tf.lite.Optimize.DEFAULT]
        c.representative_dataset = _representative_gen(x)
        c.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        c.inference_input_type = tf.int8
        c.inference_output_type = tf.int8
    _tflite(inputs.float_model, path, configure, "int8 post-training", inputs.input_name)


@register_converter(Format.TFLITE, VariantClass.INT8_QAT)
@checked
def make_tflite_int8_qat(inputs: ConversionInputs, path: Path) -> None:
    """Full int8 from the QAT model. A fully quantized one carries every range in its quantizers:
    no representative set. One with layers left float (edgekit.convert.quantize.qat_float_layers)
    has tensors without a range; without calibration the converter leaves them float, float input
    included (it ignores inference_input_type), so those ranges are calibrated on the
    representative set and TFLITE_BUILTINS_INT8 makes a float op an error, not a silent hybrid."""
    import tensorflow as tf

    from edgekit.convert.quantize import qat_float_layers

    qat = inputs.qat_model      # present: `checked` requires it for this row
    left_float = qat_float_layers(qat)
    x = _require_calibration(inputs, Path(path).stem, left_float) if left_float else None

    def configure(c):
        c.optimizations = [tf.lite.Optimize.DEFAULT]
        if x is not None:
            c.representative_dataset = _representative_gen(x)
            c.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        c.inference_input_type = tf.int8
        c.inference_output_type = tf.int8
    _tflite(qat, path, configure, "int8 QAT", inputs.input_name)


# ----------------------------------------------------------------------------- ONNX

@register_converter(Format.ONNX, VariantClass.FLOAT)
@checked
def make_onnx_fp32(inputs: ConversionInputs, path: Path) -> None:
    import onnx

    from edgekit.convert import keras3
    from edgekit.convert.onnx_int8 import compact, keras_to_onnx

    model = inputs.float_model
    proto = (keras3.to_onnx(model, inputs.opset, inputs.input_name, OUTPUT_NAME) if keras3.is_keras3(model)
             else keras_to_onnx(model, inputs.opset, inputs.input_name))
    onnx.save(compact(proto), str(path))


@register_converter(Format.ONNX, VariantClass.INT8_QAT)
@checked
def make_onnx_int8_qat(inputs: ConversionInputs, path: Path) -> None:
    from edgekit.convert.onnx_int8 import qat_onnx_int8

    qat_onnx_int8(inputs.qat_model, path, inputs.opset, inputs.input_name,
                  encoding=inputs.onnx_int8_encoding)


@register_converter(Format.ONNX, VariantClass.INT8_PTQ)
@checked
def make_onnx_int8_ptq(inputs: ConversionInputs, path: Path) -> None:
    from edgekit.convert.memory import activation_bytes_per_sample, batch_for_memory
    from edgekit.convert.onnx_int8 import ptq_onnx_int8

    # ORT's calibration keeps every tensor of every image until the end (edgekit.convert.onnx_int8):
    # about twice the activations an image, so a large model is calibrated on fewer images (>= 8)
    per_image = activation_bytes_per_sample(inputs.float_model)
    x = inputs.representative[:batch_for_memory(per_image, most=len(inputs.representative), factor=2,
                                                least=min(8, len(inputs.representative)))]
    batch = batch_for_memory(per_image, most=32, factor=2)
    with tempfile.TemporaryDirectory(prefix="edgekit-onnx-") as tmp:
        fp32 = Path(tmp) / "fp32.onnx"
        make_onnx_fp32.convert(inputs, fp32)
        ptq_onnx_int8(fp32, x, path, inputs.input_name, encoding=inputs.onnx_int8_encoding, calibration_batch=batch)


# ----------------------------------------------------------------------------- file I/O details

def io_details(path: str | Path) -> tuple[list[dict], list[dict]]:
    """Per input/output: name, signature and signature_key, shape (-1 for dynamic), dtype, scale and
    zero_point (None for float).

    TFLite: `signature` is the signature holding the tensor ("serving_default") and `signature_key`
    its key there ("image", "logits"); both None in a file without signatures. ONNX has no
    signatures: `signature` is None and `signature_key` is the graph I/O name, which plays that role.
    """
    path = Path(path)
    return _tflite_io(path) if file_format(path, "io_details") is Format.TFLITE else _onnx_io(path)


def _tflite_io(path: Path) -> tuple[list[dict], list[dict]]:
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    try:
        it = Interpreter(model_path=str(path),
                         experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    except (ValueError, RuntimeError) as e:
        raise ModelError(f"{path}: LiteRT cannot load this file ({e}); re-export it") from e

    keys: dict[int, tuple[str, str]] = {}  # tensor index -> (signature, key)
    for sig in it.get_signature_list():
        runner = it.get_signature_runner(sig)
        for details in (runner.get_input_details(), runner.get_output_details()):
            keys.update({int(d["index"]): (sig, key) for key, d in details.items()})

    def one(d: dict) -> dict:
        scale, zp = d["quantization"]
        quantized = np.dtype(d["dtype"]).kind in "iu" and scale != 0.0
        sig, key = keys.get(int(d["index"]), (None, None))
        return {"name": d["name"], "signature": sig, "signature_key": key,
                "shape": [int(s) for s in d["shape_signature"]],
                "dtype": np.dtype(d["dtype"]).name,
                "scale": float(scale) if quantized else None, "zero_point": int(zp) if quantized else None}
    return [one(d) for d in it.get_input_details()], [one(d) for d in it.get_output_details()]


def _onnx_io(path: Path) -> tuple[list[dict], list[dict]]:
    import onnx
    from onnx import helper

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as e:  # protobuf DecodeError and friends
        raise ModelError(f"{path}: not a readable ONNX file ({type(e).__name__}); re-export it") from e
    inits = {i.name for i in model.graph.initializer}

    def one(vi) -> dict:
        t = vi.type.tensor_type
        shape = [d.dim_value if d.HasField("dim_value") else -1 for d in t.shape.dim]
        return {"name": vi.name, "signature": None, "signature_key": vi.name, "shape": shape,
                "dtype": np.dtype(helper.tensor_dtype_to_np_dtype(t.elem_type)).name,
                "scale": None, "zero_point": None}
    return ([one(v) for v in model.graph.input if v.name not in inits], [one(v) for v in model.graph.output])
