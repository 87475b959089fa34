"""Keras callbacks that tfbert adds to `model.fit`."""

from __future__ import annotations

import json
import math
import os

import keras

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

    def _read(self) -> list[dict]:
        if not os.path.exists(self.path):
            return []
        with open(self.path, encoding="utf-8") as f:
            return json.load(f)

    def on_epoch_end(self, epoch, logs=None):
        records = [r for r in self._read() if r.get("epoch", -1) < epoch + 1]
        record = {"epoch": epoch + 1}
        for key, value in (logs or {}).items():
            value = float(value)
            record[key] = value if math.isfinite(value) else None
        records.append(record)
        write_json_atomically(self.path, records)
