"""The `tag` task: one tag per word (NER, POS, chunking), BIO tags.

Training data: CoNLL (token first, tag last on each line, blank line between
sentences; `tfbert.data.tagging`). A word is tagged at its first wordpiece.
The export's `serving_default` returns `tokens` and `tags` string
`[B, words]` (padded with "") and `scores` (probability of each chosen tag).
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from tfbert.data.tagging import (
    OUTSIDE,
    encode_tokens,
    read_conll,
    tag_ids,
    tag_vocabulary,
    tagging_dataset,
)
from tfbert.errors import DataError
from tfbert.models import build_tagger, compile_tagger
from tfbert.tasks import metrics, register
from tfbert.tasks.endpoints import TEXT, tokenize_endpoint
from tfbert.tasks.spec import Endpoints, TaskInfo, TaskSpec, TrainingData
from tfbert.text import BertTokenizer
from tfbert.text.offsets import char_spans
from tfbert.text.packing import pack_words


def build_model(encoder: keras.Model, info: TaskInfo) -> keras.Model:
    return build_tagger(encoder, len(info.labels))


def read_data(train: str, validation: str | None, tokenizer: BertTokenizer, info: TaskInfo,
              batch_size: int, seed: int) -> TrainingData:
    train_data = read_conll(train)
    names = tag_vocabulary(train_data.tags)
    if len(names) < 2:
        raise DataError(f"{train}: need at least two distinct tags, found {names}")
    val_data = read_conll(validation) if validation else None
    if val_data is not None:
        tag_ids(val_data, names)  # unknown tags fail before training starts
    info.labels = names
    return TrainingData(
        train=lambda: tagging_dataset(train_data, tokenizer, names, batch_size, shuffle=True,
                                      seed=seed),
        validation=(tagging_dataset(val_data, tokenizer, names, batch_size)
                    if val_data is not None else None),
        train_size=len(train_data), info=info)


def evaluate(model: keras.Model, tokenizer: BertTokenizer, info: TaskInfo, data: str,
             batch_size: int) -> dict:
    """`examples` (sentences), `tokens`, `loss`, tag `accuracy` and entity-level P/R/F1.

    Tokens past `max_seq_length` (or without wordpieces) count as "O".
    Entities are conlleval's BIO chunks, exact type and boundaries, also per
    entity type.
    """
    examples = read_conll(data)
    truth = tag_ids(examples, info.labels)
    names = info.labels
    predicted, losses = [], []
    for begin in range(0, len(examples), batch_size):
        tokens = tf.ragged.constant(examples.sentences[begin:begin + batch_size], tf.string)
        inputs, positions = encode_tokens(tokenizer, tokens)
        logits = tf.cast(model(inputs, training=False), tf.float32)
        log_probs = tf.nn.log_softmax(logits, axis=-1).numpy()
        for row, where in enumerate(positions.to_list()):
            gold = truth[begin + row]
            # A token the model did not see (cut off, or no pieces) counts as "O".
            tags = [OUTSIDE if p < 0 else names[int(log_probs[row, p].argmax())] for p in where]
            losses += [-log_probs[row, p, g] for p, g in zip(where, gold, strict=True) if p >= 0]
            predicted.append(tags)
    return {
        "examples": len(examples),
        "tokens": sum(len(t) for t in truth),
        "loss": float(np.mean(losses)) if losses else None,
        **metrics.tagging_metrics(examples.tags, predicted),
    }


def endpoints(model: keras.Model, tokenizer: BertTokenizer, info: TaskInfo) -> Endpoints:
    """`serving_default`: the words of each text with their tags and tag probabilities.

    Words are the tokenizer's (split on whitespace, punctuation and CJK
    characters), returned as written in the original text, not normalised.
    Each word is tagged at its first wordpiece. Words whose first piece lies
    past `max_seq_length` are not returned. Outputs, padded per batch:
    `tokens` and `tags` string `[batch, words]` ("" on padding), `scores`
    float32 `[batch, words]` (probability of the chosen tag, 0 on padding).
    """
    tag_names = tf.constant(list(info.labels))

    def serve(text):
        words = tokenizer.tokenize_words_with_offsets(text)
        inputs, positions = pack_words(tokenizer, words.ids)
        probabilities = tf.nn.softmax(tf.cast(model(inputs, training=False), tf.float32), -1)
        positions = positions.to_tensor(default_value=-1)
        tagged = positions >= 0
        # Tagged words are a prefix of each text's words; drop the columns no
        # text uses (over-long texts) so padding is the only filler.
        width = tf.reduce_max(tf.concat([tf.reduce_sum(tf.cast(tagged, tf.int32), 1), [0]], 0))
        positions, tagged = positions[:, :width], tagged[:, :width]
        word_probabilities = tf.gather(probabilities, tf.maximum(positions, 0), batch_dims=1)
        ids = tf.argmax(word_probabilities, axis=-1, output_type=tf.int32)
        # As wide as the most words in the batch, so at least `width`.
        tokens = char_spans(text, words.word_starts, words.word_ends).to_tensor("")
        empty = tf.constant("")
        return {
            "tokens": tf.where(tagged, tokens[:, :width], empty),
            "tags": tf.where(tagged, tf.gather(tag_names, ids), empty),
            "scores": tf.where(tagged, tf.reduce_max(word_probabilities, axis=-1), 0.0),
        }

    return {"serving_default": (serve, [TEXT]), **tokenize_endpoint(tokenizer)}


SPEC = register(TaskSpec(
    name="tag",
    description="one tag per word (NER, POS, chunking) with BIO tags",
    build_model=build_model,
    endpoints=endpoints,
    compile_model=compile_tagger,
    read_data=read_data,
    evaluate=evaluate,
    data_format="CoNLL: token ... tag per line, blank line between sentences, BIO tags",
    needs_labels=True,
))
