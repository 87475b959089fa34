"""Distribution strategies and how one global batch is split, shared by fine-tuning and pretraining.

`strategy` is "mirrored" (all local GPUs, else all logical CPU devices),
"multiworker" (`TF_CONFIG`), "tpu" (`TPUClusterResolver`), None (no
strategy) or a `tf.distribute.Strategy` object.

One rule for the batch: `batch_size` is always the *global* batch, what one
optimizer update sees. It is split over the replicas (it must divide) and,
with gradient accumulation, into `accumulation_steps` micro-batches that run
one after the other (it must divide too). The learning-rate / batch-size
pairing and a checkpoint's data position then do not depend on the hardware.

Gradient accumulation is Keras' own (`gradient_accumulation_steps` of the
optimizer). In Keras 3.15 it does not work under a `tf.distribute` strategy:
the update runs inside a conditional, and synchronising the replicas there
(`merge_call`) is refused by TensorFlow ("`merge_call` called while defining
a new graph..."). So `split_batch` refuses accumulation with a strategy.

Example:

>>> split_batch(32, 4, tf.distribute.get_strategy())
8
"""

from __future__ import annotations

import os

import tensorflow as tf

from tfbert.errors import ConfigError

STRATEGIES = ("mirrored", "multiworker", "tpu")


def resolve_strategy(strategy: str | tf.distribute.Strategy | None) -> tf.distribute.Strategy:
    """A `tf.distribute.Strategy` from its name (see the module docstring).

    "mirrored" uses every local GPU, or, without GPUs, every logical CPU
    device (one unless split with `tf.config.set_logical_device_configuration`).
    None gives the current strategy (the default one outside any scope).
    """
    if strategy is None:
        return tf.distribute.get_strategy()
    if isinstance(strategy, tf.distribute.Strategy):
        return strategy
    if strategy == "mirrored":
        devices = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")
        names = [d.name for d in devices]
        cross_device = None if devices[0].device_type == "GPU" else (
            tf.distribute.ReductionToOneDevice(reduce_to_device=names[0]))
        return tf.distribute.MirroredStrategy(names, cross_device_ops=cross_device)
    if strategy == "multiworker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    if strategy == "tpu":
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(
            tpu=os.environ.get("TPU_NAME", ""))
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        return tf.distribute.TPUStrategy(resolver)
    raise ConfigError(f"unknown strategy {strategy!r}; choose {', '.join(STRATEGIES)}")


def split_batch(batch_size: int, accumulation_steps: int,
                strategy: tf.distribute.Strategy) -> int:
    """The micro-batch size (`batch_size / accumulation_steps`) after checking the split.

    Raises:
        ConfigError: a size below 1, a batch that the accumulation steps or
            the replicas do not divide, or accumulation under a strategy.
    """
    if batch_size < 1 or accumulation_steps < 1:
        raise ConfigError(f"batch_size ({batch_size}) and accumulation_steps "
                          f"({accumulation_steps}) must be >= 1")
    if batch_size % accumulation_steps:
        raise ConfigError(f"batch_size {batch_size} is not divisible by accumulation_steps "
                          f"{accumulation_steps} (the batch is split into that many "
                          "micro-batches)")
    if accumulation_steps > 1 and uses_strategy(strategy):
        raise ConfigError(
            f"accumulation_steps {accumulation_steps} does not work under a distribution "
            "strategy (Keras 3.15 updates inside a conditional, where tf.distribute cannot "
            "synchronise replicas); train without a strategy, or without accumulation")
    replicas = strategy.num_replicas_in_sync
    if batch_size % replicas:
        raise ConfigError(f"batch_size {batch_size} is not divisible by the {replicas} "
                          "replicas of the strategy")
    return batch_size // accumulation_steps


def uses_strategy(strategy: tf.distribute.Strategy) -> bool:
    """Whether `strategy` is a real one (not TensorFlow's default no-op strategy)."""
    return strategy is not tf.distribute.get_strategy() or tf.distribute.has_strategy()


def can_jit_compile(strategy: tf.distribute.Strategy) -> bool:
    """Whether the train step may be XLA-compiled under `strategy`.

    XLA compiles a CPU step for CPU:0 only: with replicas on several logical
    CPU devices it cannot reach the other replicas' variables
    ("tfvariable_on_a_different_device"). The attention core stays XLA.
    """
    if strategy.num_replicas_in_sync == 1:
        return True
    local = list(strategy.extended.worker_devices)
    return not (len(local) > 1 and all("CPU" in d.upper() for d in local))


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """Whether this process writes the run's output (always, except on multi-worker non-chiefs)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) or resolver is None:
        return True
    task_type, task_id = resolver.task_type, resolver.task_id
    if task_type in (None, "chief"):
        return True
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    return task_type == "worker" and task_id == 0 and not has_chief
