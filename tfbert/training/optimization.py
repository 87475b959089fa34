"""Optimizers and learning-rate schedule for BERT training.

Keras already ships AdamW and LAMB with decoupled weight decay; what it lacks
is BERT's schedule (linear warmup, then linear decay to zero), written here.
"""

from __future__ import annotations

import keras
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


def create_optimizer(name: str, learning_rate: float, total_steps: int,
                     warmup_steps: int = 0, weight_decay: float = 0.01,
                     clipnorm: float | None = 1.0) -> keras.optimizers.Optimizer:
    """AdamW or LAMB with BERT's schedule and weight-decay exclusions.

    Args:
        name: "adamw" (fine-tuning, small-batch pretraining) or "lamb"
            (large-batch pretraining).
        learning_rate: peak learning rate.
        total_steps: optimizer steps of the whole run (the schedule's end).
        warmup_steps: linear warmup steps.
        weight_decay: decoupled weight decay (not applied to LayerNorm/bias).
        clipnorm: global gradient-norm clipping; None disables it.
    """
    schedule = WarmupLinearDecay(learning_rate, total_steps, warmup_steps)
    common = dict(learning_rate=schedule, weight_decay=weight_decay, epsilon=1e-6,
                  global_clipnorm=clipnorm)
    if name == "adamw":
        optimizer = keras.optimizers.AdamW(**common)
    elif name == "lamb":
        optimizer = keras.optimizers.Lamb(**common)
    else:
        raise ConfigError(f"unknown optimizer {name!r}; choose adamw or lamb")
    optimizer.exclude_from_weight_decay(var_names=NO_DECAY)
    return optimizer
