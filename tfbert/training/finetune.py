"""Fine-tuning any registered task from any model directory, and its evaluation.

The task (`tfbert.tasks`) supplies the data, model head, loss and metrics;
this module supplies what every task shares: the optimizer and schedule,
gradient accumulation, distribution strategies, checkpoints with exact
resume, early stopping and keeping the best epoch, TensorBoard logs,
`history.json`, and writing the model directory.

Which weights are shipped: the output directory holds the last epoch's
weights, or with `save_best` or `early_stopping` the best epoch's by
`monitor`. `history.json` stays a list of `{"epoch": n, ...}` records; each
record also says `"shipped": true` (the epoch in the model directory) or
`false`.

Example:

    run_finetune("train.jsonl", "bert-base-uncased/", "out/model",
                 validation="dev.jsonl", epochs=10, early_stopping=2,
                 monitor="val_accuracy")
"""

from __future__ import annotations

import math
import os
import sys

import keras
import tensorflow as tf

from tfbert import precision as precisions
from tfbert import tasks
from tfbert.checkpoints import load_encoder, load_model, save_model
from tfbert.errors import ConfigError
from tfbert.tasks import TaskInfo
from tfbert.text import load_tokenizer
from tfbert.training.callbacks import (
    BestEpoch,
    HistoryFile,
    mark_shipped,
    read_history,
    tensorboard_callback,
)
from tfbert.training.optimization import create_optimizer
from tfbert.training.resume import TrainingCheckpoint, fit_resumable
from tfbert.training.strategy import can_jit_compile, is_chief, resolve_strategy, split_batch


def run_finetune(train: str, init: str, output: str, validation: str | None = None,
                 epochs: int = 3, batch_size: int = 32, learning_rate: float = 5e-5,
                 warmup: float = 0.1, max_seq_length: int = 128, pooling: str = "cls",
                 resume: bool = False, seed: int = 0, precision: str = "fp32",
                 compile: str | None = None,
                 verbose: int | str = "auto", task: str = "classify",
                 checkpoint_every: int | None = None, accumulation_steps: int = 1,
                 strategy: str | tf.distribute.Strategy | None = None,
                 tensorboard: str | None = None, early_stopping: int | None = None,
                 monitor: str = "val_loss", save_best: bool = False,
                 long_inputs: str = "truncate", doc_stride: int = 128,
                 max_query_length: int = 64) -> keras.Model:
    """Fine-tune a task model and write a tfbert model directory to `output`.

    Args:
        train: training file in the task's format (`tfbert.tasks.get(task)
            .data_format`). classify: CSV/TSV/JSONL (`text`, optional
            `text_pair`, `label`); tag: CoNLL with BIO tags; qa: SQuAD
            v1.1/v2.0 JSON.
        init: tfbert, Hugging Face or Google BERT directory with the encoder.
        output: model directory written at the end (plus `history.json` and,
            while training, `checkpoints/` for `--resume`).
        validation: optional file in the same format; metrics every epoch.
        epochs, learning_rate: the usual.
        batch_size: the global batch of one optimizer update (split over
            replicas and micro-batches).
        warmup: fraction of all steps spent in linear warmup.
        max_seq_length: cap on tokens per example (pairs, question + context
            included).
        pooling: "cls" or "mean" (classify only; see `build_classifier`).
        resume: continue an interrupted run from its last checkpoint in
            `output/checkpoints`; it ends at the same step as an uninterrupted
            run would.
        checkpoint_every: optimizer steps between checkpoints (default: every
            epoch, at most 100 steps).
        seed: shuffling and initialisation seed.
        precision: "fp32", or "bf16" (Keras' `mixed_bfloat16`: float32
            weights, bfloat16 matmuls and activations; softmax, LayerNorm
            statistics, logits and loss in float32). Warns where bf16 is not
            the fast path (`tfbert.precision.bf16_support`). The written model
            directory holds float32 weights either way.
        compile: what XLA compiles: "whole" (the train step), "attention"
            (the attention core only) or "none"; default the measured best
            for this device and precision (`tfbert.precision.compile_policy`).
        task: a registered task name: "classify", "multilabel" (any number
            of labels per text; per-label thresholds tuned on `validation`),
            "regress" (one number per text; history `mse`, `pearson`,
            `val_spearman`), "tag" (token tagging,
            history `accuracy` = tag accuracy on words' first pieces), "qa"
            (extractive span QA, history `start_accuracy`/`end_accuracy`), or
            one registered with `tfbert.tasks.register`.
        accumulation_steps: split each batch into this many micro-batches of
            `batch_size / accumulation_steps` and apply their mean gradient
            once (Keras' `gradient_accumulation_steps`): the memory of the
            small batch, the update of the large one. Epochs, steps and
            `checkpoint_every` count updates; an epoch is
            `ceil(examples / batch_size)` updates. Not with a `strategy`.
        strategy: None, "mirrored", "multiworker", "tpu" or a strategy object
            (`tfbert.training.strategy`); the chief writes the output.
        tensorboard: a directory for Keras' TensorBoard logs (`train/` and
            `validation/` event files with every epoch's loss, metrics and
            learning rate).
        early_stopping: stop after this many epochs without a better
            `monitor`, and ship the best epoch's weights.
        monitor: what `early_stopping`/`save_best` watch: a key of the epoch
            logs ("val_loss", "val_accuracy", ...); lower is better for names
            ending in "loss", higher otherwise. Names starting with "val_"
            need `validation`; a name the run never logs fails after the
            first epoch, naming the keys it has.
        save_best: ship the best epoch's weights by `monitor` (all epochs run
            unless `early_stopping`). With `resume`, the best-so-far and the
            patience count survive a crash (they are kept in `checkpoints/`).
        long_inputs: "truncate" or "windows": what to do with examples longer
            than `max_seq_length` (tasks that support windows; qa always
            windows its contexts).
        doc_stride: tokens between the starts of consecutive windows.
        max_query_length: question tokens kept (qa).

    Returns:
        The trained model (with the shipped weights).
    """
    spec = tasks.get(task)
    if not spec.finetunable:
        raise ConfigError(f"task {task!r} ({spec.description}) is not trained by finetune; "
                          f"fine-tunable tasks: "
                          f"{', '.join(n for n in tasks.names() if tasks.get(n).finetunable)}")
    keep_best = save_best or early_stopping is not None
    if keep_best and monitor.startswith("val_") and validation is None:
        raise ConfigError(f"early_stopping/save_best watch {monitor!r}, a validation metric: "
                          "give a validation file")
    if early_stopping is not None and early_stopping < 1:
        raise ConfigError(f"early_stopping patience must be >= 1, got {early_stopping}")
    if epochs < 1:
        raise ConfigError(f"epochs must be >= 1, got {epochs}")
    dist = resolve_strategy(strategy)
    micro_batch = split_batch(batch_size, accumulation_steps, dist)
    chief = is_chief(dist)
    board = tensorboard_callback(tensorboard) if tensorboard and chief else None
    precisions.check_precision(precision)
    mode = precisions.check_compile_mode(compile or precisions.compile_policy(precision, "train"))
    precisions.warn_if_slow(precision, "tfbert finetune")
    keras.utils.set_random_seed(seed)
    tokenizer = load_tokenizer(init, max_seq_length=max_seq_length)
    if long_inputs not in ("truncate", "windows"):
        raise ConfigError(f"long_inputs must be 'truncate' or 'windows', got {long_inputs!r}")
    if doc_stride < 1 or max_query_length < 1:
        raise ConfigError("doc_stride and max_query_length must be >= 1")
    info = TaskInfo(task=task, max_seq_length=max_seq_length, lowercase=tokenizer.lowercase,
                    pooling=pooling, long_inputs=long_inputs, doc_stride=doc_stride,
                    max_query_length=max_query_length)
    # The pipeline yields micro-batches; the shuffle does not depend on the
    # batch size, so N micro-batches hold the examples of one batch. (With a
    # training set that B does not divide, a pass ends with a short
    # micro-batch, which weighs as much as the others in the update's mean.)
    data = spec.read_data(train, validation, tokenizer, info, micro_batch, seed)
    steps_per_epoch = math.ceil(data.train_size / batch_size)
    total = steps_per_epoch * epochs
    with dist.scope(), precisions.dtype_policy(precisions.training_policy(precision)):
        model = spec.build_model(load_encoder(init, **precisions.island_config(mode)), data.info)
        optimizer = create_optimizer("adamw", learning_rate, total, int(warmup * total),
                                     accumulation_steps=accumulation_steps)
        spec.compile_model(model, optimizer,
                           jit_compile=mode == "whole" and can_jit_compile(dist))
        optimizer.build(model.trainable_variables)

    os.makedirs(output, exist_ok=True)
    history = os.path.join(output, "history.json")
    checkpoint_dir = os.path.join(output, "checkpoints")
    checkpoint = TrainingCheckpoint(
        checkpoint_dir,
        every_n_steps=checkpoint_every or min(steps_per_epoch, 100),
        run_info={"task": task, "train": os.path.abspath(train), "init": os.path.abspath(init),
                  "epochs": epochs, "batch_size": batch_size, "learning_rate": learning_rate,
                  "max_seq_length": max_seq_length, "seed": seed, "pooling": pooling,
                  "accumulation_steps": accumulation_steps, "precision": precision},
        is_chief=chief, accumulation_steps=accumulation_steps)
    if resume:
        start = checkpoint.restore(model)
        if start and chief:
            print(f"tfbert finetune: resuming at step {start} of {total}", file=sys.stderr)
    else:
        start = checkpoint.clear()
        if os.path.exists(history) and chief:
            os.remove(history)
    # BestEpoch keeps its state beside the checkpoints: cleared with them.
    best = BestEpoch(checkpoint_dir, monitor, early_stopping, is_chief=chief) if keep_best \
        else None
    if best is not None and resume:
        best.resume(completed_epochs=start // steps_per_epoch)
    # The task's first: they may add epoch values that the others record or watch.
    callbacks = list(spec.callbacks(model, data)) if spec.callbacks is not None else []
    if best is not None:
        callbacks.append(best)  # before HistoryFile: weights, then record
    if chief:
        callbacks.append(HistoryFile(history))
    if board is not None:
        callbacks.append(board)

    # A deterministic stream (seeded shuffle, reshuffled each pass): micro-batch
    # k of a resumed run is the one micro-batch k of an uninterrupted run saw.
    def stream(start_batch: int) -> tf.data.Dataset:
        return data.train().repeat().skip(start_batch)

    fit_resumable(model, stream, total_steps=total, steps_per_epoch=steps_per_epoch,
                  checkpoint=checkpoint, start_step=start, callbacks=callbacks,
                  verbose=verbose, validation_data=data.validation,
                  accumulation_steps=accumulation_steps)
    if chief:
        shipped = best.restore_best(model) if best is not None else None
        if shipped is None:
            shipped = max((r["epoch"] for r in read_history(history)), default=None)
        info = data.info
        if spec.after_training is not None:  # e.g. thresholds tuned on the shipped weights
            info = spec.after_training(model, tokenizer, info, data)
        save_model(model, output, info, tokenizer.vocab)
        if os.path.exists(history):
            mark_shipped(history, shipped)
    checkpoint.clear()  # the model directory is the result; optimizer state is not kept
    return model


def evaluate(model_dir: str, data: str, batch_size: int = 32) -> dict:
    """Metrics of a fine-tuned model on a labelled file, as a JSON-able dict.

    What is measured depends on the task (its `evaluate`): classify gives
    `examples`, `loss`, `accuracy`, `macro_f1` and per-label
    `precision`/`recall`/`f1`/`support`; multilabel gives `loss`, micro
    precision/recall/F1, `macro_f1` and per-label values with the tuned
    thresholds; regress gives `mse`, `pearson` and `spearman`; tag gives token `accuracy` and
    entity-level `precision`/`recall`/`f1` (conlleval's BIO chunks), also per
    entity type; qa gives SQuAD `exact_match` and `f1` as fractions in [0, 1].
    """
    model, info = load_model(model_dir)
    spec = tasks.get(info.task)
    if spec.evaluate is None:
        raise ConfigError(f"{model_dir}: task {info.task!r} has no evaluation; evaluate needs "
                          f"one of: {', '.join(n for n in tasks.names() if tasks.get(n).evaluate)}")
    return spec.evaluate(model, load_tokenizer(model_dir), info, data, batch_size)
