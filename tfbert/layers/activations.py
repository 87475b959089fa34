"""The functions behind BERT's activation names.

The names themselves are `tfbert.config.ACTIVATIONS`; this module maps
exactly those names to Keras functions.
"""

from __future__ import annotations

from collections.abc import Callable

import keras

from tfbert.config import ACTIVATIONS
from tfbert.errors import ConfigError


def gelu(x):
    """The exact (erf) GELU of original BERT."""
    return keras.activations.gelu(x, approximate=False)


def gelu_approximate(x):
    """The tanh approximation of GELU (Hugging Face "gelu_new")."""
    return keras.activations.gelu(x, approximate=True)


# One function for every name in `tfbert.config.ACTIVATIONS`, and no other.
ACTIVATION_FUNCTIONS: dict[str, Callable] = {
    "gelu": gelu,
    "gelu_approximate": gelu_approximate,
    "relu": keras.activations.relu,
}


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
