"""Batches sized from a model's activation bytes: small models keep their batch, large ones shrink."""
from __future__ import annotations

from edgekit.convert.memory import BATCH_MEMORY_BYTES, activation_bytes_per_sample, batch_for_memory


def test_activation_bytes_count_every_layer_output():
    import tf_keras as k

    inp = k.Input((8, 8, 3))
    x = k.layers.Conv2D(4, 3, padding="same")(inp)     # 8*8*4
    out = k.layers.Dense(10)(k.layers.Flatten()(x))     # 256 + 10
    model = k.Model(inp, out)
    assert activation_bytes_per_sample(model) == 4 * (8 * 8 * 3 + 8 * 8 * 4 + 256 + 10)


def test_batch_shrinks_with_activations_and_keeps_its_bounds():
    small, large = 100_000, 87_000_000            # a 28x28 CNN; MobileNetV2 at 224x224
    assert batch_for_memory(small, most=128, factor=3) == 128
    assert batch_for_memory(large, most=128, factor=3) == BATCH_MEMORY_BYTES // (3 * large)
    assert batch_for_memory(large, most=128, factor=3) * 3 * large <= BATCH_MEMORY_BYTES
    assert batch_for_memory(10 ** 12, most=128, least=2) == 2
