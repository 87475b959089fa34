"""Start/end logits of an answer span, one pair per token."""

from __future__ import annotations

import keras
import tensorflow as tf

from tfbert.layers.initializers import bert_initializer

# Far below any real logit, yet finite: softmax gives 0 and nothing turns NaN.
PADDING_LOGIT = -1e9


@keras.saving.register_keras_serializable(package="tfbert")
class SpanLogits(keras.layers.Layer):
    """A dense layer to two scores per token: where an answer starts and ends.

    Padding gets `PADDING_LOGIT` so that a softmax over the sequence (the
    training loss) never picks it. Logits are float32 also under mixed
    precision.

    Args:
        initializer_range: stddev of the truncated-normal kernel initializer.

    Returns (from `call(sequence_output, input_mask)`):
        `(start_logits, end_logits)`, each float32 `[B, T]`.

    Example:

    >>> import numpy as np
    >>> start, end = SpanLogits()(np.ones((1, 3, 8), "float32"), np.array([[1, 1, 0]]))
    >>> start.shape, float(end[0, 2]) < -1e8
    (TensorShape([1, 3]), True)
    """

    def __init__(self, *, initializer_range: float = 0.02, **kwargs):
        super().__init__(**kwargs)
        self.initializer_range = initializer_range
        self.dense = keras.layers.Dense(2, kernel_initializer=bert_initializer(initializer_range),
                                        dtype="float32", name="dense")

    def build(self, sequence_output_shape, input_mask_shape=None):
        self.dense.build(sequence_output_shape)
        self.built = True

    def call(self, sequence_output, input_mask):
        logits = tf.cast(self.dense(sequence_output), tf.float32)
        padding = tf.cast(input_mask, tf.int32) == 0
        logits = tf.where(padding[:, :, tf.newaxis], tf.constant(PADDING_LOGIT), logits)
        return logits[:, :, 0], logits[:, :, 1]

    def compute_output_shape(self, sequence_output_shape, input_mask_shape=None):
        shape = tuple(sequence_output_shape[:2])
        return shape, shape

    def get_config(self):
        config = super().get_config()
        config.update(initializer_range=self.initializer_range)
        return config
