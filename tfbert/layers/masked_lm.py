"""Masked-LM head with its output projection tied to the word embeddings."""

from __future__ import annotations

import keras
import tensorflow as tf

from tfbert.errors import ConfigError
from tfbert.layers.activations import bert_activation
from tfbert.layers.initializers import bert_initializer


@keras.saving.register_keras_serializable(package="tfbert")
class MaskedLMHead(keras.layers.Layer):
    """Dense + activation + LayerNorm, then logits over the vocabulary.

    Logits are computed only at `masked_positions`, so the `[B, P, V]` output
    stays small even for long sequences. The output projection is the
    transposed word-embedding matrix (tied, as in BERT) plus an own bias.

    The head uses the encoder's embedding layer; it owns only `transform`,
    `layer_norm` and `bias`. A config cannot carry that tie, so
    `from_config` needs the embedding layer passed in as
    `config["word_embeddings"]`; a whole pretrainer (`BertPretrainer`,
    from `tfbert.models.build_pretrainer`) does this when it is loaded
    from a `.keras` file.

    Args:
        word_embeddings: the encoder's `keras.layers.Embedding` to tie to.
        hidden_act: activation of the transform, a name from
            `tfbert.config.ACTIVATIONS` ("gelu" = exact erf).
        layer_norm_eps: LayerNorm epsilon.
        initializer_range: stddev of the truncated-normal initializer.

    Call args:
        sequence_output: `[B, T, H]` encoder output.
        masked_positions: int `[B, P]` positions to predict.

    Example:

    >>> import numpy as np
    >>> emb = keras.layers.Embedding(50, 8); emb.build((None,))
    >>> head = MaskedLMHead(emb)
    >>> head(np.ones((2, 6, 8), "float32"), np.array([[1, 2], [3, 0]])).shape
    TensorShape([2, 2, 50])
    >>> again = MaskedLMHead.from_config({**head.get_config(), "word_embeddings": emb})
    >>> again.word_embeddings is emb
    True
    """

    def __init__(self, word_embeddings: keras.layers.Embedding, *, hidden_act: str = "gelu",
                 layer_norm_eps: float = 1e-12, initializer_range: float = 0.02, **kwargs):
        super().__init__(**kwargs)
        self.word_embeddings = word_embeddings
        self.hidden_act = hidden_act
        self.layer_norm_eps = layer_norm_eps
        self.initializer_range = initializer_range
        self._activation = bert_activation(hidden_act)
        self.transform = keras.layers.Dense(
            word_embeddings.output_dim, kernel_initializer=bert_initializer(initializer_range),
            name="transform")
        self.layer_norm = keras.layers.LayerNormalization(epsilon=layer_norm_eps,
                                                         name="layer_norm")

    def build(self, sequence_output_shape, masked_positions_shape=None):
        hidden = self.word_embeddings.output_dim
        self.transform.build((None, hidden))
        self.layer_norm.build((None, hidden))
        self.bias = self.add_weight(name="bias", shape=(self.word_embeddings.input_dim,),
                                    initializer="zeros")
        self.built = True

    def call(self, sequence_output, masked_positions):
        positions = tf.cast(masked_positions, tf.int32)
        picked = tf.gather(sequence_output, positions, batch_dims=1)
        # Rows [B*P, H]: a [B, P, H] x [V, H]^T matmul broadcasts the table
        # over the batch, and its gradient summed B copies of the [V, H]
        # table gradient (about a tenth of a MiniLM pretraining step on CPU).
        rows = tf.reshape(picked, [-1, self.word_embeddings.output_dim])
        x = self.layer_norm(self._activation(self.transform(rows)))
        table = tf.cast(self.word_embeddings.embeddings, x.dtype)
        # The vocabulary matmul at the compute dtype (it is most of the head's
        # work), the logits themselves in float32 under any policy.
        logits = tf.nn.bias_add(tf.cast(tf.matmul(x, table, transpose_b=True), tf.float32),
                                tf.cast(self.bias, tf.float32))
        return tf.reshape(logits, tf.concat([tf.shape(positions),
                                             [self.word_embeddings.input_dim]], 0))

    def compute_output_shape(self, sequence_output_shape, masked_positions_shape):
        return tuple(masked_positions_shape) + (self.word_embeddings.input_dim,)

    def get_config(self):
        # vocab_size and hidden_size describe the tied table; they are checked
        # against the embedding layer `from_config` is given.
        config = super().get_config()
        config.update(hidden_act=self.hidden_act, layer_norm_eps=self.layer_norm_eps,
                      initializer_range=self.initializer_range,
                      vocab_size=self.word_embeddings.input_dim,
                      hidden_size=self.word_embeddings.output_dim)
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        embeddings = config.pop("word_embeddings", None)
        vocab_size, hidden_size = config.pop("vocab_size"), config.pop("hidden_size")
        if not isinstance(embeddings, keras.layers.Embedding):
            # A fresh table here would silently untie the head from the encoder.
            raise ConfigError(
                f"MaskedLMHead {config.get('name')!r} is tied to an encoder's word embeddings "
                "and cannot be rebuilt from its config alone: pass the embedding layer as "
                "config['word_embeddings'], or save and load the whole pretrainer "
                "(tfbert.models.build_pretrainer)")
        if (embeddings.input_dim, embeddings.output_dim) != (vocab_size, hidden_size):
            raise ConfigError(
                f"MaskedLMHead was built for a {vocab_size} x {hidden_size} word table, got "
                f"{embeddings.input_dim} x {embeddings.output_dim}")
        return cls(embeddings, **config)
