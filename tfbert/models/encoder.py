"""The BERT encoder network as a Keras functional model."""

from __future__ import annotations

import dataclasses

import keras

from tfbert.config import BertConfig
from tfbert.layers import BertEmbeddings, TransformerBlock
from tfbert.layers.initializers import bert_initializer

INPUT_NAMES = ("input_word_ids", "input_mask", "input_type_ids")
ENCODER_NAME = "bert_encoder"


def encoder_inputs() -> dict[str, keras.KerasTensor]:
    """The three int32 `[batch, seq]` inputs of every tfbert model."""
    return {name: keras.Input(shape=(None,), dtype="int32", name=name) for name in INPUT_NAMES}


def build_encoder(config: BertConfig, name: str = ENCODER_NAME) -> keras.Model:
    """Build a randomly initialised BERT encoder.

    Args:
        config: sizes and hyper-parameters.
        name: model name; task models find their encoder by it.

    Returns:
        A functional `keras.Model` taking a dict of `input_word_ids`,
        `input_mask`, `input_type_ids` (int32 `[B, T]`, any T up to
        `max_position_embeddings`) and returning a dict with
        `sequence_output` `[B, T, H]` and `pooled_output` `[B, H]` (tanh dense
        over the [CLS] vector).

    Example:

    >>> import numpy as np
    >>> enc = build_encoder(BertConfig.from_preset("tiny", vocab_size=100))
    >>> ids = np.array([[2, 7, 3]], "int32")
    >>> out = enc({"input_word_ids": ids, "input_mask": np.ones_like(ids),
    ...            "input_type_ids": np.zeros_like(ids)})
    >>> out["sequence_output"].shape, out["pooled_output"].shape
    (TensorShape([1, 3, 128]), TensorShape([1, 128]))
    """
    inputs = encoder_inputs()
    x = BertEmbeddings(
        vocab_size=config.vocab_size,
        hidden_size=config.hidden_size,
        max_position_embeddings=config.max_position_embeddings,
        type_vocab_size=config.type_vocab_size,
        layer_norm_eps=config.layer_norm_eps,
        dropout=config.hidden_dropout,
        initializer_range=config.initializer_range,
        name="embeddings",
    )(inputs["input_word_ids"], inputs["input_type_ids"])
    for i in range(config.num_layers):
        x = TransformerBlock(
            num_heads=config.num_heads,
            hidden_size=config.hidden_size,
            intermediate_size=config.intermediate_size,
            hidden_act=config.hidden_act,
            hidden_dropout=config.hidden_dropout,
            attention_dropout=config.attention_dropout,
            layer_norm_eps=config.layer_norm_eps,
            initializer_range=config.initializer_range,
            xla_attention=config.xla_attention,
            xla_pointwise=config.xla_pointwise,
            inference_branches=config.inference_branches,
            name=f"layer_{i}",
        )(x, inputs["input_mask"])
    first_token = keras.ops.take(x, 0, axis=1)
    pooled = keras.layers.Dense(config.hidden_size, activation="tanh",
                                kernel_initializer=bert_initializer(config.initializer_range),
                                name="pooler")(first_token)
    return keras.Model(inputs, {"sequence_output": x, "pooled_output": pooled}, name=name)


def encoder_config(encoder: keras.Model) -> BertConfig:
    """The `BertConfig` an encoder was built from, read off its layers.

    Read from the layers rather than stored on the model so that it survives
    `.keras` save/load and works for encoders nested in task models: the
    `embeddings` layer's and the transformer blocks' `get_config()` name their
    settings as the `BertConfig` fields, and `num_layers` is the block count.
    (The embeddings' `dropout` is `hidden_dropout`, which the blocks also hold.)

    Example:

    >>> cfg = BertConfig.from_preset("tiny", vocab_size=100)
    >>> encoder_config(build_encoder(cfg)) == cfg
    True
    """
    encoder = get_encoder(encoder)
    blocks = [layer for layer in encoder.layers if isinstance(layer, TransformerBlock)]
    if not blocks:
        raise ValueError(f"{encoder.name} has no transformer blocks: not a tfbert encoder")
    fields = {field.name for field in dataclasses.fields(BertConfig)}
    values = {"num_layers": len(blocks)}
    for layer in (encoder.get_layer("embeddings"), blocks[0]):
        values.update((k, v) for k, v in layer.get_config().items() if k in fields)
    return BertConfig(**values)


def get_encoder(model: keras.Model) -> keras.Model:
    """The encoder inside a task model (or the model itself if it is one)."""
    if model.name == ENCODER_NAME or not any(
            layer.name == ENCODER_NAME for layer in model.layers):
        return model
    return model.get_layer(ENCODER_NAME)
