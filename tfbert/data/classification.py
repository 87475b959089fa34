"""Classification data: CSV, TSV or JSONL with `text`, optional `text_pair`, `label`."""

from __future__ import annotations

import csv
import dataclasses
import json
import os

import tensorflow as tf

from tfbert.errors import DataError


@dataclasses.dataclass
class ClassificationData:
    """Texts, optional pairs and label strings read from one file."""

    path: str
    texts: list[str]
    labels: list[str]
    pairs: list[str] | None = None

    def __len__(self) -> int:
        return len(self.texts)


def read_classification(path: str | os.PathLike) -> ClassificationData:
    """Read a `.csv`, `.tsv` or `.jsonl` file (by extension).

    CSV/TSV need a header row with `text` and `label` (and optionally
    `text_pair`); JSONL needs those keys on every line. Labels may be names or
    integers; they are kept as strings.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise DataError(f"{path}: no such file")
    ext = os.path.splitext(path)[1].lower()
    if ext == ".jsonl":
        rows = _read_jsonl(path)
    elif ext in (".csv", ".tsv"):
        rows = _read_delimited(path, "\t" if ext == ".tsv" else ",")
    else:
        raise DataError(f"{path}: unknown format {ext!r}; use .csv, .tsv or .jsonl")
    if not rows:
        raise DataError(f"{path}: no examples")
    has_pairs = [("text_pair" in row) for _, row in rows]
    if any(has_pairs) and not all(has_pairs):
        line = rows[has_pairs.index(False)][0]
        raise DataError(f"{path}:{line}: field 'text_pair' missing (other rows have it)")
    texts, labels, pairs = [], [], []
    for line, row in rows:
        for field in ("text", "label"):
            if field not in row or row[field] is None:
                raise DataError(f"{path}:{line}: field {field!r} missing")
        if not isinstance(row["text"], str):
            raise DataError(f"{path}:{line}: field 'text' must be a string")
        label = row["label"]
        if isinstance(label, bool) or not isinstance(label, (str, int)):
            raise DataError(f"{path}:{line}: field 'label' must be a name or an integer")
        label = str(label).strip()
        if not label:
            raise DataError(f"{path}:{line}: field 'label' is empty")
        texts.append(row["text"])
        labels.append(label)
        if all(has_pairs):
            pairs.append(str(row["text_pair"] or ""))
    return ClassificationData(path, texts, labels, pairs if all(has_pairs) else None)


def label_vocabulary(labels: list[str]) -> list[str]:
    """Label names in a stable order: numeric if all are integers, else sorted."""
    unique = set(labels)
    if all(label.lstrip("-").isdigit() for label in unique):
        return sorted(unique, key=int)
    return sorted(unique)


def label_ids(data: ClassificationData, names: list[str]) -> list[int]:
    index = {name: i for i, name in enumerate(names)}
    ids = []
    for i, label in enumerate(data.labels):
        if label not in index:
            raise DataError(f"{data.path}: example {i + 1}: label {label!r} is not one of the "
                            f"training labels {names}")
        ids.append(index[label])
    return ids


def classification_dataset(data: ClassificationData, tokenizer, names: list[str],
                           batch_size: int, shuffle: bool = False, seed: int = 0
                           ) -> tf.data.Dataset:
    """Batches of `(tokenized inputs, label id)`, tokenized in the tf.data graph.

    Each batch is padded to its own longest input (rounded to the tokenizer's
    bucket), so short texts cost short sequences.
    """
    ids = label_ids(data, names)
    columns = (data.texts, data.pairs if data.pairs is not None else data.texts)
    ds = tf.data.Dataset.from_tensor_slices((columns, ids))
    if shuffle:
        ds = ds.shuffle(len(data), seed=seed, reshuffle_each_iteration=True)
    has_pairs = data.pairs is not None

    def tokenize(columns, y):
        texts, pairs = columns
        return tokenizer(texts, pairs=pairs if has_pairs else None), y

    return ds.batch(batch_size).map(tokenize, num_parallel_calls=tf.data.AUTOTUNE).prefetch(
        tf.data.AUTOTUNE)


def _read_jsonl(path: str) -> list[tuple[int, dict]]:
    rows = []
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{path}:{line_no}: invalid JSON: {e.msg}") from None
            if not isinstance(row, dict):
                raise DataError(f"{path}:{line_no}: expected a JSON object")
            rows.append((line_no, row))
    return rows


def _read_delimited(path: str, delimiter: str) -> list[tuple[int, dict]]:
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f, delimiter=delimiter)
        header = reader.fieldnames or []
        for field in ("text", "label"):
            if field not in header:
                raise DataError(f"{path}:1: header has no {field!r} column (found {header})")
        rows = []
        for row in reader:
            if None in row:
                raise DataError(f"{path}:{reader.line_num}: more fields than the header")
            rows.append((reader.line_num, row))
    return rows
