"""The one error tree of tfbert.

Every error a user can cause (a bad flag, file, config, checkpoint, export or
request) is a `TfbertError`; its message is one line that names the file,
line, field or flag at fault. The `tfbert` command prints such an error as
that line and exits 2; any other exception is a bug and keeps its traceback.

The kinds also derive from the built-in exception a Python caller would
expect (`ValueError` for bad input, `RuntimeError` for a refused operation),
so `except ValueError` keeps working around library calls.

Example:

>>> try:
...     raise DataError("train.csv: line 3: no label")
... except TfbertError as e:
...     print(e)
train.csv: line 3: no label
"""

from __future__ import annotations


class TfbertError(Exception):
    """Base of every user-facing tfbert error; `str(error)` is one clear line."""


class ConfigError(TfbertError, ValueError):
    """A configuration (BertConfig, task settings, a serving config file or flag) is invalid."""


class DataError(TfbertError, ValueError):
    """Input data (training files, a corpus, a vocabulary) is missing or malformed."""


class CheckpointError(TfbertError, ValueError):
    """A model directory or training checkpoint is missing files or does not fit."""


class ExportError(TfbertError, RuntimeError):
    """An export was refused; nothing was left under the base path."""


class ServingError(TfbertError, RuntimeError):
    """A served request failed, or a server could not be reached or started."""


__all__ = ["CheckpointError", "ConfigError", "DataError", "ExportError", "ServingError",
           "TfbertError"]
