"""BERT pretraining (masked LM + next-sentence prediction) with `model.fit`.

`run_pretraining` goes from a corpus and a vocabulary to a tfbert model
directory that `tfbert finetune --init DIR` and `tfbert export` accept:
pairs and dynamic masks from `tfbert.data.pretraining`, the pretrainer of
`tfbert.models`, BERT's optimizer and schedule, checkpoints every N steps
with exact resumption (`tfbert.training.resume`), per-epoch `history.json`.

Distribution: `strategy` is "mirrored" (all local GPUs, else all logical CPU
devices), "multiworker" (`TF_CONFIG`), "tpu" (`TPUClusterResolver`), or None.
`batch_size` is always the *global* batch — what one optimizer step sees —
split evenly over the replicas (it must divide). That keeps the learning-rate
/ batch-size pairing and the data position of a checkpoint independent of the
number of devices: a run resumed on other hardware continues with the same
batches. The train step is XLA-compiled (`jit_compile=True`), except with
replicas on several logical CPU devices, which XLA cannot span.

Mixed precision: "bf16" sets Keras' "mixed_bfloat16" policy, "fp16" sets
"mixed_float16" and wraps the optimizer in Keras' `LossScaleOptimizer`.
Variables stay float32, so the saved model loads in float32. The global
policy is restored when the run ends.

Example:

    model = run_pretraining(["corpus/*.txt"], "vocab.txt", "mini", "out/pretrained",
                            steps=10_000, batch_size=64)
    encoder = tfbert.load_encoder("out/pretrained")
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Sequence

import keras
import tensorflow as tf

from tfbert.checkpoints import save_model
from tfbert.config import PRESETS, BertConfig, ConfigError
from tfbert.data.pretraining import (
    PairOptions,
    batches_per_pass,
    load_pairs,
    pretraining_dataset,
)
from tfbert.models import build_encoder, build_pretrainer, compile_pretrainer
from tfbert.tasks import TaskInfo
from tfbert.text import load_tokenizer
from tfbert.training.callbacks import HistoryFile
from tfbert.training.optimization import create_optimizer
from tfbert.training.resume import TrainingCheckpoint, fit_resumable

STRATEGIES = ("mirrored", "multiworker", "tpu")
MIXED_PRECISION = {"bf16": "mixed_bfloat16", "fp16": "mixed_float16"}
CHECKPOINT_DIR = "checkpoints"
HISTORY_FILE = "history.json"
# A small corpus makes short epochs; cap the number of epochs (history
# records, progress bars) a run is split into by default.
_MAX_DEFAULT_EPOCHS = 100


def run_pretraining(corpus: str | Sequence[str], vocab: str, config: BertConfig | str,
                    output_dir: str, steps: int = 1000, batch_size: int = 32,
                    seq_len: int = 128, learning_rate: float = 1e-4,
                    warmup: float | int = 0.1, mask_rate: float = 0.15,
                    max_predictions_per_seq: int = 20, whole_word_masking: bool = False,
                    optimizer: str = "adamw", checkpoint_every: int | None = None,
                    resume: bool = False,
                    strategy: str | tf.distribute.Strategy | None = None,
                    mixed_precision: str | None = None, seed: int = 0,
                    lowercase: bool | None = None, steps_per_epoch: int | None = None,
                    pair_options: PairOptions | None = None,
                    verbose: str | int = "auto") -> keras.Model:
    """Pretrain a BERT with MLM + NSP and save it as a tfbert model directory.

    Args:
        corpus: corpus files or globs (one sentence per line, blank line
            between documents), or a directory from `prepare_pretraining_data`.
        vocab: `vocab.txt` (or a model directory holding one).
        config: a `BertConfig`, a preset name ("tiny" ... "large"), or a
            config JSON (tfbert, Hugging Face or Google format). Presets take
            the vocabulary's size; a JSON must match it.
        output_dir: the model directory to write (`config.json`, `vocab.txt`,
            `model.weights.h5`, `history.json`, `checkpoints/`).
        steps: optimizer steps of the whole run.
        batch_size: global batch size (split over replicas).
        seq_len: sequence length (`[CLS]`/`[SEP]` included).
        learning_rate: peak learning rate.
        warmup: warmup steps, or a fraction of `steps` if below 1.
        mask_rate: fraction of tokens to predict.
        max_predictions_per_seq: most predictions per sequence.
        whole_word_masking: mask all pieces of a chosen word.
        optimizer: "adamw" or "lamb".
        checkpoint_every: steps between checkpoints; default
            `min(steps_per_epoch, 1000)`.
        resume: continue from the latest checkpoint in `output_dir` (a fresh
            start if there is none); False deletes old checkpoints.
        strategy: None, "mirrored", "multiworker", "tpu" or a strategy object.
        mixed_precision: None, "bf16" or "fp16".
        seed: seeds initialisation, pair construction, shuffling and masks.
        lowercase: force the vocabulary's casing; default: read or inferred.
        steps_per_epoch: steps per Keras epoch (history/progress granularity);
            default one pass over the pairs, at most `steps` and at least
            `steps / 100`.
        pair_options: pair construction settings (`seq_len` and `seed` must
            match the arguments); default `PairOptions(seq_len, seed)`.
        verbose: Keras `fit` verbosity; 0 also hides the corpus progress bar.

    Returns:
        the trained pretrainer (`mlm` and `nsp` outputs).

    Raises:
        TfbertError: bad arguments (`ConfigError`), corpus (`DataError`) or
            checkpoint (`ResumeError`, a `CheckpointError`), naming the file
            or field; all are also ValueErrors.
    """
    if steps < 1 or batch_size < 1:
        raise ConfigError(f"steps ({steps}) and batch_size ({batch_size}) must be >= 1")
    if optimizer not in ("adamw", "lamb"):
        raise ConfigError(f"unknown optimizer {optimizer!r}; choose adamw or lamb")
    warmup_steps = warmup_to_steps(warmup, steps)
    tokenizer = load_tokenizer(vocab, lowercase=lowercase)
    bert_config = resolve_config(config, tokenizer.vocab_size)
    if seq_len > bert_config.max_position_embeddings:
        raise ConfigError(f"seq_len {seq_len} exceeds the config's max_position_embeddings "
                          f"({bert_config.max_position_embeddings})")
    options = pair_options or PairOptions(seq_len=seq_len, seed=seed)
    if (options.seq_len, options.seed) != (seq_len, seed):
        raise ConfigError("pair_options.seq_len/seed must match seq_len/seed")
    dist = resolve_strategy(strategy)
    if batch_size % dist.num_replicas_in_sync:
        raise ConfigError(f"batch_size {batch_size} is not divisible by the "
                         f"{dist.num_replicas_in_sync} replicas of the strategy")

    source = load_pairs(corpus, tokenizer, options, progress=verbose != 0)
    per_pass = batches_per_pass(source, batch_size)
    if per_pass < 1:
        raise ConfigError(f"the corpus gives {source.num_pairs} sentence pairs, fewer than "
                         f"one batch of {batch_size}; use more text or a smaller batch")
    if steps_per_epoch is None:
        steps_per_epoch = min(steps, max(per_pass, math.ceil(steps / _MAX_DEFAULT_EPOCHS)))
    checkpoint_every = checkpoint_every or min(steps_per_epoch, 1000)

    checkpoint = TrainingCheckpoint(
        os.path.join(output_dir, CHECKPOINT_DIR), checkpoint_every,
        run_info={"steps": steps, "batch_size": batch_size, "seq_len": seq_len, "seed": seed,
                  "steps_per_epoch": steps_per_epoch, "mask_rate": mask_rate,
                  "whole_word_masking": whole_word_masking,
                  "max_predictions_per_seq": max_predictions_per_seq,
                  "vocab_size": tokenizer.vocab_size, "num_pairs": source.num_pairs},
        is_chief=_is_chief(dist))
    if resume:
        checkpoint.check_run_info()  # before the costly model build

    os.makedirs(output_dir, exist_ok=True)
    with _dtype_policy(mixed_precision):
        keras.utils.set_random_seed(seed)
        with dist.scope():
            model = build_pretrainer(build_encoder(bert_config))
            opt = create_optimizer(optimizer, learning_rate, steps, warmup_steps)
            if mixed_precision == "fp16":
                opt = keras.optimizers.LossScaleOptimizer(opt)
            compile_pretrainer(model, opt, jit_compile=_can_jit_compile(dist))
            opt.build(model.trainable_variables)
        start = checkpoint.restore(model) if resume else checkpoint.clear()
        if resume and verbose != 0:
            print(f"Resuming at step {start} of {steps}" if start else
                  "No checkpoint to resume from; starting at step 0")

        def make_dataset(start_batch: int) -> tf.data.Dataset:
            return pretraining_dataset(
                source, tokenizer, seq_len=seq_len, batch_size=batch_size, mask_rate=mask_rate,
                max_predictions_per_seq=max_predictions_per_seq,
                whole_word_masking=whole_word_masking, seed=seed, start_batch=start_batch)

        fit_resumable(model, make_dataset, total_steps=steps, steps_per_epoch=steps_per_epoch,
                      checkpoint=checkpoint, start_step=start,
                      callbacks=[HistoryFile(os.path.join(output_dir, HISTORY_FILE))],
                      verbose=verbose)
    if _is_chief(dist):
        save_model(model, output_dir,
                   TaskInfo(task="pretrain", max_seq_length=seq_len,
                            lowercase=tokenizer.lowercase),
                   tokenizer.vocab)
    return model


def warmup_to_steps(warmup: float | int, steps: int) -> int:
    """Warmup steps from a count (>= 1) or a fraction of `steps` (< 1).

    Example:

    >>> warmup_to_steps(0.1, 1000), warmup_to_steps(50, 1000)
    (100, 50)
    """
    if warmup < 0:
        raise ConfigError(f"warmup must be >= 0, got {warmup}")
    value = int(round(warmup * steps)) if warmup < 1 else int(warmup)
    if value > steps:
        raise ConfigError(f"warmup ({value} steps) is longer than the run ({steps} steps)")
    return value


def resolve_config(config: BertConfig | str, vocab_size: int) -> BertConfig:
    """A `BertConfig` from an object, a preset name or a JSON file, checked against the vocab.

    Raises:
        ConfigError: unknown preset, unreadable file, or a vocab size mismatch.
    """
    if isinstance(config, BertConfig):
        resolved, source = config, "config"
    elif config in PRESETS:
        return BertConfig.from_preset(config, vocab_size=vocab_size)
    elif os.path.isfile(config):
        resolved, source = BertConfig.from_file(config), config
    else:
        raise ConfigError(f"{config}: neither a preset ({', '.join(PRESETS)}) nor a config file")
    if resolved.vocab_size != vocab_size:
        raise ConfigError(f"{source}: vocab_size {resolved.vocab_size} does not match the "
                          f"vocabulary's {vocab_size} tokens")
    return resolved


def resolve_strategy(strategy: str | tf.distribute.Strategy | None) -> tf.distribute.Strategy:
    """A `tf.distribute.Strategy` from its name (see the module docstring).

    "mirrored" uses every local GPU, or, without GPUs, every logical CPU
    device (one unless split with `tf.config.set_logical_device_configuration`).
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


@contextlib.contextmanager
def _dtype_policy(mixed_precision: str | None):
    if mixed_precision is not None and mixed_precision not in MIXED_PRECISION:
        raise ConfigError(f"unknown mixed precision {mixed_precision!r}; choose "
                         f"{', '.join(MIXED_PRECISION)}")
    previous = keras.config.dtype_policy()
    if mixed_precision is not None:
        keras.config.set_dtype_policy(MIXED_PRECISION[mixed_precision])
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def _can_jit_compile(strategy: tf.distribute.Strategy) -> bool:
    # XLA compiles a CPU step for CPU:0 only: with replicas on several
    # logical CPU devices it cannot reach the other replicas' variables
    # ("tfvariable_on_a_different_device"). The attention core stays XLA.
    if strategy.num_replicas_in_sync == 1:
        return True
    local = list(strategy.extended.worker_devices)
    return not (len(local) > 1 and all("CPU" in d.upper() for d in local))


def _is_chief(strategy: tf.distribute.Strategy) -> bool:
    resolver = getattr(strategy, "cluster_resolver", None)
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) or resolver is None:
        return True
    task_type, task_id = resolver.task_type, resolver.task_id
    if task_type in (None, "chief"):
        return True
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    return task_type == "worker" and task_id == 0 and not has_chief
