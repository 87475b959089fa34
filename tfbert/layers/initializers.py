"""The BERT weight initializer."""

import keras


def bert_initializer(stddev: float = 0.02) -> keras.initializers.Initializer:
    """Truncated normal with BERT's stddev (`initializer_range`).

    Each call makes a new initializer with its own seed (drawn from the global
    seed state); give every weight its own, as one instance gives equal
    values to weights of equal shape.

    Example:

    >>> bert_initializer(0.02)(shape=(2, 3)).shape
    TensorShape([2, 3])
    """
    return keras.initializers.TruncatedNormal(stddev=stddev)
