"""Reading and writing model directories of the four kinds.

Every command that takes a model directory (`--init`, `--model`) accepts:

- tfbert: `config.json` (`{"bert": BertConfig, "task": ..., "labels": ...,
  "max_seq_length": ..., "lowercase": ...}`), `vocab.txt`, `model.weights.h5`.
- Hugging Face: `config.json` + `model.safetensors` (or `pytorch_model.bin`).
- Google BERT: `bert_config.json` + `bert_model.ckpt.*` (TF1 checkpoint).
- keras-hub: a `BertBackbone` preset (`config.json` with `"registered_name":
  "keras_hub>BertBackbone"`, `model.weights.h5`, `tokenizer.json`,
  `assets/tokenizer/vocabulary.txt`); see `tfbert.checkpoints.keras_hub`.
"""

from __future__ import annotations

import dataclasses
import glob
import json
import os
import tempfile
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from tfbert import tasks
from tfbert.checkpoints import names
from tfbert.checkpoints.keras_hub import (
    is_keras_hub_config,
    keras_hub_values,
    read_keras_hub_config,
)
from tfbert.config import BertConfig
from tfbert.errors import CheckpointError, ConfigError
from tfbert.files import write_json_atomically
from tfbert.models import build_encoder, build_pretrainer, encoder_config, get_encoder
from tfbert.tasks import TaskInfo
from tfbert.text import write_vocab

WEIGHTS_FILE = "model.weights.h5"


def detect_kind(path: str | os.PathLike) -> str:
    """"tfbert", "huggingface", "google" or "keras_hub" for a model directory."""
    path = os.fspath(path)
    if not os.path.isdir(path):
        raise CheckpointError(f"{path}: not a directory")
    config_json = os.path.join(path, "config.json")
    if os.path.exists(config_json):
        with open(config_json, encoding="utf-8") as f:
            try:
                data = json.load(f)
            except json.JSONDecodeError as e:
                raise CheckpointError(f"{config_json}: invalid JSON: {e}") from None
        if isinstance(data, dict) and is_keras_hub_config(data):
            return "keras_hub"
        return "tfbert" if "bert" in data else "huggingface"
    if os.path.exists(os.path.join(path, "bert_config.json")):
        return "google"
    raise CheckpointError(
        f"{path}: no config.json (tfbert, Hugging Face, keras-hub) or bert_config.json "
        "(Google BERT)")


def read_task_info(path: str | os.PathLike) -> TaskInfo:
    """Task metadata of a tfbert directory (an encoder for the other kinds)."""
    path = os.fspath(path)
    if detect_kind(path) != "tfbert":
        return TaskInfo()
    with open(os.path.join(path, "config.json"), encoding="utf-8") as f:
        data = json.load(f)
    fields = {f.name for f in dataclasses.fields(TaskInfo)}
    info = TaskInfo(**{k: v for k, v in data.items() if k in fields})
    try:
        tasks.get(info.task)
    except ConfigError as e:
        raise CheckpointError(f"{path}/config.json: {e}") from None
    return info


def read_bert_config(path: str | os.PathLike) -> BertConfig:
    path = os.fspath(path)
    kind = detect_kind(path)
    if kind == "keras_hub":
        return read_keras_hub_config(path)
    name = "bert_config.json" if kind == "google" else "config.json"
    return BertConfig.from_file(os.path.join(path, name))


def build_task_model(config: BertConfig, info: TaskInfo) -> keras.Model:
    """A freshly initialised model for `info.task` (looked up in `tfbert.tasks`)."""
    spec = tasks.get(info.task)
    if spec.needs_labels and not info.labels:
        raise CheckpointError(f"a {info.task!r} model needs its labels in config.json")
    return spec.build_model(build_encoder(config), info)


def load_model(path: str | os.PathLike, config_overrides: dict[str, Any] | None = None
               ) -> tuple[keras.Model, TaskInfo]:
    """The task model stored in `path` and its metadata.

    tfbert directories give their task model; Hugging Face, Google and
    keras-hub directories give the encoder (task "encoder").
    """
    path = os.fspath(path)
    kind = detect_kind(path)
    config = read_bert_config(path)
    if config_overrides:
        config = config.replace(**config_overrides)
    info = read_task_info(path)
    model = build_task_model(config, info)
    if kind == "tfbert":
        weights = os.path.join(path, WEIGHTS_FILE)
        if not os.path.exists(weights):
            raise CheckpointError(f"{path}: no {WEIGHTS_FILE}")
        _load_weights_file(model, weights)
    elif kind == "huggingface":
        assign_weights(model, _hf_values(path, config))
    elif kind == "keras_hub":
        assign_weights(model, keras_hub_values(path, config))
    else:
        assign_weights(model, _google_values(path, config))
    return model, info


def load_encoder(path: str | os.PathLike, **config_overrides: Any) -> keras.Model:
    """The BERT encoder of any model directory (tfbert, Hugging Face, Google, keras-hub).

    Args:
        path: a tfbert, Hugging Face, Google BERT or keras-hub preset directory.
        **config_overrides: BertConfig fields to change, e.g. `xla_attention=False`
            or dropout rates for fine-tuning.

    Example:

        encoder = load_encoder("path/to/bert-base-uncased")
    """
    model, _ = load_model(path, config_overrides)
    return get_encoder(model)


def load_pretrainer(path: str | os.PathLike, config_overrides: dict[str, Any] | None = None
                    ) -> tuple[keras.Model, TaskInfo, list[str]]:
    """A pretrainer (MLM + NSP heads) that starts from any model directory.

    The encoder is loaded as `load_model` loads it: every encoder weight must
    be there. The heads are optional, each as a whole: the MLM head and the
    NSP head are loaded where the directory has them (a tfbert "pretrain"
    directory; Hugging Face `cls.predictions.*` / `cls.seq_relationship.*`;
    Google `cls/predictions/*` / `cls/seq_relationship/*`, see
    `names.PRETRAINING_HEAD_NAMES`) and otherwise keep their fresh
    initialisation.

    Args:
        path: any directory `load_model` reads: tfbert (of any task),
            Hugging Face, Google BERT (keras-hub presets hold no heads).
        config_overrides: BertConfig fields to change, as for `load_model`.

    Returns:
        `(pretrainer, info, missing)`: the model (as `build_pretrainer`
        makes it), the directory's `TaskInfo`, and the heads ("mlm", "nsp")
        it lacks, which start from scratch.

    Raises:
        CheckpointError: missing or misshapen encoder weights, or a head the
            directory holds only in part or with the wrong shapes.
    """
    path = os.fspath(path)
    model, info = load_model(path, config_overrides)
    pretrainer = build_pretrainer(get_encoder(model))
    kind = detect_kind(path)
    if kind == "huggingface":
        values = _hf_values(path, encoder_config(model))
    elif kind == "google":
        values = _google_values(path, encoder_config(model))
    else:  # the loaded model's own heads, if it has them (a tfbert pretrainer)
        values = {w.path: w.numpy() for w in model.weights}
    variables = {v.path: v for v in pretrainer.weights}
    missing = []
    for head in ("mlm", "nsp"):
        paths = [p for p, _, _ in names.PRETRAINING_HEAD_NAMES if p.startswith(head + "/")]
        found = [p for p in paths if p in values]
        if not found:
            missing.append(head)
            continue
        if len(found) < len(paths):
            raise CheckpointError(f"{path}: incomplete {head.upper()} head: lacks "
                                  f"{sorted(set(paths) - set(found))}")
        for p in paths:
            value, variable = values[p], variables[p]
            if tuple(value.shape) != tuple(variable.shape):
                raise CheckpointError(
                    f"{path}: weight {p}: checkpoint shape {tuple(value.shape)} != model "
                    f"shape {tuple(variable.shape)}")
            variable.assign(keras.ops.cast(value, variable.dtype))
    return pretrainer, info, missing


def save_model(model: keras.Model, directory: str | os.PathLike, info: TaskInfo,
               vocab: list[str]) -> str:
    """Write a tfbert model directory; files appear whole or not at all."""
    directory = os.fspath(directory)
    os.makedirs(directory, exist_ok=True)
    config = encoder_config(model)
    data = {"bert": config.to_dict(), **dataclasses.asdict(info)}
    with tempfile.TemporaryDirectory(dir=directory, prefix=".tmp-") as tmp:
        # Keras names the file itself: written beside, then renamed into place.
        model.save_weights(os.path.join(tmp, WEIGHTS_FILE))
        os.replace(os.path.join(tmp, WEIGHTS_FILE), os.path.join(directory, WEIGHTS_FILE))
    write_vocab(vocab, os.path.join(directory, "vocab.txt"))
    # config.json last: a reader that sees it finds the other files too.
    write_json_atomically(os.path.join(directory, "config.json"), data)
    return directory


def model_values(model: keras.Model) -> dict[str, np.ndarray]:
    """A model's weights as numpy arrays by the tfbert paths of `names` (query, key
    and value apart, as every checkpoint format stores them)."""
    return names.split_qkv({w.path: np.asarray(w.numpy()) for w in model.weights})


def assign_weights(model: keras.Model, values: dict[str, np.ndarray]) -> None:
    """Set model variables from arrays by tfbert path (`names`); every variable
    must be covered. Query, key and value are fused here (`names.fuse_qkv`)."""
    values = names.fuse_qkv(values)
    variables = {v.path: v for v in model.weights}
    missing = sorted(set(variables) - set(values))
    if missing:
        raise CheckpointError(f"checkpoint lacks {len(missing)} weight(s), e.g. {missing[:3]}")
    for path, variable in variables.items():
        value = values[path]
        if tuple(value.shape) != tuple(variable.shape):
            raise CheckpointError(
                f"weight {path}: checkpoint shape {tuple(value.shape)} != model shape "
                f"{tuple(variable.shape)}")
        # Cast by Keras: a bf16 model (`tfbert.precision`) gets float32 values.
        variable.assign(keras.ops.cast(value, variable.dtype))


def _load_weights_file(model: keras.Model, weights: str) -> None:
    """`model.load_weights`, also for files with separate query/key/value layers.

    Model directories written before the attention projections were fused
    hold `attention/{query,key,value}` groups where the model now has one
    `attention/qkv`; such a file is rewritten into a temporary copy with the
    groups merged (`names.fuse_qkv`'s layout) and loaded from there.
    """
    import h5py

    with h5py.File(weights, "r") as f:
        groups = []
        f.visit(lambda name: groups.append(name[: -len("/query")])
                if name.endswith("/attention/query") else None)
    if not groups:
        model.load_weights(weights)
        return
    with tempfile.TemporaryDirectory(prefix="tfbert-weights-") as tmp:
        copy = os.path.join(tmp, WEIGHTS_FILE)
        with h5py.File(weights, "r") as src, h5py.File(copy, "w") as dst:
            for key in src:
                src.copy(src[key], dst, name=key)
            for key, value in src.attrs.items():
                dst.attrs[key] = value
            for group in groups:
                parts = [dst[f"{group}/{p}/vars"] for p in names.QKV]
                fused = dst.create_group(f"{group}/qkv/vars")
                for index in ("0", "1"):  # kernel, bias
                    fused[index] = np.concatenate([np.asarray(p[index]) for p in parts], axis=-1)
                for p in names.QKV:
                    del dst[f"{group}/{p}"]
        model.load_weights(copy)


def _hf_values(path: str, config: BertConfig) -> dict[str, np.ndarray]:
    raw = _read_hf_tensors(path)
    prefix = "bert." if any(k.startswith("bert.") for k in raw) else ""
    values = {}
    rows = names.expand(names.ENCODER_NAMES, config.num_layers)
    for tf_path, hf_name, _ in rows:
        key = _hf_key(raw, prefix + hf_name)
        if key is None:
            continue  # reported by assign_weights with the other missing ones
        value = raw[key]
        values[tf_path] = value.T if names.hf_transposed(tf_path) else value
    for tf_path, hf_name, _ in names.PRETRAINING_HEAD_NAMES:
        if hf_name in raw:
            values[tf_path] = raw[hf_name].T if names.hf_transposed(tf_path) else raw[hf_name]
    return values


def _hf_key(raw: dict[str, np.ndarray], name: str) -> str | None:
    if name in raw:
        return name
    for new, old in names.HF_LEGACY_SUFFIXES.items():
        if name.endswith(new) and name[: -len(new)] + old in raw:
            return name[: -len(new)] + old
    return None


def _read_hf_tensors(path: str) -> dict[str, np.ndarray]:
    safetensors_file = os.path.join(path, "model.safetensors")
    if os.path.exists(safetensors_file):
        from safetensors.numpy import load_file

        return load_file(safetensors_file)
    bin_file = os.path.join(path, "pytorch_model.bin")
    if os.path.exists(bin_file):
        try:
            import torch
        except ImportError:
            raise CheckpointError(
                f"{bin_file}: reading pytorch_model.bin needs torch; convert it to "
                "model.safetensors or install torch") from None
        state = torch.load(bin_file, map_location="cpu", weights_only=True)
        return {k: v.float().numpy() for k, v in state.items()}
    raise CheckpointError(f"{path}: no model.safetensors or pytorch_model.bin")


def _google_values(path: str, config: BertConfig) -> dict[str, np.ndarray]:
    indexes = sorted(glob.glob(os.path.join(path, "*.ckpt*.index")))
    if not indexes:
        raise CheckpointError(f"{path}: no TF1 checkpoint (bert_model.ckpt.index)")
    preferred = [p for p in indexes if os.path.basename(p) == "bert_model.ckpt.index"]
    prefix = (preferred or indexes)[0][: -len(".index")]
    reader = tf.train.load_checkpoint(prefix)
    available = reader.get_variable_to_shape_map()
    values = {}
    rows = names.expand(names.ENCODER_NAMES, config.num_layers) + names.PRETRAINING_HEAD_NAMES
    for tf_path, _, google_name in rows:
        if google_name in available:
            value = reader.get_tensor(google_name)
            values[tf_path] = value.T if names.google_transposed(google_name) else value
    return values

