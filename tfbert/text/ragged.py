"""Small ragged-tensor helpers shared by the tokenizer and input packing.

Each is written with plain `tf.RaggedTensor.from_row_*(..., validate=False)`
constructors rather than `merge_dims` or slicing, which add validation
asserts to the graph (they would end up in every exported SavedModel).
"""

from __future__ import annotations

import tensorflow as tf


def merge_words(pieces: tf.RaggedTensor) -> tf.RaggedTensor:
    """`[batch, (words), (pieces)]` -> `[batch, (pieces)]`: a row's words joined.

    Same as `pieces.merge_dims(1, 2)`, without the asserts.

    Example:
        >>> merge_words(tf.ragged.constant([[[1, 2], [3]], [[4]]])).to_list()
        [[1, 2, 3], [4]]
    """
    return tf.RaggedTensor.from_row_splits(
        pieces.flat_values, tf.gather(pieces.values.row_splits, pieces.row_splits),
        validate=False,
    )


def keep_prefix(values: tf.RaggedTensor, keep: tf.Tensor) -> tf.RaggedTensor:
    """The first `keep[i]` items of each row `i` of a `[batch, (items)]` tensor.

    Args:
        values: ragged `[batch, (items)]`.
        keep: int `[batch]`, items to keep per row (more than the row has keeps it whole).

    Example:
        >>> keep_prefix(tf.ragged.constant([[1, 2, 3], [4]]), tf.constant([2, 5])).to_list()
        [[1, 2], [4]]
    """
    lengths = values.row_lengths()
    keep = tf.minimum(tf.cast(keep, lengths.dtype), lengths)
    position = tf.ragged.range(lengths).flat_values
    kept = position < tf.repeat(keep, lengths)
    return tf.RaggedTensor.from_row_lengths(
        tf.boolean_mask(values.flat_values, kept), keep, validate=False
    )


def exclusive_cumsum_per_row(values: tf.Tensor, row_splits: tf.Tensor) -> tf.Tensor:
    """For each item, the sum of the items before it in the same row.

    Args:
        values: 1-D numbers, the flat values of a ragged tensor.
        row_splits: its row partition.

    Example:
        >>> exclusive_cumsum_per_row(tf.constant([2, 3, 4]), tf.constant([0, 2, 3])).numpy()
        array([0, 2, 0], dtype=int32)
    """
    before = tf.cumsum(values, exclusive=True)
    # Index len(values) stands for an empty last row: it picks the appended total.
    with_total = tf.concat([before, tf.reduce_sum(values, keepdims=True)], axis=0)
    row_base = tf.gather(with_total, row_splits[:-1])
    return before - tf.repeat(row_base, row_splits[1:] - row_splits[:-1])


__all__ = ["exclusive_cumsum_per_row", "keep_prefix", "merge_words"]
