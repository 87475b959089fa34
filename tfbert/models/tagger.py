"""Token tagger (NER, POS, chunking) on top of a BERT encoder."""

from __future__ import annotations

import keras
import tensorflow as tf

from tfbert.errors import ConfigError
from tfbert.layers.dropout import Dropout
from tfbert.layers.initializers import bert_initializer
from tfbert.models.encoder import encoder_config, encoder_inputs
from tfbert.text.packing import IGNORE_LABEL


def build_tagger(encoder: keras.Model, num_tags: int, dropout: float = 0.1,
                 name: str = "bert_tagger") -> keras.Model:
    """A tagging model: encoder -> dropout -> dense logits for every wordpiece.

    A word is tagged at its first wordpiece, as in the BERT paper; train with
    labels `IGNORE_LABEL` (-100) on the other pieces, on `[CLS]`/`[SEP]` and on
    padding (what `tfbert.data.tagging.tagging_dataset` produces) and
    `compile_tagger`, whose loss and accuracy skip those positions.

    Args:
        encoder: a model from `build_encoder`/`load_encoder`.
        num_tags: number of tags (>= 2), e.g. 9 for CoNLL-2003 BIO.
        dropout: dropout before the output layer.

    Returns:
        A functional model from the three encoder inputs to `logits`
        `[B, T, num_tags]`.

    Example:

    >>> import numpy as np, tfbert
    >>> enc = tfbert.build_encoder(tfbert.BertConfig.from_preset("tiny", vocab_size=100))
    >>> tagger = build_tagger(enc, num_tags=5)
    >>> ids = np.array([[2, 7, 8, 3]], "int32")
    >>> tagger({"input_word_ids": ids, "input_mask": np.ones_like(ids),
    ...         "input_type_ids": np.zeros_like(ids)}).shape
    TensorShape([1, 4, 5])
    """
    if num_tags < 2:
        raise ConfigError(f"num_tags must be at least 2, got {num_tags}")
    inputs = encoder_inputs()
    # The [CLS] pooler is unused; freezing it keeps the optimizer from tracking
    # (and warning about) weights without gradients.
    encoder.get_layer("pooler").trainable = False
    sequence = encoder(inputs)["sequence_output"]
    sequence = Dropout(dropout, name="tagger_dropout")(sequence)
    init = bert_initializer(encoder_config(encoder).initializer_range)
    logits = keras.layers.Dense(num_tags, kernel_initializer=init, dtype="float32",
                                name="logits")(sequence)
    return keras.Model(inputs, logits, name=name)


@keras.saving.register_keras_serializable(package="tfbert")
class MaskedSparseCategoricalAccuracy(keras.metrics.Metric):
    """Accuracy over the positions whose label is not `ignore_label`.

    Args:
        ignore_label: label of positions to skip.
        name: metric name.

    Example:

    >>> m = MaskedSparseCategoricalAccuracy()
    >>> m.update_state([[1, -100, 0]], [[[0.0, 1.0], [1.0, 0.0], [0.0, 1.0]]])
    >>> float(m.result())
    0.5
    """

    def __init__(self, ignore_label: int = IGNORE_LABEL, name: str = "accuracy", **kwargs):
        super().__init__(name=name, **kwargs)
        self.ignore_label = ignore_label
        self.correct = self.add_variable(shape=(), initializer="zeros", name="correct")
        self.count = self.add_variable(shape=(), initializer="zeros", name="count")

    def update_state(self, y_true, y_pred, sample_weight=None):
        y_true = tf.cast(y_true, tf.int64)
        y_pred = tf.convert_to_tensor(y_pred)
        if y_true.shape.rank == y_pred.shape.rank:  # [B, T, 1] labels
            y_true = tf.squeeze(y_true, -1)
        weight = tf.cast(y_true != self.ignore_label, self.dtype)
        if sample_weight is not None:
            weight *= tf.cast(sample_weight, self.dtype)
        hit = tf.cast(tf.argmax(y_pred, axis=-1) == y_true, self.dtype)
        self.correct.assign_add(tf.reduce_sum(hit * weight))
        self.count.assign_add(tf.reduce_sum(weight))

    def result(self):
        return tf.math.divide_no_nan(self.correct, self.count)

    def reset_state(self):
        self.correct.assign(0.0)
        self.count.assign(0.0)

    def get_config(self):
        return {**super().get_config(), "ignore_label": self.ignore_label}


def compile_tagger(model: keras.Model, optimizer: keras.optimizers.Optimizer | str = "adam",
                   jit_compile: bool | str = True) -> keras.Model:
    """Compile with cross-entropy averaged over tagged positions and token `accuracy`.

    Labels are int `[B, T]` with `IGNORE_LABEL` where nothing is tagged; those
    positions count neither in the loss nor in `accuracy` (the share of words
    whose first piece gets the right tag).
    """
    model.compile(
        optimizer=optimizer,
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True,
                                                        ignore_class=IGNORE_LABEL),
        metrics=[MaskedSparseCategoricalAccuracy(name="accuracy")],
        jit_compile=jit_compile,
    )
    return model
