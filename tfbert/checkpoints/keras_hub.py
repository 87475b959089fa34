"""keras-hub preset directories: a `keras_hub.models.BertBackbone`, read and written.

A preset is what keras-hub's `save_to_preset` writes for a BertBackbone (and
its `BertTokenizer`, saved to the same directory; `BertTextClassifier` and the
other BERT tasks write the same files plus their own `task.json`):

- `config.json`: `{"registered_name": "keras_hub>BertBackbone", "config":
  {vocabulary_size, num_layers, num_heads, hidden_dim, intermediate_dim,
  dropout, max_sequence_length, num_segments, ...}, ...}`;
- `model.weights.h5` (or sharded `model.weights.json` + shards);
- `tokenizer.json` (`{"registered_name": "keras_hub>BertTokenizer", "config":
  {"lowercase": ..., ...}}`) and `assets/tokenizer/vocabulary.txt`;
- `metadata.json`.

tfbert reads the encoder from it (a task head in `task.weights.h5` is not
read: the preset loads as the "encoder" task); `tfbert.load_tokenizer` reads
the tokenizer (`tfbert.text.loading`).

What keras-hub 0.32's `BertBackbone.__init__` fixes rather than configures
(keras_hub/src/models/bert/bert_backbone.py): every LayerNormalization has
`epsilon=1e-12` (the embeddings' and each `TransformerEncoder`'s
`layer_norm_epsilon`), the feed-forward activation is keras-hub's
`gelu_approximate` (`keras.activations.gelu(x, approximate=True)`, tanh),
and one `dropout` rate serves both the hidden and the attention dropout.
So a preset reads as a `BertConfig` with `hidden_act="gelu_approximate"` and
`layer_norm_eps=1e-12`, and only encoders with those two settings can be
written as one.

Weights are read by loading keras-hub's own backbone (`BertBackbone.from_preset`)
and taking its variables by path (`names.KERAS_HUB_ENCODER_NAMES`). Reading
`model.weights.h5` directly would mean relying on Keras's internal h5 layout,
whose keys are object-tracking names (`layers/transformer_encoder_1/
_self_attention_layer/query_dense/vars/0`, `layers/layer_normalization` for
the embeddings' layer norm), not the layer names; `from_preset` also handles
sharded weights and checks every shape against the config.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Sequence
from typing import Any

import keras
import numpy as np

from tfbert.checkpoints import names
from tfbert.config import BertConfig
from tfbert.errors import CheckpointError, ConfigError
from tfbert.models import encoder_config, get_encoder
from tfbert.text import BertTokenizer, load_tokenizer
from tfbert.text.vocab import infer_lowercase

BACKBONE_NAME = "keras_hub>BertBackbone"
# Fixed in keras-hub's BertBackbone (no constructor argument); see the module docstring.
KERAS_HUB_LAYER_NORM_EPS = 1e-12
KERAS_HUB_ACTIVATION = "gelu_approximate"
WEIGHTS_FILES = ("model.weights.h5", "model.weights.json")

_CONFIG_FIELDS = {  # keras-hub BertBackbone argument -> BertConfig field
    "vocabulary_size": "vocab_size",
    "num_layers": "num_layers",
    "num_heads": "num_heads",
    "hidden_dim": "hidden_size",
    "intermediate_dim": "intermediate_size",
    "max_sequence_length": "max_position_embeddings",
    "num_segments": "type_vocab_size",
}


def is_keras_hub_config(data: dict[str, Any]) -> bool:
    """Whether a parsed `config.json` is a serialized keras-hub object (any model)."""
    name = data.get("registered_name")
    return isinstance(name, str) and name.startswith("keras_hub>")


def read_keras_hub_config(path: str | os.PathLike) -> BertConfig:
    """The `BertConfig` of a keras-hub BertBackbone preset directory.

    Raises:
        CheckpointError: `config.json` is not a BertBackbone's, or lacks a size.
    """
    config_json = os.path.join(os.fspath(path), "config.json")
    try:
        with open(config_json, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{config_json}: cannot read: {e}") from None
    name = data.get("registered_name")
    if name != BACKBONE_NAME:
        raise CheckpointError(f"{config_json}: a keras-hub {str(name).partition('>')[2] or name}"
                              f" preset; tfbert reads only {BACKBONE_NAME.partition('>')[2]}")
    config = data.get("config")
    if not isinstance(config, dict):
        raise CheckpointError(f"{config_json}: no \"config\" object")
    fields = {}
    for key, field in _CONFIG_FIELDS.items():
        value = config.get(key)
        if isinstance(value, bool) or not isinstance(value, int):
            raise CheckpointError(f"{config_json}: config.{key} must be an integer, got {value!r}")
        fields[field] = value
    dropout = config.get("dropout", 0.1)
    try:
        return BertConfig(**fields, hidden_dropout=float(dropout),
                          attention_dropout=float(dropout), hidden_act=KERAS_HUB_ACTIVATION,
                          layer_norm_eps=KERAS_HUB_LAYER_NORM_EPS, initializer_range=0.02)
    except (ConfigError, TypeError, ValueError) as e:
        raise CheckpointError(f"{config_json}: {e}") from None


def keras_hub_values(path: str | os.PathLike, config: BertConfig) -> dict[str, np.ndarray]:
    """The encoder weights of a preset, by tfbert variable path (for `assign_weights`)."""
    path = os.fspath(path)
    if not any(os.path.exists(os.path.join(path, f)) for f in WEIGHTS_FILES):
        raise CheckpointError(f"{path}: no {WEIGHTS_FILES[0]} (keras-hub preset weights)")
    import keras_hub

    try:
        backbone = keras_hub.models.BertBackbone.from_preset(path)
    except (OSError, ValueError, KeyError) as e:
        first_line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"{path}: keras-hub cannot load this preset: {first_line}") from None
    variables = {v.path: v for v in backbone.weights}
    values = {}
    for tf_path, hub_path in names.expand(names.KERAS_HUB_ENCODER_NAMES, config.num_layers):
        if hub_path not in variables:
            continue  # reported by assign_weights with the other missing ones
        value = np.asarray(keras.ops.convert_to_numpy(variables[hub_path]), dtype=np.float32)
        shapes = names.keras_hub_shapes(tf_path, config.hidden_size, config.num_heads)
        values[tf_path] = value if shapes is None else value.reshape(shapes[0])
    return values


def check_keras_hub_config(config: BertConfig) -> None:
    """Refuse (ConfigError) a config that keras-hub's BertBackbone cannot represent."""
    if config.hidden_act != KERAS_HUB_ACTIVATION:
        raise ConfigError(
            f"keras-hub's BertBackbone always uses the tanh GELU ({KERAS_HUB_ACTIVATION!r}); "
            f"this encoder uses hidden_act={config.hidden_act!r}")
    if config.layer_norm_eps != KERAS_HUB_LAYER_NORM_EPS:
        raise ConfigError(
            f"keras-hub's BertBackbone always uses layer_norm_eps={KERAS_HUB_LAYER_NORM_EPS}; "
            f"this encoder uses {config.layer_norm_eps}")


def save_keras_hub_preset(model: keras.Model,
                          tokenizer: BertTokenizer | str | os.PathLike | Sequence[str],
                          directory: str | os.PathLike) -> str:
    """Write a tfbert encoder (or a task model's) as a keras-hub BertBackbone preset.

    keras-hub then loads it with `keras_hub.models.BertBackbone.from_preset(directory)`
    and `keras_hub.models.BertTokenizer.from_preset(directory)` (and the BERT
    tasks' `from_preset`), with the same outputs as the tfbert encoder. Only
    the encoder is written (a task head is not). The tokenizer is written to
    tokenize as tfbert's does: accents stripped exactly when lowercasing, and
    the special tokens (`[MASK]`, ...) recognised in the text. keras-hub has a
    single dropout rate: the encoder's `hidden_dropout` is written. Files
    appear whole, `config.json` last.

    Args:
        model: a tfbert encoder or a task model holding one.
        tokenizer: a `tfbert.BertTokenizer`, a vocabulary (list of tokens), or
            the path of a `vocab.txt` or a model directory (as `load_tokenizer`
            reads it). A vocabulary's casing is inferred as `load_tokenizer` does.
        directory: the preset directory; created if needed.

    Returns:
        `directory`.

    Raises:
        ConfigError: the encoder uses the exact "gelu" or a layer-norm epsilon
            other than 1e-12 (keras-hub's BertBackbone has neither setting), or
            the vocabulary does not fit the encoder or keras-hub's BertTokenizer.

    Example:

        save_keras_hub_preset(tfbert.load_encoder("runs/enc"), "runs/enc", "preset")
        backbone = keras_hub.models.BertBackbone.from_preset("preset")
    """
    directory = os.fspath(directory)
    encoder = get_encoder(model)
    config = encoder_config(encoder)
    check_keras_hub_config(config)
    vocab, lowercase = _vocab_and_casing(tokenizer)
    if len(vocab) != config.vocab_size:
        raise ConfigError(f"the vocabulary has {len(vocab)} tokens but the encoder's "
                          f"vocab_size is {config.vocab_size}")
    import keras_hub

    backbone = keras_hub.models.BertBackbone(
        vocabulary_size=config.vocab_size, num_layers=config.num_layers,
        num_heads=config.num_heads, hidden_dim=config.hidden_size,
        intermediate_dim=config.intermediate_size, dropout=config.hidden_dropout,
        max_sequence_length=config.max_position_embeddings,
        num_segments=config.type_vocab_size, dtype="float32")
    ours = names.split_qkv({w.path: keras.ops.convert_to_numpy(w) for w in encoder.weights})
    theirs = {v.path: v for v in backbone.weights}
    for tf_path, hub_path in names.expand(names.KERAS_HUB_ENCODER_NAMES, config.num_layers):
        value = np.asarray(keras.ops.convert_to_numpy(ours[tf_path]), dtype=np.float32)
        shapes = names.keras_hub_shapes(tf_path, config.hidden_size, config.num_heads)
        theirs[hub_path].assign(value if shapes is None else value.reshape(shapes[1]))
    try:
        hub_tokenizer = keras_hub.models.BertTokenizer(
            vocabulary=vocab, lowercase=lowercase, strip_accents=lowercase,
            special_tokens=["[UNK]"], special_tokens_in_strings=True)
    except ValueError as e:
        raise ConfigError(f"keras-hub's BertTokenizer refuses the vocabulary: {e}") from None
    os.makedirs(directory, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=directory, prefix=".tmp-") as tmp:
        backbone.save_to_preset(tmp)
        hub_tokenizer.save_to_preset(tmp)
        written = [os.path.relpath(os.path.join(folder, name), tmp)
                   for folder, _, files in os.walk(tmp) for name in files]
        # config.json last: a reader that sees it finds the other files too.
        for name in sorted(written, key=lambda n: n == "config.json"):
            target = os.path.join(directory, name)
            os.makedirs(os.path.dirname(target), exist_ok=True)
            os.replace(os.path.join(tmp, name), target)
    return directory


def _vocab_and_casing(tokenizer: BertTokenizer | str | os.PathLike | Sequence[str]
                      ) -> tuple[list[str], bool]:
    if isinstance(tokenizer, BertTokenizer):
        return tokenizer.vocab, tokenizer.lowercase
    if isinstance(tokenizer, str | os.PathLike):
        loaded = load_tokenizer(tokenizer)
        return loaded.vocab, loaded.lowercase
    vocab = list(tokenizer)
    return vocab, infer_lowercase(vocab)


__all__ = ["BACKBONE_NAME", "KERAS_HUB_ACTIVATION", "KERAS_HUB_LAYER_NORM_EPS",
           "check_keras_hub_config", "is_keras_hub_config", "keras_hub_values",
           "read_keras_hub_config", "save_keras_hub_preset"]
