"""A Dense layer whose matmul, bias and activation run as one oneDNN kernel."""

from __future__ import annotations

import keras
import tensorflow as tf

from tfbert.layers.activations import training_activation


@tf.custom_gradient
def matmul_bias_add(rows: tf.Tensor, kernel: tf.Tensor, bias: tf.Tensor) -> tf.Tensor:
    """`rows @ kernel + bias` whose bias gradient is summed as a matmul.

    TensorFlow's gradient of `tf.nn.bias_add` is `BiasAddGrad`, which on CPU
    adds the rows up in the gradient's own dtype: in bfloat16 (8-bit
    mantissa) the sum of 4096 rows was off by up to a third of its RMS.
    Here the bias gradient is `ones @ upstream`, a matmul that accumulates
    in float32 (and runs in about half of `BiasAddGrad`'s time); the matmul
    gradients are TensorFlow's own. The forward pass is the same
    `MatMul -> BiasAdd` (the remapper still fuses it).
    """

    def grad(upstream):
        ones = tf.ones([1, tf.shape(upstream)[0]], upstream.dtype)
        return (tf.matmul(upstream, kernel, transpose_b=True),
                tf.matmul(rows, upstream, transpose_a=True),
                tf.reshape(tf.matmul(ones, upstream), [-1]))

    return tf.nn.bias_add(tf.matmul(rows, kernel), bias), grad


@keras.saving.register_keras_serializable(package="tfbert")
class FusedDense(keras.layers.Dense):
    """`keras.layers.Dense` computed as `MatMul -> BiasAdd -> activation` on 2-D rows.

    Same arguments, variables (`kernel`, `bias`) and weight files as
    `keras.layers.Dense`; only the graph differs. Keras' Dense multiplies a
    `[B, T, H]` input with `tensordot` and adds the bias with `AddV2`, a shape
    TensorFlow's grappler remapper cannot fuse. Here the input is flattened to
    `[B*T, H]` rows and the bias goes through `tf.nn.bias_add`, so the remapper
    rewrites matmul + bias + GELU/ReLU/tanh into one `_FusedMatMul` (oneDNN on
    x86): the activation is applied while the output tile is still in cache.
    On the MiniLM feed-forward shape that takes the bfloat16 block from 424 to
    717 GFLOP/s and the float32 one from 358 to 404 (see BENCHMARKS.md). LoRA
    and Keras' quantized modes of Dense are not supported.

    In training the activation is `tfbert.layers.activations.training_activation`
    of it (for the exact GELU: the same values, a cheaper backward pass), an
    XLA function when `xla` is set; under a 16-bit compute dtype the bias
    gradient comes from `matmul_bias_add`.

    `partial` and `finish` compute the layer in independent branches (see
    `TransformerBlock`'s `inference_branches`).

    `column_scale`, a call argument, multiplies each output column by a
    constant: it is folded into the kernel and bias (an `[in, units]`
    multiply, in the variables' dtype before the cast to the compute dtype)
    instead of costing a pass over the `[rows, units]` outputs. The layer
    casts its inputs and variables itself, so Keras' autocast is off.

    Args:
        xla: compile the training activation with XLA (the other arguments
            are `keras.layers.Dense`'s).

    Call args:
        inputs: `[..., in]` float inputs.
        training: training mode (the activation's training form).
        column_scale: optional float `[units]` constant multiplying the outputs.

    Example:

    >>> import numpy as np
    >>> layer = FusedDense(8, activation="gelu")
    >>> layer(np.ones((2, 3, 4), "float32")).shape
    TensorShape([2, 3, 8])
    """

    def __init__(self, units: int, *, xla: bool = False, **kwargs):
        # Variables are read in their own dtype and cast in `call`, after
        # any `column_scale`: one rounding to the compute dtype, not two.
        kwargs["autocast"] = False
        super().__init__(units, **kwargs)
        self.xla = xla

    def call(self, inputs, training=None, column_scale=None):
        # Without autocast Keras leaves the inputs' dtype alone too.
        inputs = tf.cast(inputs, self.compute_dtype)
        rows = tf.reshape(inputs, [-1, tf.shape(inputs)[-1]])
        kernel = tf.convert_to_tensor(self.kernel)
        bias = tf.convert_to_tensor(self.bias) if self.use_bias else None
        if column_scale is not None:
            column_scale = tf.cast(column_scale, kernel.dtype)
            kernel = kernel * column_scale
            bias = None if bias is None else bias * column_scale
        kernel = tf.cast(kernel, self.compute_dtype)
        if bias is None:
            outputs = tf.matmul(rows, kernel)
        elif training and tf.as_dtype(self.compute_dtype).size == 2:
            # 16-bit training: an accurate bias gradient (see `matmul_bias_add`).
            outputs = matmul_bias_add(rows, kernel, tf.cast(bias, self.compute_dtype))
        else:
            outputs = tf.nn.bias_add(tf.matmul(rows, kernel), tf.cast(bias, self.compute_dtype))
        if self.activation is not None:
            activation = (training_activation(self.activation, self.xla) if training
                          else self.activation)
            outputs = activation(outputs)
        if inputs.shape.rank == 2:
            return outputs
        return tf.reshape(outputs, tf.concat([tf.shape(inputs)[:-1], [self.units]], axis=0))

    def partial(self, rows: tf.Tensor, columns=None, features: tuple[int, int] | None = None
                ) -> tf.Tensor:
        """One branch of an inference matmul split into independent ops.

        `rows @ kernel[features rows, columns]` on 2-D `rows`: `columns`
        (int indices) picks output columns, `features` (start, stop) the
        input features `rows` holds. With all input features the result is
        final (bias and activation applied); with a slice of them it is a
        partial sum, to be added to the others and passed to `finish`.
        Weights are sliced in the graph: on a serving graph's constant
        weights grappler folds the slices into constants of their own.
        """
        rows = tf.cast(rows, self.compute_dtype)
        kernel = tf.convert_to_tensor(self.kernel)
        if features is not None:
            kernel = kernel[features[0]:features[1]]
        if columns is not None:
            kernel = tf.gather(kernel, columns, axis=1)
        outputs = tf.matmul(rows, tf.cast(kernel, self.compute_dtype))
        if features is not None:
            return outputs
        return self._bias_and_activation(outputs, columns)

    def finish(self, partial_sums: list[tf.Tensor]) -> tf.Tensor:
        """Bias and activation over the sum of `partial` results (one per feature slice)."""
        return self._bias_and_activation(tf.add_n(partial_sums))

    def _bias_and_activation(self, outputs: tf.Tensor, columns=None) -> tf.Tensor:
        if self.use_bias:
            bias = tf.convert_to_tensor(self.bias)
            if columns is not None:
                bias = tf.gather(bias, columns)
            outputs = tf.nn.bias_add(outputs, tf.cast(bias, self.compute_dtype))
        return outputs if self.activation is None else self.activation(outputs)

    def get_config(self):
        config = super().get_config()
        config.update(xla=self.xla)
        return config
