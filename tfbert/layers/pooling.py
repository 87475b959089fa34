"""Mask-aware mean pooling over a sequence."""

from __future__ import annotations

import keras
import tensorflow as tf


@keras.saving.register_keras_serializable(package="tfbert")
class MaskedMeanPooling(keras.layers.Layer):
    """Mean of the vectors of real (mask == 1) tokens.

    Sentence-transformers models such as all-MiniLM-L6-v2 are trained with
    this pooling; it is also the classifier's `pooling="mean"`.

    Args:
        **kwargs: Keras layer arguments (`name`, `dtype`); the layer has no
            settings of its own, so `get_config()` holds only those.

    Call args:
        sequence: `[B, T, H]` vectors.
        input_mask: `[B, T]`, 1 for real tokens, 0 for padding.

    Returns:
        `[B, H]`, the mean over real tokens (zeros for a row without any).

    Example:

    >>> import numpy as np
    >>> x = np.array([[[1.0], [3.0], [100.0]]], "float32")
    >>> MaskedMeanPooling()(x, np.array([[1, 1, 0]])).numpy().tolist()
    [[2.0]]
    """

    def call(self, sequence, input_mask):
        # Summed in float32: a bfloat16 sum over hundreds of tokens loses digits.
        sequence = tf.cast(sequence, tf.float32)
        mask = tf.cast(input_mask, tf.float32)[:, :, tf.newaxis]
        total = tf.reduce_sum(sequence * mask, axis=1)
        count = tf.maximum(tf.reduce_sum(mask, axis=1), 1e-9)
        return tf.cast(total / count, self.compute_dtype)

    def compute_output_shape(self, sequence_shape, input_mask_shape=None):
        return (sequence_shape[0], sequence_shape[-1])
