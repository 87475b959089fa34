"""Multi-head self-attention whose core runs as one XLA-compiled function.

The projections are `FusedDense` layers built in `build()`: one `qkv`
projection (kernel `[H, 3H]`, the query, key and value kernels side by side,
so one big matmul instead of three small ones) and one `output` projection.
Checkpoints keep BERT's separate query/key/value names: the loaders and
writers in `tfbert.checkpoints` split and merge the `qkv` weights. Only the
math between the projections -- QK^T, padding bias, softmax, dropout,
weighted sum of V -- goes through `tf.function(jit_compile=True)`, so XLA
fuses the memory-bound softmax/mask chain between the two batched matmuls
(and the split of `qkv` into the matmuls' operands). In training, the two
constant scales of attention, 1/sqrt(d) on the scores and 1/(1 - rate) on
the kept probabilities, are folded into the `qkv` kernel's query and value
columns (`FusedDense`'s `column_scale`): a multiply of the `[H, 3H]` kernel
instead of passes over the `[B, N, T, T]` scores forward and backward. In
inference the core scales the scores itself, where XLA fuses it into the
softmax (a scaled kernel would be a fresh copy for every request). No
variable is created or read inside the compiled function: variables created
lazily inside an XLA function were unreadable by the TF1 SavedModel loader
and had no gradients.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from tfbert.layers.dense import FusedDense
from tfbert.layers.dropout import draw_seed, keep_mask
from tfbert.layers.initializers import bert_initializer


def attention_core(qkv: tf.Tensor, mask: tf.Tensor, dropout_rate: float = 0.0,
                   seed: tf.Tensor | None = None, score_scale: float | None = None
                   ) -> tf.Tensor:
    """Dot-product attention over packed query/key/value heads.

    Computes `dropout(softmax(score_scale * Q K^T + padding bias)) V`, where
    dropout zeroes probabilities without rescaling the rest: with dropout,
    the caller scales the value by `1/(1 - dropout_rate)`, and it may scale
    the query by `1/sqrt(D)` instead of passing `score_scale`
    (`attention_column_scale`; `SelfAttention` folds both into its `qkv`
    kernel in training). The result is scaled dot-product attention.

    Args:
        qkv: float `[B, T, 3, N, D]`: query, key and value (axis 2) for
            N heads of width D.
        mask: `[B, T]` with 1 for real tokens, 0 for padding (keys only).
        dropout_rate: dropout on the attention probabilities; needs `seed`.
        seed: int32 `[2]` seed for stateless dropout (deterministic per step).
        score_scale: multiplier of `Q K^T` (`1/sqrt(D)` for an unscaled
            query); None when the query comes scaled.

    Returns:
        `[B, T, N, D]` context vectors, in the dtype of `qkv`.
    """
    # One transpose to [3, B, N, T, D] gives both batched matmuls contiguous
    # heads (oneDNN's batched matmul takes K transposed as it is); two-operand
    # einsums transposed each operand on their own, and in the backward pass
    # again: without XLA the core was 1.2-1.3x slower (forward + backward,
    # MiniLM shape). The transposes are one-operand einsums: `tf.transpose`
    # inside a nested XLA function made XLA recompile the step on every call.
    query, key, value = tf.unstack(tf.einsum("btsnd->sbntd", qkv), 3, axis=0)
    # Softmax in float32 also under mixed precision: bf16/fp16 logits lose
    # the small differences that decide the attention distribution.
    scores = tf.cast(tf.matmul(query, key, transpose_b=True), tf.float32)
    if score_scale is not None:
        scores = scores * score_scale
    # Padding keys get -1e9 added (an Add, where a select needs the mask in
    # the backward pass too); exp() of it is 0 as it was for -1e9 itself.
    key_bias = (tf.cast(mask, tf.float32) - 1.0)[:, tf.newaxis, tf.newaxis, :] * 1e9
    probs = tf.cast(tf.nn.softmax(scores + key_bias, axis=-1), value.dtype)
    if dropout_rate > 0.0:
        # A 0/1 mask, exact in any dtype, applied after the cast: under
        # mixed precision both passes run over 16-bit probabilities.
        probs = probs * tf.cast(keep_mask(tf.shape(probs), dropout_rate, seed), probs.dtype)
    return tf.einsum("bntd->btnd", tf.matmul(probs, value))


def attention_column_scale(num_heads: int, head_size: int, dropout_rate: float = 0.0
                           ) -> tf.Tensor:
    """float32 `[3 * num_heads * head_size]` scale of the `qkv` columns for `attention_core`.

    `1/sqrt(head_size)` on the query columns, 1 on the key columns and
    `1/(1 - dropout_rate)` on the value columns.
    """
    width = num_heads * head_size
    value_scale = 1.0 / (1.0 - dropout_rate)
    return tf.constant([head_size ** -0.5] * width + [1.0] * width + [value_scale] * width,
                       tf.float32)


# One compiled function for the whole process: XLA caches one executable per
# input shape/dtype, and `reduce_retracing` keeps the traces shape-generic.
xla_attention_core = tf.function(attention_core, jit_compile=True, reduce_retracing=True)


@keras.saving.register_keras_serializable(package="tfbert")
class SelfAttention(keras.layers.Layer):
    """BERT multi-head self-attention: fused projections around an XLA core.

    Attention dropout is stateless Philox dropout inside the core; its seed
    comes from the layer's own `seed_generator` (a Keras variable, so it is
    saved and restored with the model's state). The generator's start value
    is drawn from the global seed state when the layer is created: every
    layer gets its own dropout stream, and `keras.utils.set_random_seed`
    before building a model makes the masks reproducible.

    Args:
        num_heads: number of attention heads.
        head_size: width of each head; `num_heads * head_size` is the model width.
        attention_dropout: dropout on attention probabilities (training only).
        initializer_range: stddev of the truncated-normal kernel initializer.
        xla: run the core through `xla_attention_core`; False runs the same
            math as ordinary TF ops (servers without XLA, debugging).
        branches: in inference, split the heads into this many groups, each
            with its own query/key/value matmul, attention core and share of
            the output projection (partial sums, added before the bias), so
            that TensorFlow's inter-op threads run the groups side by side.
            A one-text request's matmuls are too small for oneDNN to split
            well across cores; these independent ops are not. Training and
            1 (the default) run the heads together.

    Call args:
        hidden: `[B, T, num_heads * head_size]` float inputs.
        attention_mask: `[B, T]`, 1 for real tokens, 0 for padding.
        training: apply attention dropout.

    Example:

    >>> import numpy as np
    >>> layer = SelfAttention(num_heads=2, head_size=8)
    >>> x = np.ones((1, 5, 16), "float32"); mask = np.ones((1, 5), "int32")
    >>> layer(x, mask).shape
    TensorShape([1, 5, 16])
    """

    def __init__(self, *, num_heads: int, head_size: int, attention_dropout: float = 0.1,
                 initializer_range: float = 0.02, xla: bool = True, branches: int = 1,
                 **kwargs):
        super().__init__(**kwargs)
        if branches < 1 or num_heads % branches:
            raise ValueError(f"branches ({branches}) must be >= 1 and divide num_heads "
                             f"({num_heads})")
        self.branches = branches
        self.num_heads = num_heads
        self.head_size = head_size
        self.attention_dropout = attention_dropout
        self.initializer_range = initializer_range
        self.xla = xla
        width = num_heads * head_size
        # Initializers of their own: one shared instance has one seed and
        # would give both kernels the same initial values. The qkv kernel is
        # drawn as one [H, 3H] block: the same truncated normal, elementwise,
        # as three separate [H, H] kernels.
        self.qkv = FusedDense(3 * width, kernel_initializer=bert_initializer(initializer_range),
                              name="qkv")
        self.output_dense = FusedDense(width,
                                       kernel_initializer=bert_initializer(initializer_range),
                                       name="output")
        # No fixed seed: the start value comes from the global seed state.
        self.seed_generator = keras.random.SeedGenerator()

    def build(self, input_shape):
        # Sublayers are built here, before any call reaches the compiled core.
        self.qkv.build(input_shape)
        self.output_dense.build(tuple(input_shape[:-1]) + (self.num_heads * self.head_size,))
        self.built = True

    def call(self, hidden, attention_mask, training=False):
        if not training and self.branches > 1:
            return self._branched(hidden, attention_mask)
        batch, seq = tf.shape(hidden)[0], tf.shape(hidden)[1]
        rate = self.attention_dropout if training else 0.0
        # Training folds the scales into the kernel (see the module docstring).
        scale = (attention_column_scale(self.num_heads, self.head_size, rate) if training
                 else None)
        # [B*T, 3H] -> [B, T, 3, N, D]: a free reshape, the kernel's columns
        # are query | key | value, each head-major.
        qkv = tf.reshape(self.qkv(hidden, column_scale=scale),
                         [batch, seq, 3, self.num_heads, self.head_size])
        seed = None
        if rate > 0.0:
            seed = draw_seed(self.seed_generator)
        core = xla_attention_core if self.xla else attention_core
        context = core(qkv, tf.cast(attention_mask, tf.int32), rate, seed,
                       None if training else self.head_size ** -0.5)
        context = tf.reshape(context, [batch, seq, self.num_heads * self.head_size])
        return self.output_dense(context)

    def _branched(self, hidden, attention_mask):
        # Inference in `branches` head groups: the same math as `call`.
        batch, seq = tf.shape(hidden)[0], tf.shape(hidden)[1]
        width = self.num_heads * self.head_size
        group = self.num_heads // self.branches
        group_width = group * self.head_size
        rows = tf.reshape(hidden, [-1, width])
        mask = tf.cast(attention_mask, tf.int32)
        core = xla_attention_core if self.xla else attention_core
        partial_sums = []
        for g in range(self.branches):
            first = g * group_width
            # The group's query, key and value columns, in the [3, N, D] order
            # the core reads.
            columns = np.concatenate([np.arange(s * width + first, s * width + first + group_width)
                                      for s in range(3)])
            qkv = tf.reshape(self.qkv.partial(rows, columns=columns),
                             [batch, seq, 3, group, self.head_size])
            context = core(qkv, mask, 0.0, None, self.head_size ** -0.5)
            partial_sums.append(self.output_dense.partial(
                tf.reshape(context, [-1, group_width]), features=(first, first + group_width)))
        return tf.reshape(self.output_dense.finish(partial_sums), [batch, seq, width])

    def compute_output_shape(self, hidden_shape, attention_mask_shape=None):
        return tuple(hidden_shape[:-1]) + (self.num_heads * self.head_size,)

    def get_config(self):
        config = super().get_config()
        config.update(num_heads=self.num_heads, head_size=self.head_size,
                      attention_dropout=self.attention_dropout,
                      initializer_range=self.initializer_range, xla=self.xla,
                      branches=self.branches)
        return config
