"""tfbert's AdamW (fused kernels) against Keras' AdamW: the same updates."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfbert.training.optimization import NO_DECAY, AdamW, WarmupLinearDecay

SHAPES = {"kernel": (6, 4), "bias": (4,), "embeddings": (10, 6), "gamma": (6,)}


def _variables(seed: int) -> list[keras.Variable]:
    rng = np.random.default_rng(seed)
    return [keras.Variable(rng.normal(size=shape).astype("float32"), name=name)
            for name, shape in SHAPES.items()]


def _run(optimizer_class, steps: int, jit_compile: bool) -> list[np.ndarray]:
    variables = _variables(0)
    optimizer = optimizer_class(learning_rate=WarmupLinearDecay(0.05, total_steps=10,
                                                                warmup_steps=2),
                                weight_decay=0.1, epsilon=1e-6, global_clipnorm=1.0)
    optimizer.exclude_from_weight_decay(var_names=NO_DECAY)
    rng = np.random.default_rng(1)
    grads = [[tf.constant(rng.normal(size=v.shape).astype("float32")) for v in variables]
             for _ in range(steps)]

    @tf.function(jit_compile=jit_compile)
    def step(gradients):
        optimizer.apply(gradients, variables)

    for gradients in grads:
        step(gradients)
    return [v.numpy() for v in variables]


@pytest.mark.parametrize("jit_compile", [False, True])
def test_fused_adamw_updates_weights_as_keras_adamw_does(jit_compile):
    start = [v.numpy() for v in _variables(0)]
    ours = _run(AdamW, steps=5, jit_compile=jit_compile)
    keras_ = _run(keras.optimizers.AdamW, steps=5, jit_compile=jit_compile)
    for name, before, got, want in zip(SHAPES, start, ours, keras_, strict=True):
        # The weights moved (by about lr per step), and as Keras moves them.
        assert np.abs(want - before).max() > 0.05, name
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6, err_msg=name)


def test_weight_decay_spares_biases_and_layernorm_parameters():
    """With zero gradients only the decay moves a weight: kernels shrink by
    lr * wd per step, biases and LayerNorm parameters stay where they are."""
    variables = _variables(0)
    start = [v.numpy() for v in variables]
    optimizer = AdamW(learning_rate=0.1, weight_decay=0.5)
    optimizer.exclude_from_weight_decay(var_names=NO_DECAY)
    optimizer.apply([tf.zeros(v.shape) for v in variables], variables)
    after = dict(zip(SHAPES, (v.numpy() for v in variables), strict=True))
    before = dict(zip(SHAPES, start, strict=True))
    np.testing.assert_allclose(after["kernel"], before["kernel"] * (1 - 0.1 * 0.5), rtol=1e-6)
    np.testing.assert_allclose(after["embeddings"], before["embeddings"] * 0.95, rtol=1e-6)
    np.testing.assert_array_equal(after["bias"], before["bias"])
    np.testing.assert_array_equal(after["gamma"], before["gamma"])
