"""Extractive question answering (SQuAD): answer-span logits on a BERT encoder."""

from __future__ import annotations

import keras
import tensorflow as tf

from tfbert.layers import SpanLogits
from tfbert.models.encoder import encoder_config, encoder_inputs

# Longest answer considered when decoding, in wordpieces (as in Google's run_squad).
MAX_ANSWER_LENGTH = 30


def build_span_qa(encoder: keras.Model, name: str = "bert_span_qa") -> keras.Model:
    """A span QA model: encoder -> dense(2) -> start and end logits per token.

    Inputs are `[CLS] question [SEP] context [SEP]` (see
    `tfbert.text.packing.pack_question_context`). Train with the index of the
    answer's first and last wordpiece as labels, 0 (`[CLS]`) for a question
    without answer (SQuAD v2), after `compile_span_qa`; decode with
    `decode_spans`.

    Args:
        encoder: a model from `build_encoder`/`load_encoder`.

    Returns:
        A functional model from the three encoder inputs to
        `{"start": [B, T], "end": [B, T]}` float32 logits, padding at -1e9.

    Example:

    >>> import numpy as np, tfbert
    >>> enc = tfbert.build_encoder(tfbert.BertConfig.from_preset("tiny", vocab_size=100))
    >>> qa = build_span_qa(enc)
    >>> ids = np.array([[2, 7, 3, 8, 9, 3, 0]], "int32")
    >>> out = qa({"input_word_ids": ids, "input_mask": np.int32(ids > 0),
    ...           "input_type_ids": np.array([[0, 0, 0, 1, 1, 1, 0]], "int32")})
    >>> out["start"].shape, out["end"].shape
    (TensorShape([1, 7]), TensorShape([1, 7]))
    """
    inputs = encoder_inputs()
    # The [CLS] pooler is unused (see build_tagger).
    encoder.get_layer("pooler").trainable = False
    sequence = encoder(inputs)["sequence_output"]
    start, end = SpanLogits(initializer_range=encoder_config(encoder).initializer_range,
                            name="span_logits")(sequence, inputs["input_mask"])
    # Identity layers give the outputs their names ("start", "end") for
    # losses, metrics and history keys.
    start = keras.layers.Identity(name="start")(start)
    end = keras.layers.Identity(name="end")(end)
    return keras.Model(inputs, {"start": start, "end": end}, name=name)


def compile_span_qa(model: keras.Model, optimizer: keras.optimizers.Optimizer | str = "adam",
                    jit_compile: bool | str = True) -> keras.Model:
    """Compile with the mean of start and end cross-entropy (as in BERT) and accuracies.

    Labels: `{"start": [B], "end": [B]}` token indices. Metrics
    `start_accuracy`/`end_accuracy`: how often the arg-max token is the label.
    """
    model.compile(
        optimizer=optimizer,
        loss={"start": keras.losses.SparseCategoricalCrossentropy(from_logits=True),
              "end": keras.losses.SparseCategoricalCrossentropy(from_logits=True)},
        loss_weights={"start": 0.5, "end": 0.5},
        metrics={"start": [keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
                 "end": [keras.metrics.SparseCategoricalAccuracy(name="accuracy")]},
        jit_compile=jit_compile,
    )
    return model


def decode_spans(start_logits: tf.Tensor, end_logits: tf.Tensor, context_start: tf.Tensor,
                 context_length: tf.Tensor, max_answer_length: int = MAX_ANSWER_LENGTH
                 ) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """The best answer span of each row, or none (graph ops, no Python).

    Start and end probabilities are softmaxes over the context tokens plus
    `[CLS]`. A span starts and ends inside the context, with start <= end and
    at most `max_answer_length` tokens; its score is p(start) * p(end). When
    `[CLS]`'s own score p_start(0) * p_end(0) beats the best span (SQuAD v2
    "no answer"), or the context is empty, the row has no answer.

    Args:
        start_logits, end_logits: float `[B, T]`.
        context_start: int `[B]`, position of the first context token.
        context_length: int `[B]`, number of context tokens in the input.
        max_answer_length: longest span in tokens.

    Returns:
        `(start, end, score)`: int64 `[B]` indices of the first and last
        answer token *within the context* (-1 for no answer) and float32 `[B]`
        the winner's score (the no-answer score when there is none).

    Example:

    >>> s = tf.constant([[0.0, 0.0, 5.0, 1.0]]); e = tf.constant([[0.0, 0.0, 1.0, 5.0]])
    >>> start, end, _ = decode_spans(s, e, tf.constant([2]), tf.constant([2]))
    >>> start.numpy().tolist(), end.numpy().tolist()
    ([0], [1])
    """
    start_logits = tf.cast(start_logits, tf.float32)
    end_logits = tf.cast(end_logits, tf.float32)
    length = tf.shape(start_logits, out_type=tf.int64)[1]
    position = tf.range(length)[tf.newaxis, :]
    first = tf.cast(context_start, tf.int64)[:, tf.newaxis]
    in_context = (position >= first) & (position < first + tf.cast(context_length,
                                                                  tf.int64)[:, tf.newaxis])
    allowed = in_context | (position == 0)
    log_p_start = tf.nn.log_softmax(tf.where(allowed, start_logits, -1e9), axis=-1)
    log_p_end = tf.nn.log_softmax(tf.where(allowed, end_logits, -1e9), axis=-1)

    # Scores of (start i, end i + k) for k < max_answer_length: [B, T, K].
    offsets = tf.range(max_answer_length, dtype=tf.int64)
    end_index = position[0, :, tf.newaxis] + offsets[tf.newaxis, :]
    in_range = end_index < length
    end_index = tf.minimum(end_index, length - 1)
    span = log_p_start[:, :, tf.newaxis] + tf.gather(log_p_end, end_index, axis=1)
    valid = (in_context[:, :, tf.newaxis] & tf.gather(in_context, end_index, axis=1)
             & in_range[tf.newaxis])
    span = tf.where(valid, span, -3e9)

    flat = tf.reshape(span, [tf.shape(span)[0], -1])
    best = tf.argmax(flat, axis=-1)
    best_score = tf.reduce_max(flat, axis=-1)
    start = best // max_answer_length
    end = start + best % max_answer_length
    null_score = log_p_start[:, 0] + log_p_end[:, 0]
    answered = tf.reduce_any(valid, axis=[1, 2]) & (best_score >= null_score)
    no = tf.constant(-1, tf.int64)
    return (tf.where(answered, start - first[:, 0], no), tf.where(answered, end - first[:, 0], no),
            tf.exp(tf.where(answered, best_score, null_score)))
