"""BERT input embeddings: word + position + segment, LayerNorm, dropout."""

from __future__ import annotations

import keras
import tensorflow as tf

from tfbert.layers.dropout import Dropout
from tfbert.layers.initializers import bert_initializer


@keras.saving.register_keras_serializable(package="tfbert")
class BertEmbeddings(keras.layers.Layer):
    """Sum of token, absolute position and token-type embeddings, normalised.

    Args:
        vocab_size: rows of the word-embedding table.
        hidden_size: embedding width.
        max_position_embeddings: rows of the position table (longest input).
        type_vocab_size: rows of the token-type (segment) table.
        layer_norm_eps: LayerNorm epsilon.
        dropout: dropout after the LayerNorm.
        initializer_range: stddev of the truncated-normal initializer.

    Call args:
        input_word_ids: int `[B, T]` token ids.
        input_type_ids: int `[B, T]` segment ids.
        training: apply dropout.

    The word table is exposed as `word_embeddings` so that a masked-LM head can
    tie its output projection to it.

    Example:

    >>> import numpy as np
    >>> emb = BertEmbeddings(vocab_size=100, hidden_size=16)
    >>> ids = np.array([[2, 5, 3]], "int32")
    >>> emb(ids, np.zeros_like(ids)).shape
    TensorShape([1, 3, 16])
    """

    def __init__(self, *, vocab_size: int, hidden_size: int, max_position_embeddings: int = 512,
                 type_vocab_size: int = 2, layer_norm_eps: float = 1e-12, dropout: float = 0.1,
                 initializer_range: float = 0.02, **kwargs):
        super().__init__(**kwargs)
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.max_position_embeddings = max_position_embeddings
        self.type_vocab_size = type_vocab_size
        self.layer_norm_eps = layer_norm_eps
        self.dropout_rate = dropout
        self.initializer_range = initializer_range

        def table(rows, name):
            # An initializer (so a seed) of its own for each table: with a
            # shared one the position and type rows would repeat the first
            # word rows.
            return keras.layers.Embedding(
                rows, hidden_size, embeddings_initializer=bert_initializer(initializer_range),
                name=name)

        self.word_embeddings = table(vocab_size, "word_embeddings")
        self.position_embeddings = table(max_position_embeddings, "position_embeddings")
        self.token_type_embeddings = table(type_vocab_size, "token_type_embeddings")
        self.layer_norm = keras.layers.LayerNormalization(epsilon=layer_norm_eps,
                                                         name="layer_norm")
        self.dropout = Dropout(dropout)

    def build(self, input_shape):
        self.word_embeddings.build(input_shape)
        self.position_embeddings.build(input_shape)
        self.token_type_embeddings.build(input_shape)
        self.layer_norm.build(tuple(input_shape) + (self.hidden_size,))
        self.built = True

    def call(self, input_word_ids, input_type_ids, training=False):
        seq_len = tf.shape(input_word_ids)[1]
        positions = self.position_embeddings.embeddings[:seq_len]
        x = (self.word_embeddings(input_word_ids)
             + tf.cast(positions, self.compute_dtype)[tf.newaxis]
             + self.token_type_embeddings(input_type_ids))
        return self.dropout(self.layer_norm(x), training=training)

    def compute_output_shape(self, input_word_ids_shape, input_type_ids_shape=None):
        return tuple(input_word_ids_shape) + (self.hidden_size,)

    def get_config(self):
        config = super().get_config()
        config.update(vocab_size=self.vocab_size, hidden_size=self.hidden_size,
                      max_position_embeddings=self.max_position_embeddings,
                      type_vocab_size=self.type_vocab_size, layer_norm_eps=self.layer_norm_eps,
                      dropout=self.dropout_rate, initializer_range=self.initializer_range)
        return config
