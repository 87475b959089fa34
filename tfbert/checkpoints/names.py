"""Weight names: tfbert variable path <-> Hugging Face <-> Google BERT (TF1).

Conversion is this table. `{i}` stands for the transformer layer index.
Hugging Face stores `nn.Linear` weights as [out, in] and Keras as [in, out],
so every HF entry whose tfbert path ends in "/kernel" is transposed; Google's
TF1 kernels are already [in, out], except the NSP `output_weights` ([2, H]).

keras-hub presets (`keras_hub.models.BertBackbone`) have a table of their own,
`KERAS_HUB_ENCODER_NAMES`, keyed by the backbone's variable paths; see
`keras_hub_shapes` for the one kind of reshape it needs.

The tables' tfbert paths are those of BERT's parameters, one per checkpoint
tensor. The model itself holds each layer's query, key and value
projections as one fused variable pair (`layer_{i}/attention/qkv/kernel`
`[H, 3H]` and `.../bias` `[3H]`, see `tfbert.layers.SelfAttention`):
`fuse_qkv` and `split_qkv` convert between the two views, so the tables and
every checkpoint format keep BERT's names.
"""

from __future__ import annotations

import re

import numpy as np

ENCODER_NAMES: list[tuple[str, str, str]] = [
    ("embeddings/word_embeddings/embeddings", "embeddings.word_embeddings.weight",
     "bert/embeddings/word_embeddings"),
    ("embeddings/position_embeddings/embeddings", "embeddings.position_embeddings.weight",
     "bert/embeddings/position_embeddings"),
    ("embeddings/token_type_embeddings/embeddings", "embeddings.token_type_embeddings.weight",
     "bert/embeddings/token_type_embeddings"),
    ("embeddings/layer_norm/gamma", "embeddings.LayerNorm.weight",
     "bert/embeddings/LayerNorm/gamma"),
    ("embeddings/layer_norm/beta", "embeddings.LayerNorm.bias",
     "bert/embeddings/LayerNorm/beta"),
    ("layer_{i}/attention/query/kernel", "encoder.layer.{i}.attention.self.query.weight",
     "bert/encoder/layer_{i}/attention/self/query/kernel"),
    ("layer_{i}/attention/query/bias", "encoder.layer.{i}.attention.self.query.bias",
     "bert/encoder/layer_{i}/attention/self/query/bias"),
    ("layer_{i}/attention/key/kernel", "encoder.layer.{i}.attention.self.key.weight",
     "bert/encoder/layer_{i}/attention/self/key/kernel"),
    ("layer_{i}/attention/key/bias", "encoder.layer.{i}.attention.self.key.bias",
     "bert/encoder/layer_{i}/attention/self/key/bias"),
    ("layer_{i}/attention/value/kernel", "encoder.layer.{i}.attention.self.value.weight",
     "bert/encoder/layer_{i}/attention/self/value/kernel"),
    ("layer_{i}/attention/value/bias", "encoder.layer.{i}.attention.self.value.bias",
     "bert/encoder/layer_{i}/attention/self/value/bias"),
    ("layer_{i}/attention/output/kernel", "encoder.layer.{i}.attention.output.dense.weight",
     "bert/encoder/layer_{i}/attention/output/dense/kernel"),
    ("layer_{i}/attention/output/bias", "encoder.layer.{i}.attention.output.dense.bias",
     "bert/encoder/layer_{i}/attention/output/dense/bias"),
    ("layer_{i}/attention_layer_norm/gamma",
     "encoder.layer.{i}.attention.output.LayerNorm.weight",
     "bert/encoder/layer_{i}/attention/output/LayerNorm/gamma"),
    ("layer_{i}/attention_layer_norm/beta", "encoder.layer.{i}.attention.output.LayerNorm.bias",
     "bert/encoder/layer_{i}/attention/output/LayerNorm/beta"),
    ("layer_{i}/intermediate/kernel", "encoder.layer.{i}.intermediate.dense.weight",
     "bert/encoder/layer_{i}/intermediate/dense/kernel"),
    ("layer_{i}/intermediate/bias", "encoder.layer.{i}.intermediate.dense.bias",
     "bert/encoder/layer_{i}/intermediate/dense/bias"),
    ("layer_{i}/output/kernel", "encoder.layer.{i}.output.dense.weight",
     "bert/encoder/layer_{i}/output/dense/kernel"),
    ("layer_{i}/output/bias", "encoder.layer.{i}.output.dense.bias",
     "bert/encoder/layer_{i}/output/dense/bias"),
    ("layer_{i}/output_layer_norm/gamma", "encoder.layer.{i}.output.LayerNorm.weight",
     "bert/encoder/layer_{i}/output/LayerNorm/gamma"),
    ("layer_{i}/output_layer_norm/beta", "encoder.layer.{i}.output.LayerNorm.bias",
     "bert/encoder/layer_{i}/output/LayerNorm/beta"),
    ("pooler/kernel", "pooler.dense.weight", "bert/pooler/dense/kernel"),
    ("pooler/bias", "pooler.dense.bias", "bert/pooler/dense/bias"),
]

PRETRAINING_HEAD_NAMES: list[tuple[str, str, str]] = [
    ("mlm/transform/kernel", "cls.predictions.transform.dense.weight",
     "cls/predictions/transform/dense/kernel"),
    ("mlm/transform/bias", "cls.predictions.transform.dense.bias",
     "cls/predictions/transform/dense/bias"),
    ("mlm/layer_norm/gamma", "cls.predictions.transform.LayerNorm.weight",
     "cls/predictions/transform/LayerNorm/gamma"),
    ("mlm/layer_norm/beta", "cls.predictions.transform.LayerNorm.bias",
     "cls/predictions/transform/LayerNorm/beta"),
    ("mlm/bias", "cls.predictions.bias", "cls/predictions/output_bias"),
    ("nsp/kernel", "cls.seq_relationship.weight", "cls/seq_relationship/output_weights"),
    ("nsp/bias", "cls.seq_relationship.bias", "cls/seq_relationship/output_bias"),
]

# tfbert path <-> `keras_hub.models.BertBackbone` variable path (`variable.path`
# of a built backbone, keras-hub 0.32). keras-hub's embeddings, layer norms and
# feed-forward / pooler Dense layers hold the same arrays as tfbert's. Its
# attention projections are EinsumDense layers: query/key/value kernels
# [H, heads, head_size] with biases [heads, head_size], the output kernel
# [heads, head_size, H]; `keras_hub_shapes` says how they map onto tfbert's Dense.
KERAS_HUB_ENCODER_NAMES: list[tuple[str, str]] = [
    ("embeddings/word_embeddings/embeddings", "token_embedding/embeddings"),
    ("embeddings/position_embeddings/embeddings", "position_embedding/embeddings"),
    ("embeddings/token_type_embeddings/embeddings", "segment_embedding/embeddings"),
    ("embeddings/layer_norm/gamma", "embeddings_layer_norm/gamma"),
    ("embeddings/layer_norm/beta", "embeddings_layer_norm/beta"),
    ("layer_{i}/attention/query/kernel", "transformer_layer_{i}/self_attention_layer/query/kernel"),
    ("layer_{i}/attention/query/bias", "transformer_layer_{i}/self_attention_layer/query/bias"),
    ("layer_{i}/attention/key/kernel", "transformer_layer_{i}/self_attention_layer/key/kernel"),
    ("layer_{i}/attention/key/bias", "transformer_layer_{i}/self_attention_layer/key/bias"),
    ("layer_{i}/attention/value/kernel", "transformer_layer_{i}/self_attention_layer/value/kernel"),
    ("layer_{i}/attention/value/bias", "transformer_layer_{i}/self_attention_layer/value/bias"),
    ("layer_{i}/attention/output/kernel",
     "transformer_layer_{i}/self_attention_layer/attention_output/kernel"),
    ("layer_{i}/attention/output/bias",
     "transformer_layer_{i}/self_attention_layer/attention_output/bias"),
    ("layer_{i}/attention_layer_norm/gamma",
     "transformer_layer_{i}/self_attention_layer_norm/gamma"),
    ("layer_{i}/attention_layer_norm/beta", "transformer_layer_{i}/self_attention_layer_norm/beta"),
    ("layer_{i}/intermediate/kernel",
     "transformer_layer_{i}/feedforward_intermediate_dense/kernel"),
    ("layer_{i}/intermediate/bias", "transformer_layer_{i}/feedforward_intermediate_dense/bias"),
    ("layer_{i}/output/kernel", "transformer_layer_{i}/feedforward_output_dense/kernel"),
    ("layer_{i}/output/bias", "transformer_layer_{i}/feedforward_output_dense/bias"),
    ("layer_{i}/output_layer_norm/gamma", "transformer_layer_{i}/feedforward_layer_norm/gamma"),
    ("layer_{i}/output_layer_norm/beta", "transformer_layer_{i}/feedforward_layer_norm/beta"),
    ("pooler/kernel", "pooled_dense/kernel"),
    ("pooler/bias", "pooled_dense/bias"),
]

GOOGLE_TRANSPOSED = {"cls/seq_relationship/output_weights"}

# Older HF checkpoints (e.g. the original bert-base-uncased pytorch_model.bin)
# name LayerNorm parameters gamma/beta instead of weight/bias.
HF_LEGACY_SUFFIXES = {"LayerNorm.weight": "LayerNorm.gamma", "LayerNorm.bias": "LayerNorm.beta"}


def expand(table: list[tuple[str, str, str]], num_layers: int) -> list[tuple[str, str, str]]:
    """The table with `{i}` rows repeated for every layer index."""
    rows = []
    for row in table:
        if "{i}" in row[0]:
            rows.extend(tuple(name.format(i=i) for name in row) for i in range(num_layers))
        else:
            rows.append(row)
    return rows


QKV = ("query", "key", "value")
_QKV_PATH = re.compile(r"^(.*/attention)/(query|key|value)/(kernel|bias)$")


def fuse_qkv(values: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Table paths -> model paths: each layer's query/key/value weights become `qkv`.

    The fused kernel is `concat([query, key, value], axis=-1)` (`[H, 3H]`),
    the bias likewise (`[3H]`). A layer whose three projections are not all
    present keeps what it has, so that `assign_weights` names them as missing.

    Example:
        >>> v = {f"layer_0/attention/{p}/bias": np.full(2, i) for i, p in enumerate(QKV)}
        >>> fuse_qkv(v)["layer_0/attention/qkv/bias"].tolist()
        [0, 0, 1, 1, 2, 2]
    """
    fused = dict(values)
    for prefix, weight in {(m[1], m[3]) for m in map(_QKV_PATH.match, values) if m}:
        parts = [f"{prefix}/{projection}/{weight}" for projection in QKV]
        if all(p in values for p in parts):
            fused[f"{prefix}/qkv/{weight}"] = np.concatenate([values[p] for p in parts], axis=-1)
            for p in parts:
                del fused[p]
    return fused


def split_qkv(values: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Model paths -> table paths: the inverse of `fuse_qkv`.

    Example:
        >>> split = split_qkv({"layer_0/attention/qkv/kernel": np.arange(12).reshape(2, 6)})
        >>> split["layer_0/attention/key/kernel"].tolist()
        [[2, 3], [8, 9]]
    """
    split = {}
    for path, value in values.items():
        prefix, _, weight = path.rpartition("/qkv/")
        if not prefix or not prefix.endswith("/attention"):
            split[path] = value
            continue
        for projection, part in zip(QKV, np.split(value, 3, axis=-1), strict=True):
            split[f"{prefix}/{projection}/{weight}"] = part
    return split


def hf_transposed(tfbert_path: str) -> bool:
    return tfbert_path.endswith("/kernel")


def google_transposed(google_name: str) -> bool:
    return google_name in GOOGLE_TRANSPOSED


def keras_hub_shapes(tfbert_path: str, hidden_size: int, num_heads: int
                     ) -> tuple[tuple[int, ...], tuple[int, ...]] | None:
    """`(tfbert shape, keras-hub shape)` of an attention weight; None where the shapes agree.

    tfbert's attention projections are Dense layers whose `heads * head_size`
    axis is split into heads as `[..., heads, head_size]` (row-major), which is
    exactly how keras-hub's EinsumDense lays out the same axis; so converting
    either way is a plain `reshape` to the other side's shape, nothing is
    transposed. This is the only place where the two layouts differ.

    Example:
        >>> keras_hub_shapes("layer_0/attention/query/kernel", 768, 12)
        ((768, 768), (768, 12, 64))
        >>> keras_hub_shapes("layer_0/attention/query/bias", 768, 12)
        ((768,), (12, 64))
        >>> keras_hub_shapes("layer_3/attention/output/kernel", 768, 12)
        ((768, 768), (12, 64, 768))
        >>> keras_hub_shapes("layer_0/attention/output/bias", 768, 12) is None
        True
    """
    head_size = hidden_size // num_heads
    parts = tfbert_path.split("/")
    if len(parts) != 4 or parts[1] != "attention":
        return None
    projection, weight = parts[2], parts[3]
    if projection in ("query", "key", "value"):
        if weight == "kernel":
            return (hidden_size, hidden_size), (hidden_size, num_heads, head_size)
        return (hidden_size,), (num_heads, head_size)
    if projection == "output" and weight == "kernel":
        return (hidden_size, hidden_size), (num_heads, head_size, hidden_size)
    return None
