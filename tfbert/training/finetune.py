"""Fine-tuning any registered task from any model directory, and its evaluation.

The task (`tfbert.tasks`) supplies the data, model head, loss and metrics;
this module supplies what every task shares: the optimizer and schedule,
checkpoints with exact resume, `history.json`, and writing the model
directory.
"""

from __future__ import annotations

import math
import os
import sys

import keras
import tensorflow as tf

from tfbert import tasks
from tfbert.checkpoints import load_encoder, load_model, save_model
from tfbert.errors import ConfigError
from tfbert.tasks import TaskInfo
from tfbert.text import load_tokenizer
from tfbert.training.callbacks import HistoryFile
from tfbert.training.optimization import create_optimizer
from tfbert.training.resume import TrainingCheckpoint, fit_resumable


def run_finetune(train: str, init: str, output: str, validation: str | None = None,
                 epochs: int = 3, batch_size: int = 32, learning_rate: float = 5e-5,
                 warmup: float = 0.1, max_seq_length: int = 128, pooling: str = "cls",
                 resume: bool = False, seed: int = 0, jit_compile: bool = True,
                 verbose: int | str = "auto", task: str = "classify",
                 checkpoint_every: int | None = None) -> keras.Model:
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
        epochs, batch_size, learning_rate: the usual.
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
        jit_compile: compile the whole train step with XLA.
        task: a registered task name: "classify", "tag" (token tagging,
            history `accuracy` = tag accuracy on words' first pieces), "qa"
            (extractive span QA, history `start_accuracy`/`end_accuracy`), or
            one registered with `tfbert.tasks.register`.

    Returns:
        The trained model.
    """
    spec = tasks.get(task)
    if not spec.finetunable:
        raise ConfigError(f"task {task!r} ({spec.description}) is not trained by finetune; "
                          f"fine-tunable tasks: "
                          f"{', '.join(n for n in tasks.names() if tasks.get(n).finetunable)}")
    keras.utils.set_random_seed(seed)
    tokenizer = load_tokenizer(init, max_seq_length=max_seq_length)
    info = TaskInfo(task=task, max_seq_length=max_seq_length, lowercase=tokenizer.lowercase,
                    pooling=pooling)
    data = spec.read_data(train, validation, tokenizer, info, batch_size, seed)
    model = spec.build_model(load_encoder(init), data.info)
    steps_per_epoch = math.ceil(data.train_size / batch_size)
    total = steps_per_epoch * epochs
    optimizer = create_optimizer("adamw", learning_rate, total, int(warmup * total))
    spec.compile_model(model, optimizer, jit_compile=jit_compile)

    os.makedirs(output, exist_ok=True)
    history = os.path.join(output, "history.json")
    checkpoint = TrainingCheckpoint(
        os.path.join(output, "checkpoints"),
        every_n_steps=checkpoint_every or min(steps_per_epoch, 100),
        run_info={"task": task, "train": os.path.abspath(train), "init": os.path.abspath(init),
                  "epochs": epochs, "batch_size": batch_size, "learning_rate": learning_rate,
                  "max_seq_length": max_seq_length, "seed": seed, "pooling": pooling})
    if resume:
        start = checkpoint.restore(model)
        if start:
            print(f"tfbert finetune: resuming at step {start} of {total}", file=sys.stderr)
    else:
        start = checkpoint.clear()
        if os.path.exists(history):
            os.remove(history)
    # A deterministic stream (seeded shuffle, reshuffled each pass): step k of
    # a resumed run sees the batch that step k of an uninterrupted run saw.
    def stream(step: int) -> tf.data.Dataset:
        return data.train().repeat().skip(step)

    fit_resumable(model, stream, total_steps=total, steps_per_epoch=steps_per_epoch,
                  checkpoint=checkpoint, start_step=start, callbacks=[HistoryFile(history)],
                  verbose=verbose, validation_data=data.validation)
    save_model(model, output, data.info, tokenizer.vocab)
    checkpoint.clear()  # the model directory is the result; optimizer state is not kept
    return model


def evaluate(model_dir: str, data: str, batch_size: int = 32) -> dict:
    """Metrics of a fine-tuned model on a labelled file, as a JSON-able dict.

    What is measured depends on the task (its `evaluate`): classify gives
    `examples`, `loss`, `accuracy`, `macro_f1` and per-label
    `precision`/`recall`/`f1`/`support`; tag gives token `accuracy` and
    entity-level `precision`/`recall`/`f1` (conlleval's BIO chunks), also per
    entity type; qa gives SQuAD `exact_match` and `f1` as fractions in [0, 1].
    """
    model, info = load_model(model_dir)
    spec = tasks.get(info.task)
    if spec.evaluate is None:
        raise ConfigError(f"{model_dir}: task {info.task!r} has no evaluation; evaluate needs "
                          f"one of: {', '.join(n for n in tasks.names() if tasks.get(n).evaluate)}")
    return spec.evaluate(model, load_tokenizer(model_dir), info, data, batch_size)
