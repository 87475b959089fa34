"""Extractive QA data: SQuAD v1.1 / v2.0 JSON, features and tf.data.

File: `{"data": [{"paragraphs": [{"context": str, "qas": [{"id": str,
"question": str, "answers": [{"text": str, "answer_start": int}],
"is_impossible": bool}]}]}]}`. `is_impossible` (v2.0) marks a question whose
context holds no answer; its `answers` may be empty (v2.0's
`plausible_answers` are ignored). `answer_start` is a character offset into
the context and `text` must be found there.

Features: `[CLS] question [SEP] context [SEP]` (question = segment A, context
= segment B), packed by `tfbert.text.packing.pack_question_context`, the
function the exported model uses too. Labels are the positions of the first
and last wordpiece of the (first) answer; both 0 (`[CLS]`) for an
unanswerable question.

Long contexts: the context is cut to fit `max_seq_length` (no sliding window).
A training or validation example whose answer is not entirely inside the kept
part is dropped, and the number dropped is reported (`SquadFeatures.dropped`):
training it to point at `[CLS]` would teach "no answer" for answerable
questions. `evaluate` keeps every example; one whose answer was cut off
counts as wrong.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

import numpy as np
import tensorflow as tf

from tfbert.errors import DataError
from tfbert.text.packing import pack_question_context
from tfbert.text.tokenizer import BertTokenizer


@dataclasses.dataclass
class SquadExample:
    """One question; `answers` are `(text, char start)` pairs, empty if unanswerable."""

    id: str
    question: str
    context: str
    answers: list[tuple[str, int]]

    @property
    def answerable(self) -> bool:
        return bool(self.answers)


@dataclasses.dataclass
class SquadData:
    path: str
    examples: list[SquadExample]

    def __len__(self) -> int:
        return len(self.examples)


def read_squad(path: str | os.PathLike) -> SquadData:
    """Read a SQuAD v1.1 or v2.0 JSON file; errors name the file and the field.

    Example:

    >>> import json, tempfile
    >>> f = tempfile.NamedTemporaryFile("w", suffix=".json", delete=False)
    >>> json.dump({"data": [{"paragraphs": [{"context": "Bob is 3.", "qas": [
    ...     {"id": "q1", "question": "Age?", "answers": [{"text": "3", "answer_start": 7}]},
    ...     {"id": "q2", "question": "Dog?", "answers": [], "is_impossible": True}]}]}]}, f)
    >>> f.close()
    >>> [(e.id, e.answers) for e in read_squad(f.name).examples]
    [('q1', [('3', 7)]), ('q2', [])]
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise DataError(f"{path}: no such file")
    try:
        with open(path, encoding="utf-8") as f:
            root = json.load(f)
    except json.JSONDecodeError as e:
        raise DataError(f"{path}:{e.lineno}: invalid JSON: {e.msg}") from None
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 ({e.reason})") from None
    field = _Fields(path)
    examples = []
    for i, article in enumerate(field.items(root, "data", "data")):
        for j, paragraph in enumerate(field.items(article, "paragraphs", f"data[{i}].paragraphs")):
            where = f"data[{i}].paragraphs[{j}]"
            context = field.get(paragraph, "context", str, where)
            for k, qa in enumerate(field.items(paragraph, "qas", f"{where}.qas")):
                examples.append(_read_question(field, qa, context, f"{where}.qas[{k}]"))
    if not examples:
        raise DataError(f"{path}: no questions")
    return SquadData(path, examples)


class _Fields:
    """Typed access to JSON fields with errors that name the file and field path."""

    def __init__(self, path: str):
        self.path = path

    def error(self, where: str, message: str) -> DataError:
        return DataError(f"{self.path}: {where}: {message}")

    def get(self, obj: Any, key: str, kind: type, where: str, default: Any = ...) -> Any:
        if not isinstance(obj, dict):
            raise self.error(where.rsplit(".", 1)[0], "expected a JSON object")
        if key not in obj:
            if default is not ...:
                return default
            raise self.error(f"{where}.{key}", "missing")
        value = obj[key]
        if (kind is int and isinstance(value, bool)) or not isinstance(value, kind):
            raise self.error(f"{where}.{key}", f"expected {_KIND_NAMES[kind]}, got "
                             f"{type(value).__name__}")
        return value

    def items(self, obj: Any, key: str, where: str) -> list:
        parent = where.rsplit(".", 1)[0] if "." in where else where
        if not isinstance(obj, dict):
            raise self.error(parent, "expected a JSON object")
        if key not in obj:
            raise self.error(where, "missing")
        if not isinstance(obj[key], list):
            raise self.error(where, f"expected a list, got {type(obj[key]).__name__}")
        return obj[key]


_KIND_NAMES = {str: "a string", int: "an integer", bool: "true or false", list: "a list"}


def _read_question(field: _Fields, qa: Any, context: str, where: str) -> SquadExample:
    question = field.get(qa, "question", str, where)
    qid = field.get(qa, "id", str, where, default=where)
    impossible = field.get(qa, "is_impossible", bool, where, default=False)
    answers = []
    for n, answer in enumerate(field.items(qa, "answers", f"{where}.answers")):
        at = f"{where}.answers[{n}]"
        text = field.get(answer, "text", str, at)
        start = field.get(answer, "answer_start", int, at)
        if not text.strip():
            raise field.error(f"{at}.text", "empty answer")
        if not 0 <= start <= len(context) - len(text):
            raise field.error(f"{at}.answer_start",
                              f"{start} is outside the context ({len(context)} characters)")
        if context[start:start + len(text)] != text:
            raise field.error(f"{at}.answer_start",
                              f"the context at {start} reads "
                              f"{context[start:start + len(text)]!r}, not the answer {text!r}")
        answers.append((text, start))
    if impossible:
        answers = []
    elif not answers:
        raise field.error(f"{where}.answers", "no answer (set is_impossible for SQuAD v2.0 "
                          "questions without one)")
    return SquadExample(qid, question, context, answers)


@dataclasses.dataclass
class SquadFeatures:
    """Tokenized examples ready for `squad_dataset`."""

    question_ids: list[np.ndarray]
    context_ids: list[np.ndarray]
    start_positions: np.ndarray
    end_positions: np.ndarray
    example_index: np.ndarray
    dropped: int

    def __len__(self) -> int:
        return len(self.start_positions)


def answer_positions(starts: np.ndarray, ends: np.ndarray, answer_start: int,
                     answer_end: int) -> tuple[int, int] | None:
    """First and last context piece covering `[answer_start, answer_end)` characters.

    None when the answer is not entirely inside the pieces (context cut) or
    covers none of them.

    Example:

    >>> answer_positions(np.array([0, 4, 8]), np.array([3, 7, 9]), 4, 9)
    (1, 2)
    """
    if len(ends) == 0 or ends[-1] < answer_end:
        return None
    first = int(np.searchsorted(ends, answer_start, side="right"))
    last = int(np.searchsorted(starts, answer_end, side="left")) - 1
    return (first, last) if first <= last else None


def squad_features(data: SquadData, tokenizer: BertTokenizer, max_length: int | None = None,
                   chunk: int = 256) -> SquadFeatures:
    """Tokenize every example and map its first answer to token positions.

    Tokenization runs as TensorFlow ops, `chunk` examples at a time. Examples
    whose answer falls outside the kept context are dropped (see the module
    docstring).
    """
    questions, contexts, starts, ends, index = [], [], [], [], []
    dropped = 0
    for begin in range(0, len(data), chunk):
        batch = data.examples[begin:begin + chunk]
        packed = pack_question_context(tokenizer, [e.question for e in batch],
                                       [e.context for e in batch], max_length)
        rows = zip(batch, packed.question_ids.to_list(), packed.context_ids.to_list(),
                   packed.starts.to_list(), packed.ends.to_list(),
                   packed.context_start.numpy().tolist(), strict=True)
        for n, (example, q_ids, c_ids, c_starts, c_ends, offset) in enumerate(rows):
            if example.answerable:
                text, at = example.answers[0]
                # Surrounding spaces in an answer text are no part of any piece.
                begin_char = at + len(text) - len(text.lstrip())
                span = answer_positions(np.array(c_starts), np.array(c_ends), begin_char,
                                        at + len(text.rstrip()))
                if span is None:
                    dropped += 1
                    continue
                start, end = span[0] + offset, span[1] + offset
            else:
                start = end = 0
            questions.append(np.array(q_ids, np.int32))
            contexts.append(np.array(c_ids, np.int32))
            starts.append(start)
            ends.append(end)
            index.append(begin + n)
    return SquadFeatures(questions, contexts, np.array(starts, np.int32),
                         np.array(ends, np.int32), np.array(index, np.int64), dropped)


def squad_dataset(features: SquadFeatures, tokenizer: BertTokenizer, batch_size: int,
                  shuffle: bool = False, seed: int = 0,
                  max_length: int | None = None) -> tf.data.Dataset:
    """Batches of `(inputs, {"start": [B], "end": [B]})`, padded per batch to a bucket."""
    if not len(features):
        raise DataError("no training features: every answer lies past max_seq_length")

    def ragged(rows: list[np.ndarray]) -> tf.RaggedTensor:
        return tf.RaggedTensor.from_row_lengths(
            np.concatenate(rows).astype(np.int32), [len(r) for r in rows])

    ds = tf.data.Dataset.from_tensor_slices((
        (ragged(features.question_ids), ragged(features.context_ids)),
        {"start": features.start_positions, "end": features.end_positions},
    ))
    if shuffle:
        ds = ds.shuffle(len(features), seed=seed, reshuffle_each_iteration=True)

    def pack(segments, labels):
        return tokenizer.pack(list(segments), max_length), labels

    return ds.ragged_batch(batch_size).map(pack, num_parallel_calls=tf.data.AUTOTUNE).prefetch(
        tf.data.AUTOTUNE)
