"""Crash-safe training: checkpoints every N steps and exact resumption.

Why not `keras.callbacks.BackupAndRestore` (keras 3.15): with an integer
`save_freq` it saves mid-epoch, but on restore it only sets the initial
*epoch*: `fit` starts that epoch again from its first batch (the saved
"batch" is written and never read), so the steps since the epoch began are
run twice and the run ends later than an uninterrupted one. It also writes
`latest.weights.h5` in place (a SIGKILL during the write leaves a truncated
file), and `save_weights` holds model variables only, not the optimizer's
moments and step counter. So this module keeps a `tf.train.Checkpoint` of

- every model variable (dropout RNG state included),
- every optimizer variable (moments, `iterations` for the LR schedule, the
  loss scale under fp16),
- the global step, which is also the data position,

managed by `tf.train.CheckpointManager` (keep the last 2). A save writes the
new files first and then atomically replaces the small `checkpoint` state
file that names the latest one, so a kill at any moment leaves the previous
checkpoint intact and named.

Data position: the input must be a deterministic stream of batches (same
seed -> same batches), so "where the data was" is just the step: a resumed
run asks for the stream from batch `step` on (`dataset.skip`, see
`tfbert.data.pretraining.pretraining_dataset(start_batch=...)`), and gets the
batches — masks included — the uninterrupted run would have seen. Re-seeding
per epoch instead would be cheaper to restart on huge streams but would not
replay the same data.

`fit_resumable` then runs `model.fit` from that step to the total, split so
that epochs keep their boundaries: an interrupted epoch is finished by a
short `fit` call, later ones run whole. The run ends at exactly `total_steps`
optimizer steps, whatever the interruptions, losing at most the steps since
the last checkpoint.

Gradient accumulation (`accumulation_steps=N`, Keras'
`gradient_accumulation_steps`): a `fit` step is then one micro-batch and an
optimizer step (an update) is N of them. Steps, `steps_per_epoch`,
`every_n_steps` and the checkpoint's step all count updates; the stream is of
micro-batches, asked for from micro-batch `step * N` on. A checkpoint is only
ever taken after the last micro-batch of an update, when Keras has applied
and zeroed the accumulated gradients. The accumulators are saved with the
optimizer's variables all the same: under fp16 loss scaling, a micro-batch
whose gradients overflow is skipped by Keras, which shifts its count against
the data's, and a checkpoint may then hold a partial sum -- restored with
the rest, so the resumed run is still the uninterrupted one.

Example:

    ckpt = TrainingCheckpoint("out/checkpoints", every_n_steps=500,
                              run_info={"seed": 0, "batch_size": 32})
    start = ckpt.restore(model) if resume else ckpt.clear()
    fit_resumable(model, lambda step: make_dataset(start_batch=step), total_steps=10_000,
                  steps_per_epoch=1000, checkpoint=ckpt, start_step=start)
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Sequence

import keras
import tensorflow as tf

from tfbert.errors import CheckpointError, ConfigError
from tfbert.files import write_json_atomically

RUN_INFO_FILE = "run.json"


class ResumeError(CheckpointError):
    """A checkpoint directory cannot be resumed with the current settings."""


class TrainingCheckpoint(keras.callbacks.Callback):
    """Save model + optimizer state + step every `every_n_steps` optimizer steps.

    Args:
        directory: where checkpoints go (created; reserved for this callback).
        every_n_steps: checkpoint interval in optimizer steps.
        max_to_keep: checkpoints kept (older ones are deleted).
        run_info: JSON-able settings that a resumed run must share with the
            original one (seed, batch size, total steps...). Stored beside the
            checkpoints; `restore` refuses a mismatch, naming the field.
        is_chief: False on non-chief workers of a multi-worker run: they take
            part in every save (collectives need them) but write to a
            throw-away directory.
        accumulation_steps: micro-batches (`fit` steps) per optimizer step;
            checkpoints fall only between optimizer steps.

    Example:

        ckpt = TrainingCheckpoint("/tmp/run/checkpoints", every_n_steps=100)
        model.fit(ds, steps_per_epoch=1000, callbacks=[ckpt])
    """

    def __init__(self, directory: str | os.PathLike, every_n_steps: int, max_to_keep: int = 2,
                 run_info: dict | None = None, is_chief: bool = True,
                 accumulation_steps: int = 1):
        super().__init__()
        if every_n_steps < 1:
            raise ConfigError(f"every_n_steps must be >= 1, got {every_n_steps}")
        if accumulation_steps < 1:
            raise ConfigError(f"accumulation_steps must be >= 1, got {accumulation_steps}")
        self.accumulation_steps = int(accumulation_steps)
        self._micro_batches = 0  # fit steps since `step` was last set: N per update
        self.directory = os.fspath(directory)
        self.every_n_steps = int(every_n_steps)
        self.max_to_keep = int(max_to_keep)
        self.run_info = dict(run_info or {})
        self.is_chief = is_chief
        self.step = 0
        self._checkpoint: tf.train.Checkpoint | None = None
        self._writer: tf.train.CheckpointManager | None = None
        self._step_variable: tf.Variable | None = None
        self._last_saved = -1

    # -- public -------------------------------------------------------------

    def restore(self, model: keras.Model) -> int:
        """Load the latest checkpoint into `model` (and its optimizer); returns its step.

        Returns 0 and changes nothing when there is no checkpoint. If the
        latest checkpoint cannot be read, the one before it is tried.

        Raises:
            ResumeError: the stored `run_info` differs from this run's.
        """
        self.check_run_info()
        checkpoint = self._get_checkpoint(model)
        # Every worker reads the chief's directory; only the chief writes there.
        paths = tf.train.CheckpointManager(checkpoint, self.directory, self.max_to_keep,
                                           checkpoint_name="ckpt").checkpoints
        for i, path in enumerate(reversed(paths)):
            try:
                checkpoint.restore(path).assert_existing_objects_matched()
            except (tf.errors.OpError, AssertionError, ValueError) as e:
                if i == len(paths) - 1:
                    raise ResumeError(f"{path}: cannot restore checkpoint: {e}") from None
                continue
            self.step = self._last_saved = int(self._step_variable.numpy())
            return self.step
        return 0

    def clear(self) -> int:
        """Delete earlier checkpoints (a fresh run); returns step 0."""
        if os.path.isdir(self.directory) and self.is_chief:
            shutil.rmtree(self.directory)
        self._writer = None
        self.step = 0
        self._last_saved = -1
        return 0

    def save(self) -> str | None:
        """Checkpoint now (at `self.step`), unless this step is already saved."""
        if self.step == self._last_saved:
            return None
        if self._writer is None:
            directory = self.directory if self.is_chief else _scratch_directory(self.directory)
            self._writer = tf.train.CheckpointManager(
                self._get_checkpoint(self.model), directory, self.max_to_keep,
                checkpoint_name="ckpt")
        self._write_run_info()
        self._step_variable.assign(self.step)
        path = self._writer.save(checkpoint_number=self.step)
        self._last_saved = self.step
        return path

    @property
    def latest_step(self) -> int | None:
        """Step of the newest checkpoint on disk, without loading it (None if none)."""
        state = tf.train.get_checkpoint_state(self.directory)
        if state is None or not state.model_checkpoint_path:
            return None
        return int(state.model_checkpoint_path.rsplit("-", 1)[-1])

    # -- keras callback -----------------------------------------------------

    def on_train_batch_end(self, batch, logs=None):
        self._micro_batches += 1
        if self._micro_batches % self.accumulation_steps:
            return  # between the micro-batches of one update: never checkpoint here
        self.step += 1
        if self.step % self.every_n_steps == 0:
            self.save()

    # -- internals ----------------------------------------------------------

    def _get_checkpoint(self, model: keras.Model) -> tf.train.Checkpoint:
        if self._checkpoint is not None:
            return self._checkpoint
        optimizer = model.optimizer
        if optimizer is None:
            raise ValueError("compile the model before checkpointing it")
        if not optimizer.built:  # its variables must exist to be restored into
            optimizer.build(model.trainable_variables)
        self._step_variable = tf.Variable(0, dtype=tf.int64, trainable=False, name="global_step")
        self._checkpoint = tf.train.Checkpoint(
            model_variables=list(model.variables),
            optimizer_variables=list(optimizer.variables),
            global_step=self._step_variable,
        )
        return self._checkpoint

    def _run_info_path(self) -> str:
        return os.path.join(self.directory, RUN_INFO_FILE)

    def check_run_info(self) -> None:
        """Refuse to resume with settings other than the stored ones (cheap: no model needed).

        Raises:
            ResumeError: naming the first field that differs.
        """
        path = self._run_info_path()
        if not os.path.exists(path):
            return
        with open(path, encoding="utf-8") as f:
            stored = json.load(f)
        for key, value in self.run_info.items():
            if key in stored and stored[key] != _jsonable(value):
                raise ResumeError(
                    f"{path}: cannot resume: {key} was {stored[key]!r}, now {value!r} "
                    "(use the original settings, or start without --resume)")

    def _write_run_info(self) -> None:
        if not self.is_chief:
            return
        path = self._run_info_path()
        if os.path.exists(path):
            return
        write_json_atomically(path, {k: _jsonable(v) for k, v in self.run_info.items()})


def fit_resumable(model: keras.Model, make_dataset: Callable[[int], tf.data.Dataset],
                  total_steps: int, steps_per_epoch: int,
                  checkpoint: TrainingCheckpoint | None = None, start_step: int = 0,
                  callbacks: Sequence[keras.callbacks.Callback] = (),
                  verbose: str | int = "auto",
                  validation_data: tf.data.Dataset | None = None,
                  accumulation_steps: int = 1) -> int:
    """`model.fit` from `start_step` to `total_steps`, keeping epoch boundaries.

    Args:
        model: a compiled model (its optimizer state restored if resuming).
        make_dataset: `start_batch -> dataset` giving the deterministic stream
            of batches from that batch on, repeated (infinite). With
            accumulation the batches are micro-batches and `start_batch` is
            `step * accumulation_steps`.
        total_steps: optimizer steps of the whole run.
        steps_per_epoch: steps between epoch ends (history records, progress bars).
        checkpoint: the `TrainingCheckpoint` to run as a callback; a final
            checkpoint is written at the end, so resuming a finished run
            does nothing.
        start_step: the step restored from the checkpoint (0 for a new run).
        callbacks: other Keras callbacks (e.g. `HistoryFile`).
        verbose: Keras `fit` verbosity (progress bars).
        validation_data: evaluated at the end of every epoch (as in `fit`).
        accumulation_steps: micro-batches per optimizer step; the optimizer's
            `gradient_accumulation_steps` (and `checkpoint`'s) must be the same.
            Steps above count optimizer steps.

    Returns:
        the step reached (`total_steps`).

    Example:

        fit_resumable(model, lambda k: ds.skip(k), total_steps=100,
                      steps_per_epoch=10)  # 100
    """
    if total_steps < 1 or steps_per_epoch < 1:
        raise ValueError("total_steps and steps_per_epoch must be >= 1")
    if not 0 <= start_step <= total_steps:
        raise ResumeError(f"checkpoint is at step {start_step}, past the run's {total_steps} "
                          "steps")
    optimizer = getattr(model.optimizer, "inner_optimizer", model.optimizer)  # fp16: inside
    accumulation = getattr(optimizer, "gradient_accumulation_steps", None) or 1
    if accumulation != accumulation_steps or (
            checkpoint is not None and checkpoint.accumulation_steps != accumulation_steps):
        raise ConfigError(f"accumulation_steps {accumulation_steps} differs from the "
                          f"optimizer's ({accumulation}) or the checkpoint's")
    all_callbacks = list(callbacks) + ([checkpoint] if checkpoint is not None else [])
    if checkpoint is not None:
        checkpoint.set_model(model)
        checkpoint.step = start_step
        checkpoint._micro_batches = 0
    step = start_step
    while step < total_steps:
        epoch, offset = divmod(step, steps_per_epoch)
        if offset == 0 and total_steps - step >= steps_per_epoch:
            epochs = (total_steps - step) // steps_per_epoch  # whole epochs in one call
            steps_this_call = epochs * steps_per_epoch
            fit_steps = steps_per_epoch
        else:  # the rest of an interrupted epoch, or a short last one
            epochs = 1
            steps_this_call = min(steps_per_epoch - offset, total_steps - step)
            fit_steps = steps_this_call
        # shuffle=False: the stream is shuffled (and positioned) already.
        model.fit(make_dataset(step * accumulation_steps), initial_epoch=epoch,
                  epochs=epoch + epochs, steps_per_epoch=fit_steps * accumulation_steps,
                  callbacks=all_callbacks, verbose=verbose,
                  validation_data=validation_data, shuffle=False)
        step += steps_this_call
        if model.stop_training:  # a callback (EarlyStopping, TerminateOnNaN) ended the run
            break
    if checkpoint is not None:
        step = checkpoint.step  # counts the steps actually run
        checkpoint.save()
    return step


def _scratch_directory(directory: str) -> str:
    import tempfile

    return tempfile.mkdtemp(prefix=f"{os.path.basename(directory)}-worker-")


def _jsonable(value):
    return json.loads(json.dumps(value))
