"""Quantization: the QAT model (tfmot), its fine-tuning, and calibration sets (the int8 audit of
the files made from them is edgekit.verify.audit)."""
from __future__ import annotations

import re
import weakref

import numpy as np

from edgekit.errors import ConfigError, ModelError, one_line

# QAT model -> the float model it wraps (not an attribute: Keras would track it as a child).
_FLOAT_SOURCE: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


# ----------------------------------------------------------------------------- QAT

# Activations tfmot's default 8-bit scheme can wrap: a Conv/Dense `activation` (its
# QuantizeAwareActivation) and an Activation layer (Default8BitActivationQuantizeConfig); any
# other one makes quantize_apply raise, so such a layer is left float like an unsupported one.
_LAYER_ACTIVATIONS = frozenset({"linear", "relu", "swish", "gelu", "softmax", "sigmoid", "tanh"})
_ACTIVATION_LAYER_ACTIVATIONS = _LAYER_ACTIVATIONS | {"relu6"}
# Layers that only move data: never a reason to call a model partially quantized.
_NO_COMPUTE = frozenset({"InputLayer", "QuantizeLayer", "Dropout", "SpatialDropout1D", "SpatialDropout2D",
                         "SpatialDropout3D", "ActivityRegularization"})


def make_qat_model(float_model):
    """Wrap a float tf_keras model for quantization-aware training (tfmot default 8-bit scheme).

    Every layer tfmot's default scheme can quantize is annotated; the rest (preprocessing such as
    Rescaling/Normalization, raw TF ops (TFOpLambda) such as MobileNetV3's hard-swish, Multiply,
    LayerNormalization, ...) stay float, as in tfmot's partial-quantization guide
    (`qat_float_layers` lists them; the int8 converters calibrate their ranges), except that the
    output of one feeding a quantized layer gets a QAT range (a QuantizeLayer, see _scheme). Raises
    ModelError, one line naming the layer, where no QAT model can be made (a Lambda layer, a
    nested model, a subclassed model, nothing quantizable); no other exception escapes. The float
    variants do not need QAT and are still exported."""
    try:
        import tensorflow_model_optimization as tfmot
        import tf_keras
    except ImportError as e:  # pragma: no cover - an install problem, still one line
        raise ModelError(f"QAT needs tensorflow-model-optimization and tf_keras ({one_line(e, 160)}); "
                         f"install them or drop the *-int8-qat variants") from e

    _check_structure(float_model, tf_keras)
    registry = _registry()
    chosen = _annotation_set(float_model, registry)
    if not chosen:
        raise ModelError(f"model '{float_model.name}' has no layer tensorflow-model-optimization can quantize "
                         f"(Conv2D, DepthwiseConv2D, Dense, ...), so there is no QAT model; the float variants "
                         f"are still exported; drop the *-int8-qat variants")
    for _ in range(_MAX_RETRIES):
        try:
            qat = _apply(float_model, chosen, tfmot, tf_keras)
            break
        except Exception as e:  # tfmot/Keras raise RuntimeError, ValueError, TypeError, AttributeError...
            name, cls = _named_layer(e)
            if name in chosen and cls == "BatchNormalization":  # a BN no transform fused: leave it float
                chosen.discard(name)
                continue
            if name is not None:
                raise ModelError(_unsupported(name, cls)) from e
            raise ModelError(f"tensorflow-model-optimization cannot wrap model '{float_model.name}' for QAT "
                             f"({one_line(e, 160)}); the float variants are still exported, drop the "
                             f"*-int8-qat variants") from e
    else:
        raise ModelError(f"tensorflow-model-optimization cannot wrap model '{float_model.name}' for QAT "
                         f"(more than {_MAX_RETRIES} BatchNormalization layers not after a convolution); the "
                         f"float variants are still exported, drop the *-int8-qat variants")
    _FLOAT_SOURCE[qat] = float_model  # lets finetune_qat start the activation ranges from it
    return qat


_MAX_RETRIES = 8
_FOLDED_INTO = ("Conv2D", "DepthwiseConv2D", "Dense")  # tfmot folds a following BatchNormalization


def _annotation_set(model, registry) -> set[str]:
    """Names of the layers to annotate: every layer tfmot's scheme quantizes, and each
    BatchNormalization right after an annotated Conv2D/DepthwiseConv2D/Dense (through a Reshape):
    tfmot's transforms fold those only when both are annotated; the rest stay float."""
    chosen = {layer.name for layer in model.layers if _quantizable(layer, registry)}
    for layer in model.layers:
        if type(layer).__name__ not in ("BatchNormalization", "SyncBatchNormalization"):
            continue
        prev = _inbound(layer)
        if len(prev) == 1 and type(prev[0]).__name__ == "Reshape":
            prev = _inbound(prev[0])
        if len(prev) == 1 and type(prev[0]).__name__ in _FOLDED_INTO and prev[0].name in chosen:
            chosen.add(layer.name)
    return chosen


def _inbound(layer) -> list:
    nodes = layer._inbound_nodes  # noqa: SLF001 - tf_keras has no public "previous layer"
    if not nodes:
        return []
    prev = nodes[0].inbound_layers
    return list(prev) if isinstance(prev, (list, tuple)) else [prev]


def _apply(float_model, chosen: set[str], tfmot, tf_keras):
    """tfmot's partial quantization: clone_model annotating the `chosen` layers, quantize_apply.
    Every layer is a fresh copy (the float model's graph stays untouched) with the float weights."""
    def annotate(layer):
        copy = layer.__class__.from_config(layer.get_config())
        return tfmot.quantization.keras.quantize_annotate_layer(copy) if layer.name in chosen else copy

    marked = tf_keras.models.clone_model(float_model, clone_function=annotate)
    for layer in marked.layers:
        inner = getattr(layer, "layer", layer)
        src = float_model.get_layer(inner.name)
        if src.weights:
            inner.set_weights(src.get_weights())
    with tfmot.quantization.keras.quantize_scope():
        return tfmot.quantization.keras.quantize_apply(marked, scheme=_scheme())


def _scheme():
    """tfmot's default 8-bit scheme with one layout fix: a Conv2D/DepthwiseConv2D/Dense followed
    directly by a ReLU keeps its weight quantizer.

    tfmot's LayerReLUQuantize (meant for Add -> ReLU: no fake-quant between them) gives the layer
    before a ReLU a NoOpQuantizeConfig, which for a Conv/Dense also drops its *weight* quantizer:
    its kernel trains float, the int8 converters quantize it after the fact (TFLite calibrates it;
    the ONNX rewrite has no QAT codes for it). MobileNetV3's squeeze-excite reduce conv
    (GlobalAveragePooling -> Conv2D(bias) -> ReLU) is such a layer. Here the layer gets the
    registry's config back with a NoOpActivation instead: weights fake-quantized, no fake-quant
    between it and the ReLU, as tfmot does for a Conv followed by BatchNormalization.

    And a layer left float that feeds a quantized one gets a QuantizeLayer on its output
    (FloatOutputQuantize). tfmot quantizes such an output only when its registry knows the
    layer (OutputOnlyConfig); a Rescaling or the last raw TF op of a hard-swish then feeds a
    QAT conv unquantized: the ONNX file runs that conv in float, and the TFLite converter
    calibrates the range on inference-mode data while the range before it was learned in QAT
    (HARD_SWISH's int8 kernel refuses an output scale under input scale / 128, which an
    untrained BatchNorm gives). Models without these patterns are transformed exactly as by tfmot."""
    global _SCHEME
    if _SCHEME is None:
        _SCHEME = _make_scheme()
    return _SCHEME()


_SCHEME = None
_WEIGHTED_BEFORE_RELU = ("Conv2D", "DepthwiseConv2D", "Dense")


def _make_scheme():
    from tensorflow_model_optimization.python.core.quantization.keras import (
        quantize_aware_activation as qaa, quantize_layer, quantizers)
    from tensorflow_model_optimization.python.core.quantization.keras import utils as qutils
    from tensorflow_model_optimization.python.core.quantization.keras.default_8bit import (
        default_8bit_quantize_configs as configs, default_8bit_quantize_layout_transform as layout,
        default_8bit_quantize_scheme as scheme)
    from tensorflow_model_optimization.python.core.quantization.keras.graph_transformations import (
        model_transformer, transforms)

    def dropped_weights(layer_quantize_map, model) -> bool:
        classes = {layer.name: type(layer).__name__ for layer in model.layers}
        return any(isinstance(v.get("quantize_config"), configs.NoOpQuantizeConfig)
                   and classes.get(name) in _WEIGHTED_BEFORE_RELU for name, v in layer_quantize_map.items())

    class KeepWeightsBeforeReLU(transforms.Transform):
        def __init__(self, relu_pattern):
            self._relu = relu_pattern

        def pattern(self):
            return self._relu(inputs=[transforms.LayerPattern("|".join(_WEIGHTED_BEFORE_RELU),
                                                              config={"activation": "linear"})])

        def replacement(self, match_layer):
            node = match_layer.input_layers[0]
            if isinstance(node.metadata.get("quantize_config"), configs.NoOpQuantizeConfig):
                node.metadata["quantize_config"] = None  # the registry's config: weights quantized
                node.layer["config"]["activation"] = qutils.serialize_activation(
                    qaa.NoOpActivation(), use_legacy_format=True)
            return match_layer

        def custom_objects(self):
            return {"NoOpActivation": qaa.NoOpActivation}

    class FloatOutputQuantize(transforms.Transform):
        """float layer X feeding a quantized one => X -> QuantizeLayer (8-bit moving-average
        range, as tfmot's activation quantizers), named `X_quantize`."""
        def __init__(self, names: set[str], classes: set[str]):
            self._names, self._classes = names, classes

        def pattern(self):
            return transforms.LayerPattern("|".join(sorted(map(re.escape, self._classes))))

        def replacement(self, match_layer):
            name = match_layer.layer["config"]["name"]
            if name not in self._names:
                return match_layer
            quant = quantize_layer.QuantizeLayer(quantizers.MovingAverageQuantizer(
                num_bits=8, per_axis=False, symmetric=False, narrow_range=False), name=f"{name}_quantize")
            config = qutils.serialize_layer(quant, use_legacy_format=True)
            config["name"] = quant.name
            return transforms.LayerNode(config, input_layers=[match_layer])

        def custom_objects(self):
            return {"QuantizeLayer": quantize_layer.QuantizeLayer,
                    "MovingAverageQuantizer": quantizers.MovingAverageQuantizer}

    class LayoutTransform(layout.Default8BitQuantizeLayoutTransform):
        def apply(self, model, layer_quantize_map):
            model, layer_quantize_map = super().apply(model, layer_quantize_map)
            fixes = []
            if dropped_weights(layer_quantize_map, model):
                fixes += [KeepWeightsBeforeReLU(lambda inputs: transforms.LayerPattern("ReLU", inputs=inputs)),
                          KeepWeightsBeforeReLU(lambda inputs: transforms.LayerPattern(
                              "Activation", config={"activation": "relu"}, inputs=inputs))]
            feeding = _float_feeding_quantized(model, layer_quantize_map, _registry())
            if feeding:
                fixes.append(FloatOutputQuantize(set(feeding), set(feeding.values())))
            if not fixes:
                return model, layer_quantize_map
            return model_transformer.ModelTransformer(model, fixes, set(layer_quantize_map) | set(feeding),
                                                      layer_quantize_map).transform()

    class Scheme(scheme.Default8BitQuantizeScheme):
        def get_layout_transformer(self):
            return LayoutTransform()

    return Scheme


def _float_feeding_quantized(model, layer_quantize_map, registry) -> dict[str, str]:
    """{name: class} of the layers left float (neither annotated nor known to tfmot's registry,
    which quantizes those itself) with one output that a quantized layer reads."""
    out = {}
    for layer in model.layers:
        cls = type(layer).__name__
        if (layer.name in layer_quantize_map or cls in _NO_COMPUTE or registry.supports(layer)
                or len(layer._inbound_nodes) != 1 or isinstance(layer.output, (list, tuple))):  # noqa: SLF001
            continue
        if any(node.outbound_layer.name in layer_quantize_map for node in layer._outbound_nodes):  # noqa: SLF001
            out[layer.name] = cls
    return out


def _named_layer(e: BaseException) -> tuple[str | None, str | None]:
    """(name, class) of the layer a tfmot/Keras error names, else (None, None)."""
    text = str(e)
    m = (re.search(r"Layer (\S+):<class '[\w.]*?(\w+)'>", text)
         or re.search(r'layer "([^"]+)" \(type (\w+)\)', text))
    return (m.group(1), m.group(2)) if m else (None, None)


def _check_structure(model, tf_keras) -> None:
    """ModelError for what tfmot cannot wrap at all: a subclassed model, a nested model, a Lambda
    layer (Python code inside: tfmot would skip it silently, and edgekit's scan refuses it)."""
    if not isinstance(model, tf_keras.Model):
        raise ModelError(f"QAT needs a tf_keras (Keras 2) model, got {type(model).__name__}; the float "
                         f"variants are still exported; drop the *-int8-qat variants")
    if not isinstance(model, tf_keras.Sequential) and not getattr(model, "_is_graph_network", False):
        raise ModelError(f"model '{model.name}' is a subclassed Keras model ({type(model).__name__}); QAT needs "
                         f"a Sequential or functional model; the float variants are still exported; rebuild "
                         f"it functionally or drop the *-int8-qat variants")
    for layer in model.layers:
        if isinstance(layer, tf_keras.Model):
            raise ModelError(_unsupported(layer.name, f"nested {type(layer).__name__}",
                                          "flatten it into the outer model"))
        if type(layer).__name__ == "Lambda":
            raise ModelError(_unsupported(layer.name, "Lambda"))


def _registry():
    from tensorflow_model_optimization.python.core.quantization.keras.default_8bit import (
        default_8bit_quantize_registry as reg)

    return reg.Default8BitQuantizeRegistry()


def _activation_name(fn) -> str | None:
    fn = getattr(fn, "activation", fn) if type(fn).__name__ == "QuantizeAwareActivation" else fn
    return getattr(fn, "__name__", None)


def _quantizable(layer, registry) -> bool:
    """True when tfmot's default 8-bit scheme wraps this layer: a registry class (exact type:
    Rescaling, Normalization and other preprocessing are not among them) with an activation
    it knows."""
    if type(layer).__name__ == "InputLayer" or not registry.supports(layer):
        return False
    cls = type(layer).__name__
    if cls == "Activation":
        return _activation_name(layer.activation) in _ACTIVATION_LAYER_ACTIVATIONS
    if hasattr(layer, "activation") and layer.activation is not None:
        return _activation_name(layer.activation) in _LAYER_ACTIVATIONS
    return True


def qat_float_layers(qat_model) -> list[str]:
    """The layers of a QAT model (made here or loaded from qat.h5) left float: neither wrapped
    by tfmot nor data-movement only. Empty for a fully quantized model."""
    out = []
    for layer in qat_model.layers:
        cls = type(layer).__name__
        if cls in _NO_COMPUTE or cls.startswith("QuantizeWrapper"):
            continue
        out.append(layer.name)
    return out


def output_kind(model) -> str:
    """"softmax" when the model's (first) output is produced by a softmax: a Softmax layer, an
    Activation('softmax'), a layer with activation='softmax' (QAT-wrapped or not), or tf.nn.softmax,
    possibly behind shape-only layers; else "logits"."""
    layer = model.get_layer(model.output_names[0])
    for _ in range(8):  # walk back through shape-only layers (Flatten, Reshape, Dropout, ...)
        inner = getattr(layer, "layer", layer)
        cls = type(inner).__name__
        if cls == "Softmax":
            return "softmax"
        if cls == "TFOpLambda" and str(inner.get_config().get("function", "")).endswith("softmax"):
            return "softmax"
        act = _activation_name(getattr(inner, "activation", None))
        if act == "softmax":
            return "softmax"
        if cls not in ("Flatten", "Reshape", "Dropout", "Activation") or (cls == "Activation" and act != "linear"):
            return "logits"
        nodes = layer._inbound_nodes  # noqa: SLF001 - tf_keras has no public "previous layer"
        prev = nodes[0].inbound_layers if nodes else []
        if isinstance(prev, (list, tuple)):
            if len(prev) != 1:
                return "logits"
            prev = prev[0]
        layer = prev
    return "logits"


def _unsupported(name: str, cls: str, fix: str = "replace the layer") -> str:
    return (f"layer '{name}' ({cls}) cannot be quantized by tensorflow-model-optimization, so there is no QAT "
            f"model; the float variants are still exported; {fix} or drop the *-int8-qat variants")


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
