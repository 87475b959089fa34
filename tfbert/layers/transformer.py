"""One post-LayerNorm BERT transformer block."""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from tfbert.layers.activations import bert_activation
from tfbert.layers.attention import SelfAttention
from tfbert.layers.dense import FusedDense
from tfbert.layers.dropout import Dropout
from tfbert.layers.initializers import bert_initializer
from tfbert.layers.normalization import AddLayerNorm


@keras.saving.register_keras_serializable(package="tfbert")
class TransformerBlock(keras.layers.Layer):
    """Self-attention -> add & LayerNorm -> feed-forward -> add & LayerNorm.

    Args:
        num_heads: attention heads; must divide `hidden_size`.
        hidden_size: model width.
        intermediate_size: feed-forward inner width.
        hidden_act: "gelu" (exact erf, as original BERT), "gelu_approximate" or "relu".
        hidden_dropout: dropout after attention output and feed-forward output.
        attention_dropout: dropout on attention probabilities.
        layer_norm_eps: LayerNorm epsilon.
        initializer_range: stddev of the truncated-normal initializer.
        xla_attention: compile the attention core with XLA.
        xla_pointwise: compile the two add & LayerNorm steps (inference)
            and the feed-forward GELU (training) with XLA.
            Each is its own small XLA function; the dense layers' matmuls
            stay TensorFlow ops (see `FusedDense`).
        inference_branches: in inference, run attention (by head groups,
            `SelfAttention`'s `branches`) and the feed-forward block (by
            slices of its inner width, the second matmul as partial sums)
            as this many independent branches, which TensorFlow runs side by
            side on its inter-op threads. Must divide `num_heads` and
            `intermediate_size`; training ignores it.

    Call args:
        hidden: `[B, T, hidden_size]` float inputs.
        attention_mask: `[B, T]`, 1 for real tokens, 0 for padding.
        training: apply dropout.

    The constructor's arguments are named as the `BertConfig` fields they
    come from, and `get_config()` returns them under those names.

    Example:

    >>> import numpy as np
    >>> block = TransformerBlock(num_heads=2, hidden_size=16, intermediate_size=64)
    >>> block(np.ones((1, 4, 16), "float32"), np.ones((1, 4), "int32")).shape
    TensorShape([1, 4, 16])
    """

    def __init__(self, *, num_heads: int, hidden_size: int, intermediate_size: int,
                 hidden_act: str = "gelu", hidden_dropout: float = 0.1,
                 attention_dropout: float = 0.1, layer_norm_eps: float = 1e-12,
                 initializer_range: float = 0.02, xla_attention: bool = True,
                 xla_pointwise: bool = True, inference_branches: int = 1, **kwargs):
        super().__init__(**kwargs)
        if intermediate_size % inference_branches:
            raise ValueError(f"inference_branches ({inference_branches}) must divide "
                             f"intermediate_size ({intermediate_size})")
        self.num_heads = num_heads
        self.hidden_size = hidden_size
        self.intermediate_size = intermediate_size
        self.hidden_act = hidden_act
        self.hidden_dropout = hidden_dropout
        self.attention_dropout = attention_dropout
        self.layer_norm_eps = layer_norm_eps
        self.initializer_range = initializer_range
        self.xla_attention = xla_attention
        self.xla_pointwise = xla_pointwise
        self.inference_branches = inference_branches
        self.attention = SelfAttention(
            num_heads=num_heads, head_size=hidden_size // num_heads,
            attention_dropout=attention_dropout, initializer_range=initializer_range,
            xla=xla_attention, branches=inference_branches, name="attention")
        self.attention_dropout_layer = Dropout(hidden_dropout)
        # Residual add + LayerNorm: XLA islands beside the attention core.
        self.attention_layer_norm = AddLayerNorm(
            epsilon=layer_norm_eps, xla=xla_pointwise, name="attention_layer_norm")
        # An initializer (so a seed) of its own for each kernel.
        # The activation inside the layer: matmul + bias + GELU fuse into one kernel.
        self.intermediate = FusedDense(
            intermediate_size, activation=bert_activation(hidden_act),
            kernel_initializer=bert_initializer(initializer_range), xla=xla_pointwise,
            name="intermediate")
        self.output_dense = FusedDense(
            hidden_size, kernel_initializer=bert_initializer(initializer_range), name="output")
        self.output_dropout = Dropout(hidden_dropout)
        self.output_layer_norm = AddLayerNorm(
            epsilon=layer_norm_eps, xla=xla_pointwise, name="output_layer_norm")

    def build(self, input_shape):
        self.attention.build(input_shape)
        self.attention_layer_norm.build(input_shape)
        self.intermediate.build(input_shape)
        self.output_dense.build(tuple(input_shape[:-1]) + (self.intermediate_size,))
        self.output_layer_norm.build(input_shape)
        self.built = True

    def call(self, hidden, attention_mask, training=False):
        attended = self.attention(hidden, attention_mask, training=training)
        attended = self.attention_dropout_layer(attended, training=training)
        hidden = self.attention_layer_norm(attended, hidden, training=training)
        if not training and self.inference_branches > 1:
            out = self._branched_feed_forward(hidden)
        else:
            out = self.output_dropout(
                self.output_dense(self.intermediate(hidden, training=training)),
                training=training)
        return self.output_layer_norm(out, hidden, training=training)

    def _branched_feed_forward(self, hidden):
        # Each branch: a slice of the inner width (its own matmul + GELU),
        # then that slice's rows of the output kernel; the partial sums are
        # added before the output bias.
        rows = tf.reshape(hidden, [-1, self.hidden_size])
        width = self.intermediate_size // self.inference_branches
        partial_sums = []
        for first in range(0, self.intermediate_size, width):
            inner = self.intermediate.partial(rows, columns=np.arange(first, first + width))
            partial_sums.append(self.output_dense.partial(inner, features=(first, first + width)))
        return tf.reshape(self.output_dense.finish(partial_sums), tf.shape(hidden))

    def compute_output_shape(self, hidden_shape, attention_mask_shape=None):
        return hidden_shape

    def get_config(self):
        config = super().get_config()
        config.update(num_heads=self.num_heads, hidden_size=self.hidden_size,
                      intermediate_size=self.intermediate_size, hidden_act=self.hidden_act,
                      hidden_dropout=self.hidden_dropout,
                      attention_dropout=self.attention_dropout,
                      layer_norm_eps=self.layer_norm_eps,
                      initializer_range=self.initializer_range,
                      xla_attention=self.xla_attention, xla_pointwise=self.xla_pointwise,
                      inference_branches=self.inference_branches)
        return config
