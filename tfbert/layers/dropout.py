"""Dropout whose mask comes from 16-bit random integers.

Keras' dropout draws one float32 uniform per element and compares it with
the rate. Here one 32-bit Philox output gives the masks of two elements: it
is split into two 16-bit integers, and an element is kept when its integer is
at least `round(rate * 2**16)` (compared as 16-bit integers). Half the
Philox work and no integer-to-float conversion. On the MiniLM training
shapes (float32): a hidden-state dropout (`[32, 128, 384]`) takes 2.2
instead of 3.1 ms (bfloat16: 1.8 instead of 3.8), and the
attention-probability dropout adds 6.2 instead of 8.2 ms to a layer's XLA
attention core, forward and backward (`[32, 12, 128, 128]`). The rate is
exact to 2**-17 (0.1 drops with probability 6554 / 65536 = 0.100006).
"""

from __future__ import annotations

import keras
import tensorflow as tf

KEEP_BITS = 16
_LEVELS = 1 << KEEP_BITS


def draw_seed(seed_generator: keras.random.SeedGenerator) -> tf.Tensor:
    """An int32 `[2]` seed for the stateless ops, advancing `seed_generator`.

    The generator's state is a Keras variable, so checkpoints hold it and a
    resumed run continues the same dropout stream.
    """
    return tf.cast(keras.random.randint((2,), 0, 2**30, seed=seed_generator), tf.int32)


def keep_mask(shape: tf.Tensor, rate: float, seed: tf.Tensor) -> tf.Tensor:
    """Boolean `shape` mask, True with probability `1 - rate` (to 2**-17).

    Args:
        shape: the mask's shape (a 1-D int tensor or list).
        rate: drop probability in [0, 1).
        seed: int32 `[2]` stateless seed; the same seed gives the same mask.
    """
    shape = tf.convert_to_tensor(shape, tf.int32)
    size = tf.reduce_prod(shape)
    # Philox explicitly: the default algorithm compiles to a far slower
    # generator under XLA on CPU.
    words = tf.random.stateless_uniform([(size + 1) // 2], seed=seed, minval=None, maxval=None,
                                        dtype=tf.uint32, alg="philox")
    halves = tf.reshape(tf.bitcast(words, tf.uint16), [-1])[:size]
    return tf.reshape(halves >= tf.constant(round(rate * _LEVELS), tf.uint16), shape)


def dropout(x: tf.Tensor, rate: float, seed: tf.Tensor) -> tf.Tensor:
    """`x` with elements zeroed with probability `rate`, the rest scaled by `1 / (1 - rate)`."""
    if rate <= 0.0:
        return x
    keep = keep_mask(tf.shape(x), rate, seed)
    # One multiply by the scaled mask: its backward pass is one multiply too,
    # where a select of the scaled input took two passes each way.
    scale = tf.where(keep, tf.constant(1.0 / (1.0 - rate), x.dtype), tf.constant(0.0, x.dtype))
    return x * scale


@keras.saving.register_keras_serializable(package="tfbert")
class Dropout(keras.layers.Dropout):
    """`keras.layers.Dropout` with the 16-bit mask of `dropout`.

    Same arguments, config and seed generator as Keras' layer (so the same
    checkpoints); only the random draw differs. With a `noise_shape` it is
    Keras' dropout.

    Example:

    >>> import numpy as np
    >>> layer = Dropout(0.5, seed=1)
    >>> out = layer(np.ones((4, 1000), "float32"), training=True).numpy()
    >>> sorted(set(out.ravel().tolist()))
    [0.0, 2.0]
    >>> bool(abs((out == 0).mean() - 0.5) < 0.05)
    True
    """

    def call(self, inputs, training=False):
        if not training or self.rate <= 0 or self.noise_shape is not None:
            return super().call(inputs, training=training)
        return dropout(inputs, self.rate, draw_seed(self.seed_generator))
