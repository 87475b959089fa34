"""tfbert: BERT in TensorFlow/Keras, exported as SavedModels with tokenization inside.

Names are imported on first use, so `import tfbert` (and the `tfbert` command's
`--help`) does not pay for importing TensorFlow.

Example:

>>> import tfbert
>>> cfg = tfbert.BertConfig.from_preset("tiny", vocab_size=1000)
>>> encoder = tfbert.build_encoder(cfg)
>>> classifier = tfbert.build_classifier(encoder, num_classes=3)
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "BertConfig": "tfbert.config",
    "TfbertError": "tfbert.errors",
    "ConfigError": "tfbert.errors",
    "DataError": "tfbert.errors",
    "CheckpointError": "tfbert.errors",
    "ExportError": "tfbert.errors",
    "ServingError": "tfbert.errors",
    "build_encoder": "tfbert.models",
    "build_classifier": "tfbert.models",
    "build_pretrainer": "tfbert.models",
    "build_tagger": "tfbert.models",
    "build_span_qa": "tfbert.models",
    "compile_classifier": "tfbert.models",
    "compile_pretrainer": "tfbert.models",
    "compile_tagger": "tfbert.models",
    "compile_span_qa": "tfbert.models",
    "load_encoder": "tfbert.checkpoints",
    "load_model": "tfbert.checkpoints",
    "save_model": "tfbert.checkpoints",
    "load_tokenizer": "tfbert.text",
    "BertTokenizer": "tfbert.text",
    "export_model": "tfbert.export",
    "check_saved_model": "tfbert.export",
}

__all__ = ["__version__", *sorted(_EXPORTS)]


_SUBPACKAGES = {"checkpoints", "cli", "config", "data", "demo", "errors", "export", "files",
                "layers", "models", "saved_model", "serving", "tasks", "text", "training"}


def __getattr__(name: str) -> Any:
    if name in _SUBPACKAGES:  # `tfbert.export.export_model(...)` without an import
        return importlib.import_module(f"tfbert.{name}")
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'tfbert' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
