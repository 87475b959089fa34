"""Sequence (and sequence-pair) classifier on top of a BERT encoder."""

from __future__ import annotations

import keras

from tfbert.errors import ConfigError
from tfbert.layers import Dropout, MaskedMeanPooling
from tfbert.layers.initializers import bert_initializer
from tfbert.models.encoder import encoder_config, encoder_inputs


def build_classifier(encoder: keras.Model, num_classes: int, pooling: str = "cls",
                     dropout: float = 0.1, name: str = "bert_classifier") -> keras.Model:
    """A classification model: encoder -> pooling -> dropout -> dense logits.

    Args:
        encoder: a model from `build_encoder`/`load_encoder`.
        num_classes: number of labels (>= 2).
        pooling: "cls" uses the encoder's `pooled_output` (BERT's choice);
            "mean" averages the unpadded `sequence_output` vectors (the
            sentence-transformers choice, better for models trained that way).
        dropout: dropout before the output layer.

    Returns:
        A functional model from the three encoder inputs to `logits`
        `[B, num_classes]`; text pairs need no change (segment ids carry them).

    Example:

    >>> import numpy as np, tfbert
    >>> enc = tfbert.build_encoder(tfbert.BertConfig.from_preset("tiny", vocab_size=100))
    >>> clf = build_classifier(enc, num_classes=3)
    >>> ids = np.array([[2, 7, 3]], "int32")
    >>> clf({"input_word_ids": ids, "input_mask": np.ones_like(ids),
    ...      "input_type_ids": np.zeros_like(ids)}).shape
    TensorShape([1, 3])
    """
    if num_classes < 2:
        raise ConfigError(f"num_classes must be at least 2, got {num_classes}")
    inputs = encoder_inputs()
    pooled = pooled_text(encoder, inputs, pooling)
    pooled = Dropout(dropout, name="classifier_dropout")(pooled)
    init = bert_initializer(encoder_config(encoder).initializer_range)
    # float32 logits also under a bf16 policy (`tfbert.precision`).
    logits = keras.layers.Dense(num_classes, kernel_initializer=init, dtype="float32",
                                name="logits")(pooled)
    return keras.Model(inputs, logits, name=name)


def pooled_text(encoder: keras.Model, inputs: dict, pooling: str):
    """One vector per text for a head: the encoder's `pooled_output` ("cls")
    or the mean of its unpadded `sequence_output` vectors ("mean").

    Raises:
        ConfigError: an unknown `pooling`.
    """
    if pooling not in ("cls", "mean"):
        raise ConfigError(f"pooling must be 'cls' or 'mean', got {pooling!r}")
    outputs = encoder(inputs)
    if pooling == "cls":
        return outputs["pooled_output"]
    # The [CLS] pooler is unused with mean pooling; freezing it keeps the
    # optimizer from tracking (and warning about) weights without gradients.
    encoder.get_layer("pooler").trainable = False
    return MaskedMeanPooling(name="mean_pooling")(outputs["sequence_output"],
                                                  inputs["input_mask"])


def compile_classifier(model: keras.Model, optimizer: keras.optimizers.Optimizer | str = "adam",
                       jit_compile: bool | str = True) -> keras.Model:
    """Compile with cross-entropy on logits and an `accuracy` metric.

    `jit_compile=True` by default: Keras' "auto" turns XLA off on machines
    without a GPU, where the whole-step XLA train step is the fast one.
    """
    model.compile(
        optimizer=optimizer,
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
        jit_compile=jit_compile,
    )
    return model
