"""The int8 audit (edgekit.verify.audit) on TFLite files; its ONNX side is exercised with the ONNX int8
routes in test_onnx_int8.py and test_saturation.py."""
from __future__ import annotations

import pytest

from edgekit.verify.audit import audit_int8
from edgekit.errors import ConfigError


@pytest.fixture(scope="module")
def cnn(trained_run):
    from edgekit.runtimes.keras_tf import load_keras_model

    return load_keras_model(trained_run / "train/cnn/model.keras")


def test_audit_tflite_int8_passes_and_float_or_hybrid_fail(cnn, synthetic, tmp_path):
    from edgekit.convert.converters import ConversionInputs
    from edgekit.core.data import to_float
    from edgekit.convert.quantize import representative_set
    from edgekit.core.variants import VARIANTS

    inputs = ConversionInputs(cnn, None, representative_set(to_float(synthetic.x_train), 50))
    for name in ("tflite-int8-ptq", "tflite-dynamic", "tflite-fp16"):
        VARIANTS[name].make(inputs, tmp_path / f"{name}.tflite")
    good = audit_int8(tmp_path / "tflite-int8-ptq.tflite")
    assert good["passed"] and good["weight_dtypes"] == {"int8": 34720}
    # 26*26*32*9 + 11*11*64*288 + 1600*10: every MAC of the CNN, all in int8 kernels
    assert good["macs"] == {"integer": 194688 + 2230272 + 16000, "float": 0}
    hybrid = audit_int8(tmp_path / "tflite-dynamic.tflite")  # int8 weights, float activations
    assert not hybrid["passed"] and hybrid["int8_weight_fraction"] > 0.95  # TFLite keeps tiny conv1 float
    assert hybrid["integer_mac_fraction"] == 0.0 and "MACs" in hybrid["reason"]
    fp16 = audit_int8(tmp_path / "tflite-fp16.tflite")
    assert not fp16["passed"] and fp16["weight_dtypes"] == {"float16": 34720}
    with pytest.raises(ConfigError):
        audit_int8(tmp_path / "model.keras")
