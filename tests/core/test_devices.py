"""Device and precision decisions, tested on a CPU: which device, which dtype policy, which
compile arguments, and that a mixed-precision model is saved with float32 weights and policy."""
from __future__ import annotations

import numpy as np
import pytest

import edgekit  # noqa: F401
from edgekit.core.devices import (FLOAT32, MIXED_FLOAT16, Placement, float32_model, placement_scope,
                             resolve_placement, visible_gpus, with_float32_logits)
from edgekit.errors import ConfigError
from edgekit.core.networks import build_model

GPU = ["/physical_device:GPU:0"]


def test_auto_picks_cpu_without_gpu_and_gpu_with_one():
    cpu = resolve_placement("auto", gpus=[])
    assert (cpu.device, cpu.tf_device, cpu.policy, cpu.jit_compile) == ("cpu", "/CPU:0", FLOAT32, False)
    gpu = resolve_placement("auto", gpus=GPU)
    assert (gpu.device, gpu.tf_device) == ("gpu", "/GPU:0")
    assert resolve_placement("cpu", gpus=GPU).device == "cpu"  # asked for the CPU: the GPU is left alone


def test_this_machine_resolves_to_what_tensorflow_sees():
    expected = "gpu" if visible_gpus() else "cpu"
    assert resolve_placement("auto").device == expected


def test_gpu_requested_without_one_is_a_one_line_error():
    with pytest.raises(ConfigError, match="--device gpu but TensorFlow sees no GPU") as e:
        resolve_placement("gpu", gpus=[])
    assert "\n" not in str(e.value)


def test_mixed_precision_needs_a_gpu_and_sets_the_float16_policy_on_one():
    with pytest.raises(ConfigError, match="--mixed-precision needs a GPU"):
        resolve_placement("auto", mixed_precision=True, gpus=[])
    p = resolve_placement("auto", mixed_precision=True, gpus=GPU)
    assert p.policy == MIXED_FLOAT16 and p.mixed


def test_xla_flag_becomes_jit_compile():
    assert resolve_placement("cpu", xla=True, gpus=[]).compile_kwargs() == {"jit_compile": True}
    assert resolve_placement("cpu", gpus=[]).compile_kwargs() == {"jit_compile": False}
    import tf_keras

    model = build_model("mlp")
    model.compile(optimizer="adam", loss="mse", **resolve_placement("cpu", xla=True, gpus=[]).compile_kwargs())
    assert model.jit_compile is True


def test_unknown_device_is_rejected():
    with pytest.raises(ConfigError, match="--device must be"):
        resolve_placement("tpu", gpus=[])


def test_placement_scope_sets_and_restores_the_policy():
    """The mixed policy applies to models built inside the scope only (float16 runs on a CPU too,
    slowly: fine for a tiny model)."""
    import tf_keras

    mixed = Placement(device="cpu", tf_device="/CPU:0", policy=MIXED_FLOAT16, jit_compile=False)
    with placement_scope(mixed):
        model = with_float32_logits(build_model("cnn"))
        assert tf_keras.mixed_precision.global_policy().name == MIXED_FLOAT16
    assert tf_keras.mixed_precision.global_policy().name == FLOAT32
    assert model.layers[1].compute_dtype == "float16"
    assert model.outputs[0].dtype == "float32"  # logits cast back for a stable loss
    assert all(w.dtype == "float32" for w in model.weights)  # mixed precision keeps float32 variables


def test_float32_model_of_a_mixed_model_has_float32_policy_same_weights_and_outputs(tmp_path):
    import tf_keras

    mixed = Placement(device="cpu", tf_device="/CPU:0", policy=MIXED_FLOAT16, jit_compile=False)
    with placement_scope(mixed):
        model = with_float32_logits(build_model("cnn"))
    clean = float32_model(model, lambda: build_model("cnn"))
    assert {layer.dtype_policy.name for layer in clean.layers} == {FLOAT32}
    for a, b in zip(model.get_weights(), clean.get_weights()):
        np.testing.assert_array_equal(a, b)
    x = np.random.default_rng(0).random((8, 28, 28, 1), dtype=np.float32)
    np.testing.assert_allclose(clean(x).numpy(), model(x).numpy(), atol=0.05)  # float16 vs float32 compute
    path = tmp_path / "m.keras"
    clean.save(path)
    reloaded = tf_keras.models.load_model(path)
    assert {layer.dtype_policy.name for layer in reloaded.layers} == {FLOAT32}
    np.testing.assert_allclose(reloaded(x).numpy(), clean(x).numpy(), atol=1e-6)
