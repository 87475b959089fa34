"""Sequence (and sequence-pair) regressor on top of a BERT encoder: one float per text."""

from __future__ import annotations

import keras

from tfbert.layers.dropout import Dropout
from tfbert.layers.initializers import bert_initializer
from tfbert.models.classifier import pooled_text
from tfbert.models.encoder import encoder_config, encoder_inputs


def build_regressor(encoder: keras.Model, pooling: str = "cls", dropout: float = 0.1,
                    name: str = "bert_regressor") -> keras.Model:
    """A regression model: encoder -> pooling -> dropout -> dense with one output.

    Args:
        encoder: a model from `build_encoder`/`load_encoder`.
        pooling: "cls" (the encoder's `pooled_output`) or "mean" (the mean
            of the unpadded `sequence_output` vectors), as in `build_classifier`.
        dropout: dropout before the output layer.

    Returns:
        A functional model from the three encoder inputs to `score` float `[B]`.

    Example:

    >>> import numpy as np, tfbert
    >>> enc = tfbert.build_encoder(tfbert.BertConfig.from_preset("tiny", vocab_size=100))
    >>> ids = np.array([[2, 7, 3], [2, 9, 3]], "int32")
    >>> build_regressor(enc)({"input_word_ids": ids, "input_mask": np.ones_like(ids),
    ...                       "input_type_ids": np.zeros_like(ids)}).shape
    TensorShape([2])
    """
    inputs = encoder_inputs()
    pooled = pooled_text(encoder, inputs, pooling)
    pooled = Dropout(dropout, name="regressor_dropout")(pooled)
    init = bert_initializer(encoder_config(encoder).initializer_range)
    score = keras.layers.Dense(1, kernel_initializer=init, dtype="float32",
                               name="score")(pooled)
    return keras.Model(inputs, keras.ops.squeeze(score, axis=-1), name=name)
