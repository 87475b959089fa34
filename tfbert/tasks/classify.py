"""The `classify` task: one label per text (or text pair).

Training data: CSV, TSV or JSONL with `text`, optional `text_pair` and
`label` (`tfbert.data.classification`). The export's `serving_default`
returns `probabilities` `[B, C]`, `logits`, `label_ids` int64 and `labels`
string; its `classify` signature (method `tensorflow/serving/classify`)
answers TF Serving's Classify RPC with `classes` and `scores`.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from tfbert.data.classification import (
    classification_dataset,
    label_ids,
    label_vocabulary,
    read_classification,
)
from tfbert.errors import DataError
from tfbert.models import build_classifier, compile_classifier
from tfbert.saved_model import CLASSIFY_METHOD
from tfbert.tasks import metrics, register
from tfbert.tasks.endpoints import SERIALIZED_EXAMPLES, text_endpoint, tokenize_endpoint
from tfbert.tasks.spec import Endpoints, TaskInfo, TaskSpec, TrainingData
from tfbert.text import BertTokenizer


def build_model(encoder: keras.Model, info: TaskInfo) -> keras.Model:
    return build_classifier(encoder, len(info.labels), pooling=info.pooling)


def read_data(train: str, validation: str | None, tokenizer: BertTokenizer, info: TaskInfo,
              batch_size: int, seed: int) -> TrainingData:
    train_data = read_classification(train)
    names = label_vocabulary(train_data.labels)
    if len(names) < 2:
        raise DataError(f"{train}: need at least two distinct labels, found {names}")
    val_data = read_classification(validation) if validation else None
    if val_data is not None:
        label_ids(val_data, names)  # unknown labels fail before training starts
        if (val_data.pairs is None) != (train_data.pairs is None):
            raise DataError(f"{validation}: text_pair must be present in both files or neither")
    info.labels = names
    info.pair_input = train_data.pairs is not None
    return TrainingData(
        train=lambda: classification_dataset(train_data, tokenizer, names, batch_size,
                                             shuffle=True, seed=seed),
        validation=(classification_dataset(val_data, tokenizer, names, batch_size)
                    if val_data is not None else None),
        train_size=len(train_data), info=info)


def evaluate(model: keras.Model, tokenizer: BertTokenizer, info: TaskInfo, data: str,
             batch_size: int) -> dict:
    """`examples`, `loss`, `accuracy`, `macro_f1` and per-label precision/recall/F1/support."""
    examples = read_classification(data)
    if (examples.pairs is not None) != info.pair_input:
        raise DataError(f"{data}: the model was trained "
                        f"{'with' if info.pair_input else 'without'} text_pair")
    ds = classification_dataset(examples, tokenizer, info.labels, batch_size)
    logits = np.concatenate([model(x, training=False).numpy() for x, _ in ds])
    return metrics.classification_metrics(np.array(label_ids(examples, info.labels)), logits,
                                          info.labels)


def endpoints(model: keras.Model, tokenizer: BertTokenizer, info: TaskInfo) -> Endpoints:
    """`serving_default` (probabilities, logits, label_ids, labels), `classify`, `tokenize`."""
    label_names = tf.constant(list(info.labels))

    def predict(batch):
        logits = tf.cast(model(batch, training=False), tf.float32)
        probabilities = tf.nn.softmax(logits, axis=-1)
        ids = tf.argmax(probabilities, axis=-1, output_type=tf.int64)
        return {"probabilities": probabilities, "logits": logits, "label_ids": ids,
                "labels": tf.gather(label_names, ids)}

    def classify(inputs):
        # TF Serving's Classify RPC sends serialized tf.Examples.
        features = {"text": tf.io.FixedLenFeature([], tf.string, default_value="")}
        if info.pair_input:
            features["text_pair"] = tf.io.FixedLenFeature([], tf.string, default_value="")
        parsed = tf.io.parse_example(inputs, features)
        out = predict(tokenizer(parsed["text"], pairs=parsed.get("text_pair")))
        classes = tf.tile(label_names[tf.newaxis], [tf.shape(inputs)[0], 1])
        return {"classes": classes, "scores": out["probabilities"]}

    return {**text_endpoint("serving_default", predict, tokenizer, info.pair_input),
            "classify": (classify, [SERIALIZED_EXAMPLES]),
            **tokenize_endpoint(tokenizer, info.pair_input)}


SPEC = register(TaskSpec(
    name="classify",
    description="one label per text or text pair (softmax over the labels)",
    build_model=build_model,
    endpoints=endpoints,
    compile_model=compile_classifier,
    read_data=read_data,
    evaluate=evaluate,
    data_format="CSV/TSV/JSONL with text, optional text_pair, label",
    needs_labels=True,
    signature_methods={"classify": CLASSIFY_METHOD},
))
