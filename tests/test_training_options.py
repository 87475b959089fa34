"""Training options shared by `finetune` and `pretrain`: gradient accumulation,
TensorBoard logs, early stopping / keeping the best epoch, `finetune --strategy`."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import (
    TWO_LOGICAL_CPUS,
    make_tiny_init_dir,
    random_batch,
    tensorboard_scalars,
)

import tfbert
from tfbert.cli import main
from tfbert.errors import ConfigError
from tfbert.training.callbacks import BestEpoch
from tfbert.training.finetune import evaluate, run_finetune
from tfbert.training.optimization import create_optimizer
from tfbert.training.resume import TrainingCheckpoint, fit_resumable

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORDS = {"sports": "goal match team coach striker keeper cup league".split(),
         "tech": "chip laptop kernel server software update phone battery".split()}


def _write_jsonl(path, n, seed=0, flip=False):
    rng = np.random.default_rng(seed)
    with open(path, "w") as f:
        for i in range(n):
            label = "sports" if i % 2 else "tech"
            words = rng.choice(WORDS[label], size=6)
            if flip:
                label = "tech" if label == "sports" else "sports"
            f.write(json.dumps({"text": " ".join(words), "label": label}) + "\n")
    return str(path)


# -- gradient accumulation: the update of the big batch --------------------------------------

def _classifier(tiny_config, optimizer, jit_compile):
    keras.utils.set_random_seed(0)
    encoder = tfbert.build_encoder(tiny_config.replace(hidden_dropout=0.0, attention_dropout=0.0,
                                                       num_layers=1))
    return tfbert.compile_classifier(tfbert.build_classifier(encoder, 3, dropout=0.0),
                                     optimizer, jit_compile=jit_compile)


def test_n_micro_batches_give_the_update_of_one_batch(tiny_config):
    """AdamW, XLA, clipping, a schedule: 3 updates of 4 micro-batches = 3 batches of 8."""
    name, accumulation, jit_compile = "adamw", 4, True
    batch, updates, total = 8, 3, 10
    x = random_batch(tiny_config.vocab_size, batch=batch, seq=12, pad_from=6)
    y = np.arange(batch) % 3
    ds = tf.data.Dataset.from_tensor_slices((x, y))

    def train(accumulation):
        # Peak 1e-2 decaying to 0 over 10 updates; clipping at a norm the
        # gradients exceed, so clipping must see the mean of the micro-batches.
        optimizer = create_optimizer(name, 1e-2, total_steps=total, clipnorm=0.05,
                                     accumulation_steps=accumulation)
        model = _classifier(tiny_config, optimizer, jit_compile)
        model.fit(ds.batch(batch // accumulation).repeat(), steps_per_epoch=updates * accumulation,
                  verbose=0, shuffle=False)
        return model

    reference = train(1)
    untrained = _classifier(tiny_config, "sgd", jit_compile)
    moved = max(np.abs(a - b).max() for a, b in zip(
        reference.get_weights(), untrained.get_weights(), strict=True))
    assert moved > 1e-3  # the updates did something
    model = train(accumulation)
    # Embedding rows included: the batch repeats tokens (see `AdamW`'s docstring).
    for a, b in zip(model.weights, reference.weights, strict=True):
        np.testing.assert_allclose(a.numpy(), b.numpy(), atol=2e-6, err_msg=a.path)
    # The schedule counts updates: 3 of 10 done, linear decay from 1e-2.
    assert int(model.optimizer.iterations) == updates
    np.testing.assert_allclose(float(model.optimizer.learning_rate), 1e-2 * 7 / 10, rtol=1e-6)


def test_a_crash_between_micro_batches_resumes_exactly(tmp_path):
    """Checkpoints fall between updates; the resumed run replays micro-batch k on."""
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(64, 5)).astype("float32"), rng.normal(size=(64, 2)).astype("float32")

    def stream(start_batch):  # micro-batches of 4: an update of 8 is two of them
        return tf.data.Dataset.from_tensor_slices((x, y)).batch(4).repeat().skip(start_batch)

    def model_and_checkpoint(directory):
        keras.utils.set_random_seed(0)
        model = keras.Sequential([keras.Input((5,)), keras.layers.Dense(8, activation="tanh"),
                                  keras.layers.Dense(2)])
        model.compile(create_optimizer("lamb", 1e-2, total_steps=12, accumulation_steps=2),
                      "mse", jit_compile=True)
        return model, TrainingCheckpoint(directory, every_n_steps=1, accumulation_steps=2)

    reference, ckpt = model_and_checkpoint(tmp_path / "whole")
    fit_resumable(reference, stream, total_steps=12, steps_per_epoch=4, checkpoint=ckpt,
                  verbose=0, accumulation_steps=2)

    class Crash(keras.callbacks.Callback):
        micro_batches = 0

        def on_train_batch_end(self, batch, logs=None):
            Crash.micro_batches += 1
            if Crash.micro_batches == 11:  # update 6 is half accumulated
                raise KeyboardInterrupt

    model, ckpt = model_and_checkpoint(tmp_path / "crashed")
    with pytest.raises(KeyboardInterrupt):
        fit_resumable(model, stream, total_steps=12, steps_per_epoch=4, checkpoint=ckpt,
                      callbacks=[Crash()], verbose=0, accumulation_steps=2)
    assert ckpt.latest_step == 5  # the last whole update, not the half one

    model, ckpt = model_and_checkpoint(tmp_path / "crashed")
    start = ckpt.restore(model)
    assert start == 5
    assert fit_resumable(model, stream, total_steps=12, steps_per_epoch=4, checkpoint=ckpt,
                         start_step=start, verbose=0, accumulation_steps=2) == 12
    assert int(model.optimizer.iterations) == 12
    for a, b in zip(model.weights, reference.weights, strict=True):
        np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-6, err_msg=a.path)


@pytest.fixture(scope="module")
def data(tmp_path_factory, minilm_dir):
    root = tmp_path_factory.mktemp("options")
    return {"root": root, "init": make_tiny_init_dir(minilm_dir, str(root / "init")),
            "train": _write_jsonl(root / "train.jsonl", 32),
            # Same texts with the other labels: the better the model learns
            # the training set, the worse it does on this one.
            "flipped": _write_jsonl(root / "flipped.jsonl", 32, flip=True),
            "validation": _write_jsonl(root / "validation.jsonl", 16, seed=1)}


@pytest.fixture
def classify_without_dropout():
    """classify with no dropout in its head: runs that differ only in how the
    batch is split then compute the same function."""
    spec = dataclasses.replace(
        tfbert.tasks.get("classify"), name="classify_without_dropout",
        description="classify, no head dropout (test)",
        build_model=lambda encoder, info: tfbert.build_classifier(
            encoder, len(info.labels), pooling=info.pooling, dropout=0.0))
    tfbert.tasks.register(spec)
    yield spec.name
    tfbert.tasks.unregister(spec.name)


def test_finetune_with_accumulation_matches_the_big_batch_and_logs_to_tensorboard(
        data, classify_without_dropout):
    task = classify_without_dropout
    reference = run_finetune(data["train"], data["init"], str(data["root"] / "big"), epochs=2,
                             batch_size=8, learning_rate=1e-3, max_seq_length=16, seed=3,
                             warmup=0.0, verbose=0, task=task, compile="attention")

    out, logs = data["root"] / "accumulated", data["root"] / "logs"
    assert main(["finetune", "--task", task, "--train", data["train"], "--validation",
                 data["validation"], "--init", data["init"], "--output", str(out),
                 "--epochs", "2", "--batch-size", "8", "--accumulation-steps", "4",
                 "--learning-rate", "1e-3", "--max-seq-length", "16", "--seed", "3",
                 "--warmup", "0", "--compile", "attention", "--tensorboard", str(logs)]) == 0
    # Micro-batches of 2 hold the examples of the batches of 8: same weights.
    model, _ = tfbert.load_model(out)
    for a, b in zip(model.weights, reference.weights, strict=True):
        np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-5, err_msg=a.path)

    history = json.load(open(out / "history.json"))
    assert [(r["epoch"], r["shipped"]) for r in history] == [(1, False), (2, True)]
    scalars = tensorboard_scalars(logs)
    assert {"epoch_loss", "epoch_accuracy", "epoch_learning_rate"} <= set(scalars["train"])
    assert {"epoch_loss", "epoch_accuracy"} <= set(scalars["validation"])
    np.testing.assert_allclose(scalars["train"]["epoch_loss"], [r["loss"] for r in history],
                               rtol=1e-5)
    np.testing.assert_allclose(scalars["validation"]["epoch_loss"],
                               [r["val_loss"] for r in history], rtol=1e-5)
    # 4 updates per epoch, 8 in all, linear decay from 1e-3 without warmup:
    # the schedule advanced per update, not per micro-batch.
    np.testing.assert_allclose(scalars["train"]["epoch_learning_rate"], [5e-4, 0.0],
                               atol=1e-9)


def test_early_stopping_ships_the_best_epoch(data):
    out = data["root"] / "early"
    # Mean pooling learns this task within an epoch or two (so the flipped
    # validation gets worse from then on).
    run_finetune(data["train"], data["init"], str(out), validation=data["flipped"], epochs=8,
                 batch_size=8, learning_rate=1e-2, max_seq_length=16, seed=0, verbose=0,
                 early_stopping=2, monitor="val_loss", compile="attention", pooling="mean")
    history = json.load(open(out / "history.json"))
    losses = [r["val_loss"] for r in history]
    best = int(np.argmin(losses))
    assert len(history) == best + 3 < 8  # stopped two epochs after the best one
    assert [r["shipped"] for r in history] == [i == best for i in range(len(history))]
    assert losses[-1] > losses[best]
    shipped = evaluate(str(out), data["flipped"])  # the output holds the best epoch's model
    np.testing.assert_allclose(shipped["loss"], losses[best], rtol=1e-4)
    assert shipped["accuracy"] == pytest.approx(history[best]["val_accuracy"])
    assert not (out / "checkpoints").exists()


def test_early_stopping_survives_a_crash(tmp_path):
    """The patience count and the best weights outlive the process (kept on disk)."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 4)).astype("float32")
    y = x @ rng.normal(size=(4, 1)).astype("float32")
    validation = (x, -y)  # learning the training targets makes these worse every epoch

    def run(directory, crash_after_epoch=None):
        keras.utils.set_random_seed(0)
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
        model.compile(create_optimizer("adamw", 0.05, total_steps=40), "mse")
        checkpoint = TrainingCheckpoint(directory, every_n_steps=4)
        start = checkpoint.restore(model)
        best = BestEpoch(directory, "val_loss", patience=2)
        best.resume(completed_epochs=start // 4)

        class Crash(keras.callbacks.Callback):
            def on_epoch_end(self, epoch, logs=None):
                if epoch + 1 == crash_after_epoch:
                    raise KeyboardInterrupt

        fit_resumable(model, lambda k: tf.data.Dataset.from_tensor_slices((x, y)).batch(8)
                      .repeat().skip(k), total_steps=40, steps_per_epoch=4,
                      checkpoint=checkpoint, start_step=start, callbacks=[best, Crash()],
                      verbose=0, validation_data=tf.data.Dataset.from_tensor_slices(
                          validation).batch(32))
        return model, best, best.restore_best(model)

    whole, best, shipped = run(tmp_path / "whole")
    assert (shipped, sorted(best.values)) == (1, [1, 2, 3])  # stopped 2 epochs after epoch 1
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "crashed", crash_after_epoch=2)
    resumed, best, shipped = run(tmp_path / "crashed")
    assert (shipped, sorted(best.values)) == (1, [1, 2, 3])  # not 2 more epochs from the restart
    for a, b in zip(resumed.weights, whole.weights, strict=True):
        np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-6)
    assert whole.evaluate(*validation, verbose=0) == pytest.approx(best.values[1], rel=1e-5)


def test_a_monitor_the_run_never_logs_is_refused_naming_the_ones_it_has(tmp_path):
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")])
    x, y = np.ones((4, 3), "float32"), np.array([0, 1, 0, 1])
    with pytest.raises(ConfigError, match=r"monitor 'val_f1' is not a value of this run; after "
                                          r"epoch 1 it has: accuracy, loss, val_accuracy, "
                                          r"val_loss"):
        model.fit(x, y, validation_data=(x, y), epochs=3, verbose=0,
                  callbacks=[BestEpoch(tmp_path, "val_f1")])


def test_bad_combinations_are_one_line_errors(data, capsys):
    base = ["finetune", "--train", data["train"], "--init", data["init"], "--output",
            str(data["root"] / "never")]
    for extra, message in [
            (["--early-stopping", "2"], "--early-stopping watches --monitor val_loss, a "
                                        "validation value: give --validation FILE"),
            (["--batch-size", "10", "--accumulation-steps", "4"],
             "--batch-size 10 is not divisible by --accumulation-steps 4"),
            (["--accumulation-steps", "2", "--strategy", "mirrored"],
             "--accumulation-steps 2 does not work with --strategy mirrored")]:
        assert main(base + extra) == 2
        assert message in capsys.readouterr().err
    with pytest.raises(ConfigError, match="not divisible by accumulation_steps 3"):
        run_finetune(data["train"], data["init"], str(data["root"] / "never"), batch_size=8,
                     accumulation_steps=3)


def test_mirrored_finetune_on_two_logical_cpus(data):
    out = str(data["root"] / "mirrored")
    script = TWO_LOGICAL_CPUS + textwrap.dedent(f"""
        from tfbert.errors import ConfigError
        from tfbert.training.finetune import run_finetune
        try:
            run_finetune({data["train"]!r}, {data["init"]!r}, {out!r}, strategy="mirrored",
                         accumulation_steps=2)
        except ConfigError as e:
            refused = str(e)
        model = run_finetune({data["train"]!r}, {data["init"]!r}, {out!r},
                             validation={data["validation"]!r}, strategy="mirrored", epochs=2,
                             batch_size=8, learning_rate=1e-2, max_seq_length=16, verbose=0,
                             pooling="mean")
        print(json.dumps({{"replicas": model.distribute_strategy.num_replicas_in_sync,
                          "steps": int(model.optimizer.iterations.numpy()),
                          "refused": refused}}))
    """)
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True,
                            text=True, timeout=300,
                            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["replicas"] == 2 and report["steps"] == 8
    assert "does not work under a distribution strategy" in report["refused"]
    history = json.load(open(os.path.join(out, "history.json")))
    assert [r["epoch"] for r in history] == [1, 2]
    assert history[-1]["loss"] < history[0]["loss"] - 0.1
    assert history[-1]["val_accuracy"] == 1.0  # learnt the task; chance is 0.5
    metrics = evaluate(out, data["validation"])
    assert metrics["accuracy"] == pytest.approx(history[-1]["val_accuracy"])
