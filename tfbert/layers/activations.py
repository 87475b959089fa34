"""The functions behind BERT's activation names.

The names themselves are `tfbert.config.ACTIVATIONS`; this module maps
exactly those names to Keras functions.

Training uses its own exact GELU (`training_activation`): TensorFlow
differentiates `0.5 * x * erfc(-x / sqrt(2))` op by op, recomputing erfc's
derivative from `exp(-x^2)` in several elementwise passes over the
`[tokens, intermediate]` activations, and under bfloat16 each pass runs in
bfloat16 Eigen kernels. `gelu_training` computes the same values in float32
and, in the same pass, its derivative `Phi(x) + x * phi(x)`, which it keeps
in float32 for the backward pass (one multiply). Forward + backward of one
MiniLM feed-forward activation (`[4096, 1536]`) takes 13-14 instead of 17-25
ms in bfloat16 and float32 (TensorFlow's), and as one XLA function
(`xla_gelu_training`, where the model compiles its islands) 6-7 ms in
bfloat16 and 11 ms in float32.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import keras
import tensorflow as tf

from tfbert.config import ACTIVATIONS
from tfbert.errors import ConfigError


def gelu(x):
    """The exact (erf) GELU of original BERT."""
    return keras.activations.gelu(x, approximate=False)


def gelu_approximate(x):
    """The tanh approximation of GELU (Hugging Face "gelu_new")."""
    return keras.activations.gelu(x, approximate=True)


@tf.custom_gradient
def gelu_training(x):
    """`gelu(x)` computed in float32, with its derivative written out (see the module docstring).

    Example:

    >>> round(float(gelu_training(tf.constant(1.0))), 4)
    0.8413
    """
    x32 = tf.cast(x, tf.float32)
    # erf, not erfc: XLA's and Eigen's erf are the cheaper polynomials.
    # `0.5 + 0.5 * erf` cancels in the far-left tail (x < -5), where gelu(x)
    # then differs from the erfc form by less than 1e-6.
    cdf = 0.5 + 0.5 * tf.math.erf(x32 * math.sqrt(0.5))
    pdf = tf.exp(-0.5 * tf.square(x32)) * (1.0 / math.sqrt(2.0 * math.pi))
    # The derivative while x is at hand; float32 keeps a bfloat16 gradient to
    # one rounding.
    derivative = cdf + x32 * pdf

    def grad(upstream):
        return tf.cast(tf.cast(upstream, tf.float32) * derivative, x.dtype)

    return tf.cast(x32 * cdf, x.dtype), grad


# One compiled function for the process, as the other XLA islands.
xla_gelu_training = tf.function(gelu_training, jit_compile=True, reduce_retracing=True)


# One function for every name in `tfbert.config.ACTIVATIONS`, and no other.
ACTIVATION_FUNCTIONS: dict[str, Callable] = {
    "gelu": gelu,
    "gelu_approximate": gelu_approximate,
    "relu": keras.activations.relu,
}


def training_activation(activation: Callable, xla: bool) -> Callable:
    """What a layer applies in training in place of `activation`: the same values.

    `gelu` becomes `gelu_training` (`xla_gelu_training` with `xla`); other
    activations are returned as they are. Inference keeps `activation`
    itself, which the grappler remapper fuses into the matmul (`FusedDense`).

    Example:

    >>> training_activation(gelu, xla=False) is gelu_training
    True
    """
    if activation is gelu:
        return xla_gelu_training if xla else gelu_training
    return activation


def bert_activation(name: str) -> Callable:
    """The function of an activation name from `tfbert.config.ACTIVATIONS`.

    Args:
        name: "gelu" (exact erf, as original BERT), "gelu_approximate" (tanh)
            or "relu".

    Raises:
        ConfigError: `name` is not in `ACTIVATIONS`.

    Example:

    >>> float(bert_activation("relu")(-1.0))
    0.0
    """
    if name not in ACTIVATIONS or name not in ACTIVATION_FUNCTIONS:
        raise ConfigError(f"unknown activation {name!r}; choose one of {', '.join(ACTIVATIONS)}")
    return ACTIVATION_FUNCTIONS[name]
