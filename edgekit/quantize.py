"""Quantization: the QAT model (tfmot), its fine-tuning, calibration sets, and the int8 audit.

The audit exists because a file can *claim* int8 and not be: tf2onnx's QAT ONNX keeps float32
weights and ONNX Runtime runs it in float. It reads the weights' storage types and counts which
multiply-accumulates run in integer kernels *after* the runtime's own graph optimization.
"""
from __future__ import annotations

import math
import re
import weakref
from pathlib import Path

import numpy as np

from edgekit.errors import ConfigError, ModelError, one_line

MIN_INT8_WEIGHT_FRACTION = 0.95   # share of MAC-op weight elements stored as int8
MIN_INTEGER_MAC_FRACTION = 0.95   # share of MACs in integer kernels after runtime optimization

# QAT model -> the float model it wraps (not an attribute: Keras would track it as a child).
_FLOAT_SOURCE: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


# ----------------------------------------------------------------------------- QAT

def make_qat_model(float_model):
    """Wrap a float tf_keras model for quantization-aware training (tfmot default 8-bit scheme).

    Raises ModelError naming the first layer tfmot cannot quantize; the float variants do not
    need QAT and are still exported."""
    import tensorflow_model_optimization as tfmot

    for layer in float_model.layers:  # tfmot skips Lambda layers silently, leaving float ops inside
        if type(layer).__name__ == "Lambda":
            raise ModelError(_unsupported(layer.name, "Lambda"))
    try:
        qat = tfmot.quantization.keras.quantize_model(float_model)
    except (RuntimeError, ValueError, TypeError) as e:
        text = str(e)
        m = re.search(r"Layer (\S+):<class '[\w.]*?(\w+)'>", text)
        if m:
            raise ModelError(_unsupported(m.group(1), m.group(2))) from e
        bad = _first_unsupported(float_model)
        if bad is not None:
            raise ModelError(_unsupported(bad.name, type(bad).__name__)) from e
        raise ModelError(f"tensorflow-model-optimization cannot wrap model '{float_model.name}' for QAT "
                         f"({one_line(e, 160)}); the float variants are still "
                         f"exported, drop the *-int8-qat variants") from e
    _FLOAT_SOURCE[qat] = float_model  # lets finetune_qat start the activation ranges from it
    return qat


def _unsupported(name: str, cls: str) -> str:
    return (f"layer '{name}' ({cls}) cannot be quantized by tensorflow-model-optimization, so there is no QAT "
            f"model; the float variants are still exported; replace the layer or drop the *-int8-qat variants")


def _first_unsupported(model):
    from tensorflow_model_optimization.python.core.quantization.keras.default_8bit import (
        default_8bit_quantize_registry as reg)

    registry = reg.Default8BitQuantizeRegistry()
    for layer in model.layers:
        if type(layer).__name__ != "InputLayer" and not registry.supports(layer):
            return layer
    return None


def finetune_qat(qat_model, x: np.ndarray, y: np.ndarray, epochs: float, learning_rate: float,
                 batch_size: int = 128, seed: int = 0) -> dict:
    """Fine-tune a QAT model in place (Adam, sparse CE on logits); returns the history.

    Fractional epochs run that share of the steps of one pass. Before training, the activation
    ranges start from what the float model sees: tfmot starts them at [-6, 6] and moves them by a
    0.999 EMA, so after one epoch of Fashion-MNIST a ReLU's range still reaches ~-3.8, wasting
    nearly half of its 256 levels (and keeping ONNX Runtime from folding the ReLU)."""
    import tensorflow as tf
    import tf_keras

    if not epochs or epochs <= 0:
        raise ConfigError(f"QAT epochs must be > 0 (got {epochs}); a QAT model that never saw data has "
                          f"zero quantization ranges; set qat_epochs in the profile")
    x = np.asarray(x)
    if x.dtype == np.uint8:
        x = x.astype(np.float32) / np.float32(255.0)
    x = x.astype(np.float32, copy=False)
    y = np.asarray(y).astype(np.int64)
    if len(x) != len(y) or len(x) == 0:
        raise ConfigError(f"QAT fine-tuning needs as many labels as images (got {len(x)} images, {len(y)} labels)")
    tf_keras.utils.set_random_seed(seed)
    ranges = warm_start_ranges(qat_model, x, batch_size)

    steps_per_epoch = math.ceil(len(x) / batch_size)
    total = max(1, round(epochs * steps_per_epoch))
    fit_epochs = max(1, math.ceil(epochs))
    steps = math.ceil(total / fit_epochs)
    # shuffle indices, not images: the shuffle buffer stays small for 60k images
    xs, ys = tf.constant(x), tf.constant(y)
    ds = (tf.data.Dataset.range(len(x)).shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
          .repeat().batch(batch_size).map(lambda i: (tf.gather(xs, i), tf.gather(ys, i)))
          .prefetch(tf.data.AUTOTUNE))
    qat_model.compile(optimizer=tf_keras.optimizers.Adam(learning_rate),
                      loss=tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                      metrics=["accuracy"])
    hist = qat_model.fit(ds, epochs=fit_epochs, steps_per_epoch=steps, verbose=0)
    out = {k: [float(v) for v in vals] for k, vals in hist.history.items()}
    out.update(steps=int(fit_epochs * steps), epochs=float(epochs), batch_size=int(batch_size),
               learning_rate=float(learning_rate), warm_started_ranges=ranges)
    return out


def warm_start_ranges(qat_model, x: np.ndarray, batch_size: int = 128, max_samples: int = 2048) -> int:
    """Set each wrapper's output-quantizer min/max to the float model's mean per-batch min/max of
    that layer's output (the value tfmot's EMA converges to). Returns how many ranges were set;
    0 when the QAT model was not made by make_qat_model (no float model attached)."""
    import tf_keras

    float_model = _FLOAT_SOURCE.get(qat_model)
    if float_model is None:
        return 0
    targets = {}
    for wrapper in qat_model.layers:
        inner = getattr(wrapper, "layer", None)
        if inner is None:
            continue
        found = {}
        for v in wrapper.weights:
            short = v.name.split("/")[-1].split(":")[0]
            for kind in ("post_activation", "output"):
                if short in (f"{kind}_min", f"{kind}_max"):
                    found[short.rsplit("_", 1)[1]] = v
        if set(found) == {"min", "max"}:
            try:
                targets[inner.name] = (float_model.get_layer(inner.name), found)
            except ValueError:
                continue
    if not targets:
        return 0
    probe = tf_keras.Model(float_model.inputs, [layer.output for layer, _ in targets.values()])
    xs = x[np.random.default_rng(0).permutation(len(x))[:max_samples]]
    mins, maxs = [], []
    for i in range(0, len(xs), batch_size):
        outs = probe(xs[i:i + batch_size], training=False)
        outs = outs if isinstance(outs, (list, tuple)) else [outs]
        mins.append([float(np.min(o)) for o in outs])
        maxs.append([float(np.max(o)) for o in outs])
    lo, hi = np.mean(mins, axis=0), np.mean(maxs, axis=0)
    for (name, (_, found)), a, b in zip(targets.items(), lo, hi):
        found["min"].assign(min(float(a), 0.0))
        found["max"].assign(max(float(b), 0.0))
    return len(targets)


def representative_set(x: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """A seeded random sample of n training inputs (all of them if fewer), float32, for calibration."""
    if n <= 0:
        raise ConfigError(f"representative_samples must be > 0 (got {n}); set it in the profile")
    x = np.asarray(x)
    idx = np.sort(np.random.default_rng(seed).permutation(len(x))[:n])
    out = x[idx]
    if out.dtype == np.uint8:
        return out.astype(np.float32) / np.float32(255.0)
    return np.ascontiguousarray(out, np.float32)


# ----------------------------------------------------------------------------- audit

def audit_int8(path: str | Path) -> dict:
    """Does an int8 file hold int8 weights and run its MACs in integer kernels?

    {"weight_dtypes": {dtype: elements of MAC-op weights as stored}, "int8_weight_fraction"
     (8-bit: int8, or uint8 with a zero point as in u8u8 ONNX files), "integer_mac_fraction"
     (after the runtime's graph optimization), "macs": {"integer", "float"}, "ops": [per MAC op],
     "passed", "reason"}; ONNX files also get "saturation" (edgekit.saturation.saturation_audit).
    Saturation does not fail the audit: it is a property of some CPUs' kernels, judged by the
    kernel-fidelity check; the audit reports it so that any machine can see it."""
    path = Path(path)
    if path.suffix == ".tflite":
        ops, weights = tflite_mac_ops(path)
        runtime = "litert builtin kernels"
    elif path.suffix == ".onnx":
        from edgekit.onnx_audit import onnx_mac_ops, onnx_weight_dtypes
        from edgekit.saturation import saturation_audit

        ops, weights = onnx_mac_ops(path), onnx_weight_dtypes(path)
        audit = summarize_audit(ops, weights, "onnxruntime CPU, graph_optimization=all")
        audit["saturation"] = saturation_audit(path)  # what ORT's AVX2 U8S8 kernels would do to it
        return audit
    else:
        raise ConfigError(f"{path}: the int8 audit reads .tflite and .onnx files, not '{path.suffix}'")
    return summarize_audit(ops, weights, runtime)


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
