"""Keras callbacks that tfbert adds to `model.fit`."""

from __future__ import annotations

import json
import math
import os

import keras

from tfbert.errors import ConfigError
from tfbert.files import write_json_atomically


class HistoryFile(keras.callbacks.Callback):
    """Write per-epoch metrics to a JSON file after every epoch.

    The file is a list of `{"epoch": n, "loss": ..., ...}` records, replaced
    atomically so a crash never leaves it half-written. Records already in the
    file from earlier epochs (a resumed run) are kept.

    Args:
        path: the JSON file, e.g. `DIR/history.json`.
    """

    def __init__(self, path: str | os.PathLike):
        super().__init__()
        self.path = os.fspath(path)

    def on_epoch_end(self, epoch, logs=None):
        records = [r for r in read_history(self.path) if r.get("epoch", -1) < epoch + 1]
        record = {"epoch": epoch + 1}
        for key, value in (logs or {}).items():
            value = float(value)
            record[key] = value if math.isfinite(value) else None
        records.append(record)
        write_json_atomically(self.path, records)


def read_history(path: str | os.PathLike) -> list[dict]:
    """The records of a `history.json` ([] if there is none yet)."""
    if not os.path.exists(path):
        return []
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def mark_shipped(path: str | os.PathLike, epoch: int | None) -> None:
    """Mark in `history.json` which epoch's weights the model directory holds.

    Every record gets `"shipped": true` (that epoch) or `false` (the others);
    the file stays a list of epoch records.
    """
    records = read_history(path)
    for record in records:
        record["shipped"] = record.get("epoch") == epoch
    write_json_atomically(path, records)


def tensorboard_callback(log_dir: str | os.PathLike) -> keras.callbacks.Callback:
    """Keras' `TensorBoard` callback writing every epoch's scalars to `log_dir`.

    `log_dir/train/` gets `epoch_loss`, the metrics and `epoch_learning_rate`
    (Keras adds the optimizer's current learning rate, after the epoch's last
    update); `log_dir/validation/` gets the validation values. Per epoch only
    (no per-batch summaries, no graph): cheap for long runs.

    Raises:
        ConfigError: the `tensorboard` package (whose summary ops TensorFlow
            uses) is not installed.
    """
    import importlib.util

    if importlib.util.find_spec("tensorboard") is None:
        raise ConfigError("--tensorboard needs the tensorboard package: "
                          "pip install tensorboard==2.21.0")
    return keras.callbacks.TensorBoard(os.fspath(log_dir), write_graph=False)


class BestEpoch(keras.callbacks.Callback):
    """Keep the best epoch's weights by a monitored value; optionally stop early.

    After every epoch the monitored value (a key of the epoch logs such as
    `val_loss` or `val_accuracy`) is recorded; when it is the best so far
    (lowest for names ending in "loss", else highest; strictly better, so
    the earliest of equal epochs wins), the weights are written to
    `DIR/best.weights.h5`. With `patience`, training stops once that many
    epochs in a row were not better.

    Unlike `keras.callbacks.EarlyStopping` (whose state is reset by every
    `fit` call and whose best weights live in memory only), the state is kept
    on disk (`DIR/best.json`: every epoch's value and which epoch the weights
    file holds), so a run resumed after a crash (`resume`) keeps its patience
    count and its best weights.

    Args:
        directory: where `best.weights.h5` and `best.json` go.
        monitor: the log key to watch.
        patience: epochs without improvement before stopping; None never stops.
        is_chief: False on non-chief workers: they decide as the chief does but
            write nothing.

    Raises (during `fit`):
        ConfigError: `monitor` is not among the epoch's logs (naming the keys
            that are).

    Example:

        best = BestEpoch("out/checkpoints", "val_accuracy", patience=2)
        model.fit(train, validation_data=val, epochs=20, callbacks=[best])
        best.restore_best(model)  # the weights of epoch `best.best_epoch`
    """

    WEIGHTS = "best.weights.h5"
    STATE = "best.json"

    def __init__(self, directory: str | os.PathLike, monitor: str = "val_loss",
                 patience: int | None = None, is_chief: bool = True):
        super().__init__()
        if patience is not None and patience < 1:
            raise ConfigError(f"patience must be >= 1, got {patience}")
        self.directory = os.fspath(directory)
        self.monitor = monitor
        self.mode = monitor_mode(monitor)
        self.patience = patience
        self.is_chief = is_chief
        self.values: dict[int, float] = {}  # epoch (1-based) -> monitored value
        self.weights_epoch: int | None = None

    @property
    def best_epoch(self) -> int | None:
        """The best epoch so far (1-based), None before the first finite value."""
        best = None
        for epoch in sorted(self.values):
            value = self.values[epoch]
            if not math.isfinite(value):
                continue
            if best is None or (value < self.values[best] if self.mode == "min"
                                else value > self.values[best]):
                best = epoch
        return best

    def resume(self, completed_epochs: int) -> None:
        """Take up the state of an interrupted run that had finished `completed_epochs`.

        Epochs after those will run again (and be recorded again).
        """
        path = os.path.join(self.directory, self.STATE)
        if not os.path.exists(path):
            return
        with open(path, encoding="utf-8") as f:
            state = json.load(f)
        if state.get("monitor") != self.monitor:
            return  # another monitor: start tracking afresh
        self.values = {int(e): math.nan if v is None else float(v)
                       for e, v in state["values"].items() if int(e) <= completed_epochs}
        self.weights_epoch = state.get("weights_epoch")

    def restore_best(self, model: keras.Model) -> int | None:
        """Load the best epoch's weights into `model` if they are on disk; returns that epoch."""
        path = os.path.join(self.directory, self.WEIGHTS)
        if self.weights_epoch is None or not os.path.exists(path):
            return None
        model.load_weights(path)
        return self.weights_epoch

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if self.monitor not in logs:
            raise ConfigError(f"monitor {self.monitor!r} is not a value of this run; after "
                              f"epoch {epoch + 1} it has: {', '.join(sorted(logs))}")
        self.values[epoch + 1] = float(logs[self.monitor])
        best = self.best_epoch
        if self.is_chief:
            os.makedirs(self.directory, exist_ok=True)
            if best == epoch + 1:
                # Write beside, then rename: a kill never leaves a torn weights file.
                partial = os.path.join(self.directory, "best.partial.weights.h5")
                self.model.save_weights(partial)
                os.replace(partial, os.path.join(self.directory, self.WEIGHTS))
                self.weights_epoch = best
            write_json_atomically(os.path.join(self.directory, self.STATE),
                                  {"monitor": self.monitor, "weights_epoch": self.weights_epoch,
                                   "values": {str(e): v if math.isfinite(v) else None
                                              for e, v in self.values.items()}})
        elif best == epoch + 1:
            self.weights_epoch = best
        if self.patience is not None and epoch + 1 - (best or 0) >= self.patience:
            self.model.stop_training = True


def monitor_mode(monitor: str) -> str:
    """"min" for a monitored name ending in "loss", else "max".

    >>> monitor_mode("val_loss"), monitor_mode("val_accuracy")
    ('min', 'max')
    """
    return "min" if monitor.endswith("loss") else "max"
