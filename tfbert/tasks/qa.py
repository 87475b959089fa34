"""The `qa` task: extractive question answering (SQuAD v1.1 / v2.0).

Training data: SQuAD JSON (`tfbert.data.squad`). The export's
`serving_default(question, context)` returns `answer` (exactly
`context[start:end]`), `start`/`end` Unicode character offsets into the
original context (-1 when there is no answer) and `score`.
"""

from __future__ import annotations

import sys

import keras
import tensorflow as tf

from tfbert.data.squad import SquadData, SquadFeatures, read_squad, squad_dataset, squad_features
from tfbert.errors import DataError
from tfbert.models import build_span_qa, compile_span_qa, decode_spans
from tfbert.tasks import metrics, register
from tfbert.tasks.endpoints import CONTEXT, QUESTION
from tfbert.tasks.spec import Endpoints, TaskInfo, TaskSpec, TrainingData
from tfbert.text import BertTokenizer
from tfbert.text.offsets import char_spans
from tfbert.text.packing import pack_question_context


def build_model(encoder: keras.Model, info: TaskInfo) -> keras.Model:
    return build_span_qa(encoder)


def _features(path: str, data: SquadData, tokenizer: BertTokenizer) -> SquadFeatures:
    features = squad_features(data, tokenizer)
    if not len(features):
        raise DataError(f"{path}: no usable questions: every answer lies past "
                        f"max_seq_length={tokenizer.max_seq_length}")
    if features.dropped:
        # Not an error: long SQuAD contexts are common. Said once, on stderr.
        print(f"tfbert finetune: {path}: {features.dropped} of {len(data)} questions dropped, "
              f"their answer lies past max_seq_length={tokenizer.max_seq_length}",
              file=sys.stderr)
    return features


def read_data(train: str, validation: str | None, tokenizer: BertTokenizer, info: TaskInfo,
              batch_size: int, seed: int) -> TrainingData:
    train_features = _features(train, read_squad(train), tokenizer)
    val_features = _features(validation, read_squad(validation), tokenizer) if validation else None
    return TrainingData(
        train=lambda: squad_dataset(train_features, tokenizer, batch_size, shuffle=True,
                                    seed=seed),
        validation=(squad_dataset(val_features, tokenizer, batch_size)
                    if val_features is not None else None),
        train_size=len(train_features), info=info)


def evaluate(model: keras.Model, tokenizer: BertTokenizer, info: TaskInfo, data: str,
             batch_size: int) -> dict:
    """`examples`, `exact_match` and `f1` as fractions in [0, 1].

    SQuAD's answer normalisation, best over the gold answers; "" is the gold
    answer of an unanswerable question.
    """
    examples = read_squad(data).examples
    predictions = []
    for begin in range(0, len(examples), batch_size):
        batch = examples[begin:begin + batch_size]
        contexts = [e.context for e in batch]
        packed = pack_question_context(tokenizer, [e.question for e in batch], contexts)
        out = model(packed.inputs, training=False)
        first, last, _ = decode_spans(out["start"], out["end"], packed.context_start,
                                      packed.context_length)
        for row, (i, j) in enumerate(zip(first.numpy(), last.numpy(), strict=True)):
            if i < 0:
                predictions.append("")
            else:
                start = int(packed.starts[row, i])
                predictions.append(contexts[row][start:int(packed.ends[row, j])])
    golds = [[text for text, _ in e.answers] or [""] for e in examples]
    return {"examples": len(examples), **metrics.squad_metrics(predictions, golds)}


def endpoints(model: keras.Model, tokenizer: BertTokenizer, info: TaskInfo) -> Endpoints:
    """`serving_default(question, context)`: the answer span in the context.

    Outputs `answer` string `[batch]` (exactly `context[start:end]`), `start`
    and `end` int64 `[batch]` Unicode character offsets into the original
    context (end exclusive; offsets count code points, as Python `str`
    indices do), and `score` float32 `[batch]` (p(start) * p(end), see
    `decode_spans`). A question without answer (`[CLS]` scores best, or an
    empty context) gives "" and -1, -1. `tokenize(question, context)` gives
    the packed model inputs.
    """

    def serve(question, context):
        qa = pack_question_context(tokenizer, question, context)
        out = model(qa.inputs, training=False)
        first, last, score = decode_spans(out["start"], out["end"], qa.context_start,
                                          qa.context_length)
        answered = first >= 0
        starts, ends = qa.starts.to_tensor(0), qa.ends.to_tensor(0)
        # A row without answer has index -1 (and maybe no pieces): read any
        # in-range slot, then replace it.
        slots = tf.shape(starts, out_type=tf.int64)[1]

        def at(table, index):
            index = tf.clip_by_value(index, 0, tf.maximum(slots - 1, 0))
            padded = tf.pad(table, [[0, 0], [0, 1]])  # one slot even with no pieces
            return tf.gather(padded, index, batch_dims=1)

        no = tf.constant(-1, tf.int64)
        start = tf.where(answered, at(starts, first), no)
        end = tf.where(answered, at(ends, last), no)
        answer = char_spans(context, tf.maximum(start, 0), tf.maximum(end, 0))
        return {"answer": answer, "start": start, "end": end, "score": score}

    def tokenize(question, context):
        return pack_question_context(tokenizer, question, context).inputs

    return {"serving_default": (serve, [QUESTION, CONTEXT]),
            "tokenize": (tokenize, [QUESTION, CONTEXT])}


SPEC = register(TaskSpec(
    name="qa",
    description="extractive question answering: the answer span in a context",
    build_model=build_model,
    endpoints=endpoints,
    compile_model=compile_span_qa,
    read_data=read_data,
    evaluate=evaluate,
    data_format="SQuAD v1.1/v2.0 JSON",
))
