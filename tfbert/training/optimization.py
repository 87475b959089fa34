"""Optimizers and learning-rate schedule for BERT training.

Keras already ships AdamW and LAMB with decoupled weight decay; what it lacks
is BERT's schedule (linear warmup, then linear decay to zero), written here.

Gradient accumulation is Keras' own (`gradient_accumulation_steps`): each
`fit` step adds a micro-batch's gradients, every N-th applies their mean
(clipped by `global_clipnorm`, then AdamW/LAMB with weight decay) and resets
them. One thing needs fixing: Keras 3.15 calls a learning-rate schedule with
its micro-batch counter, so the schedule would run N times too fast (and end
at a learning rate of 0 after 1/N of the run). `PerUpdate` wraps the
schedule so that it sees optimizer updates, as `optimizer.iterations` does.

Embedding gradients: an embedding lookup's gradient is a `tf.IndexedSlices`
with one row per occurrence of a token. Keras 3.15's Adam, AdamW and LAMB
apply such a gradient row by row, so a token seen k times in a batch gets its
moments updated k times (the second moment from the sum of squares, not the
square of the sum): Adam's first step for it is not +-lr, and the update
differs from the same gradient given densely -- which is what an
accumulated gradient is. `AdamW` and `Lamb` below densify such gradients
first (summing the rows of a token), as BERT's own optimizer did.

Fused AdamW: Keras' AdamW updates each weight with about ten TensorFlow
elementwise ops, each writing a weight-sized temporary; on CPU the update of
MiniLM's 22.7M weights took 43 ms a step. `AdamW` runs the same math as
TensorFlow's fused kernels: `ResourceApplyAdam` (weight, both moments and
gradient in one pass) and, for the decoupled weight decay,
`ResourceApplyGradientDescent` (`w -= lr * wd * w`): 21 ms. Both kernels
exist for CPU, GPU and XLA; the slot variables and the saved optimizer
state are Keras' own.
"""

from __future__ import annotations

import keras
import tensorflow as tf
from keras import ops

from tfbert.errors import ConfigError

# BERT does not decay LayerNorm parameters (gamma/beta) or biases.
NO_DECAY = ["gamma", "beta", "bias"]


@keras.saving.register_keras_serializable(package="tfbert")
class WarmupLinearDecay(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warmup from 0 to `peak` over `warmup_steps`, then linear decay to 0.

    Example:

    >>> s = WarmupLinearDecay(1.0, total_steps=10, warmup_steps=2)
    >>> [round(float(s(i)), 3) for i in (0, 1, 2, 6, 10)]
    [0.0, 0.5, 1.0, 0.5, 0.0]
    """

    def __init__(self, peak: float, total_steps: int, warmup_steps: int = 0):
        if total_steps < 1 or not 0 <= warmup_steps <= total_steps:
            raise ConfigError(f"need 0 <= warmup_steps ({warmup_steps}) <= total_steps "
                             f"({total_steps}) and total_steps >= 1")
        self.peak = float(peak)
        self.total_steps = int(total_steps)
        self.warmup_steps = int(warmup_steps)

    def __call__(self, step):
        step = ops.cast(step, "float32")
        warmup = ops.maximum(float(self.warmup_steps), 1.0)
        decay = ops.maximum(float(self.total_steps - self.warmup_steps), 1.0)
        rising = self.peak * step / warmup
        falling = self.peak * ops.maximum(0.0, (self.total_steps - step) / decay)
        return ops.where(step < self.warmup_steps, rising, falling)

    def get_config(self):
        return {"peak": self.peak, "total_steps": self.total_steps,
                "warmup_steps": self.warmup_steps}


@keras.saving.register_keras_serializable(package="tfbert")
class PerUpdate(keras.optimizers.schedules.LearningRateSchedule):
    """`schedule` indexed by optimizer updates when gradients accumulate over micro-batches.

    Keras 3.15 passes the schedule its micro-batch counter; this divides it
    by `accumulation_steps`, so step k of the schedule is optimizer update k.

    Example:

    >>> s = PerUpdate(WarmupLinearDecay(1.0, total_steps=10), accumulation_steps=4)
    >>> [round(float(s(i)), 3) for i in (0, 3, 4, 39)]
    [1.0, 1.0, 0.9, 0.1]
    """

    def __init__(self, schedule: keras.optimizers.schedules.LearningRateSchedule,
                 accumulation_steps: int):
        if accumulation_steps < 1:
            raise ConfigError(f"accumulation_steps must be >= 1, got {accumulation_steps}")
        self.schedule = schedule
        self.accumulation_steps = int(accumulation_steps)

    def __call__(self, step):
        return self.schedule(ops.floor_divide(step, self.accumulation_steps))

    def get_config(self):
        return {"schedule": keras.saving.serialize_keras_object(self.schedule),
                "accumulation_steps": self.accumulation_steps}

    @classmethod
    def from_config(cls, config):
        return cls(keras.saving.deserialize_keras_object(config["schedule"]),
                   config["accumulation_steps"])


def _dense(grads):
    return [tf.convert_to_tensor(g) if isinstance(g, tf.IndexedSlices) else g for g in grads]


@keras.saving.register_keras_serializable(package="tfbert")
class AdamW(keras.optimizers.AdamW):
    """Keras' AdamW given dense gradients, updating through fused kernels.

    The arguments, the math (decoupled weight decay first, then Adam with
    Keras' bias correction and epsilon outside the square root), the slot
    variables and the saved state are Keras'; see the module docstring for
    the dense gradients and the fused kernels. `amsgrad=True` runs Keras'
    own update.

    Example:

    >>> w = keras.Variable([1.0, -1.0])
    >>> opt = AdamW(learning_rate=0.1, weight_decay=0.0)
    >>> _ = opt.apply([tf.constant([0.5, -2.0])], [w])
    >>> [round(float(x), 4) for x in w.numpy()]  # Adam's first step: -lr * sign(g)
    [0.9, -0.9]
    """

    def apply(self, grads, trainable_variables=None):
        return super().apply(_dense(grads), trainable_variables)

    def _apply_weight_decay(self, variables):
        if self.weight_decay is None:
            return

        def decay(variable):
            if self._use_weight_decay(variable):
                rate = (tf.cast(self.learning_rate, variable.dtype)
                        * tf.cast(self.weight_decay, variable.dtype))
                tf.raw_ops.ResourceApplyGradientDescent(var=variable.handle, alpha=rate,
                                                        delta=tf.identity(variable))

        # As Keras' TensorFlow optimizer: each replica's copy under a strategy.
        def decay_all(distribution, variables):
            for variable in variables:
                if isinstance(variable, keras.Variable):
                    variable = variable.value
                distribution.extended.update(variable, decay, group=False)

        tf.__internal__.distribute.interim.maybe_merge_call(
            decay_all, self._distribution_strategy, variables)

    def update_step(self, gradient, variable, learning_rate):
        if self.amsgrad or isinstance(gradient, tf.IndexedSlices):
            return super().update_step(gradient, variable, learning_rate)
        dtype = variable.dtype

        def cast(value):
            return tf.cast(value, dtype)

        step = cast(self.iterations + 1)
        index = self._get_variable_index(variable)
        tf.raw_ops.ResourceApplyAdam(
            var=variable.handle, m=self._momentums[index].handle,
            v=self._velocities[index].handle,
            beta1_power=tf.pow(cast(self.beta_1), step),
            beta2_power=tf.pow(cast(self.beta_2), step), lr=cast(learning_rate),
            beta1=cast(self.beta_1), beta2=cast(self.beta_2), epsilon=cast(self.epsilon),
            grad=cast(gradient))


@keras.saving.register_keras_serializable(package="tfbert")
class Lamb(keras.optimizers.Lamb):
    """Keras' LAMB given dense gradients (see the module docstring)."""

    def apply(self, grads, trainable_variables=None):
        return super().apply(_dense(grads), trainable_variables)


def create_optimizer(name: str, learning_rate: float, total_steps: int,
                     warmup_steps: int = 0, weight_decay: float = 0.01,
                     clipnorm: float | None = 1.0,
                     accumulation_steps: int = 1) -> keras.optimizers.Optimizer:
    """AdamW or LAMB with BERT's schedule and weight-decay exclusions.

    Args:
        name: "adamw" (fine-tuning, small-batch pretraining) or "lamb"
            (large-batch pretraining).
        learning_rate: peak learning rate.
        total_steps: optimizer steps of the whole run (the schedule's end).
        warmup_steps: linear warmup steps.
        weight_decay: decoupled weight decay (not applied to LayerNorm/bias).
        clipnorm: global gradient-norm clipping; None disables it.
        accumulation_steps: micro-batches per update (Keras'
            `gradient_accumulation_steps`); `total_steps` and `warmup_steps`
            still count updates, and so does `optimizer.iterations`.
    """
    schedule = WarmupLinearDecay(learning_rate, total_steps, warmup_steps)
    common = dict(learning_rate=schedule, weight_decay=weight_decay, epsilon=1e-6,
                  global_clipnorm=clipnorm)
    if accumulation_steps != 1:
        common.update(learning_rate=PerUpdate(schedule, accumulation_steps),
                      gradient_accumulation_steps=accumulation_steps)
    if name == "adamw":
        optimizer = AdamW(**common)
    elif name == "lamb":
        optimizer = Lamb(**common)
    else:
        raise ConfigError(f"unknown optimizer {name!r}; choose adamw or lamb")
    optimizer.exclude_from_weight_decay(var_names=NO_DECAY)
    return optimizer
