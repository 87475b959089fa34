"""Character offsets into the original text, as TensorFlow graph ops.

`BertTokenizer.tokenize_words_with_offsets` normalises each character of the
text on its own and remembers how many bytes each one became; the helpers
here map byte positions in that normalised text back to character indices of
the original, and cut spans of the original text out again.

Offsets are Unicode code-point indices (Python `str` indices) into the text
as decoded with every invalid UTF-8 byte sequence replaced by U+FFFD; for
valid UTF-8 that is simply the text.
"""

from __future__ import annotations

import tensorflow as tf


def decode_text(texts: tf.Tensor, replace_nul: bool = False) -> tf.Tensor:
    """Texts as valid UTF-8: invalid bytes become U+FFFD.

    This is the text that offsets index. Serving requests may carry any
    bytes, so the tokenizer and `char_spans` both start here.

    Args:
        texts: string `[batch]`.
        replace_nul: also turn each NUL character into U+FFFD, one character
            for one, so offsets do not change. The tokenizer needs this
            because `regex_split` stops at a NUL byte. Its clean-up step then
            drops U+FFFD, as the reference tokenizer drops both characters.

    Example:
        >>> decode_text(tf.constant([b"a\\xffb\\x00"]), replace_nul=True).numpy().tolist()
        [b'a\\xef\\xbf\\xbdb\\xef\\xbf\\xbd']
    """
    texts = tf.strings.unicode_transcode(texts, "UTF-8", "UTF-8", errors="replace",
                                         replacement_char=0xFFFD)
    if replace_nul:
        texts = tf.strings.regex_replace(texts, r"\x00", "\ufffd")
    return texts


def byte_to_char(char_bytes: tf.RaggedTensor, row: tf.Tensor, byte_start: tf.Tensor,
                 byte_end: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Maps spans of bytes of a normalised text to spans of its source characters.

    Row `r` of `char_bytes` lists, for each source character, how many bytes
    it became once normalised (0 for a dropped character); the normalised text
    is their concatenation. A span starts at the character holding its first
    byte and ends after the one holding its last, so dropped characters at
    either edge stay outside it.

    Args:
        char_bytes: int64 `[rows, (chars)]` normalised byte lengths.
        row: int64 `[n]`, the row of each span.
        byte_start, byte_end: int64 `[n]`, the span in the row's normalised
            bytes (end exclusive, start < end).

    Returns:
        int64 `[n]` character start and end (exclusive) within the row.

    Example:
        >>> lengths = tf.ragged.constant([[1, 0, 2, 1]], tf.int64)  # "a", dropped, "ß", "c"
        >>> s, e = byte_to_char(lengths, tf.constant([0, 0], tf.int64),
        ...                     tf.constant([0, 1], tf.int64), tf.constant([3, 4], tf.int64))
        >>> s.numpy().tolist(), e.numpy().tolist()
        ([0, 2], [3, 4])
    """
    ends = tf.cumsum(char_bytes.flat_values)  # global byte end of every character
    row_byte_base = tf.concat([tf.zeros([1], ends.dtype), ends], axis=0)
    first_char = tf.gather(char_bytes.row_splits, row)
    base = tf.gather(row_byte_base, first_char)

    def char_holding(byte):
        # The first character whose end lies beyond `byte`; empty ones never do.
        return tf.searchsorted(ends, base + byte, side="right", out_type=tf.int64) - first_char

    return char_holding(byte_start), char_holding(byte_end - 1) + 1


def char_spans(texts: tf.Tensor, starts: tf.Tensor | tf.RaggedTensor,
               ends: tf.Tensor | tf.RaggedTensor) -> tf.Tensor | tf.RaggedTensor:
    """The substrings `text[start:end]` (character offsets) of each row's text.

    Args:
        texts: string `[batch]`.
        starts, ends: int `[batch]` or ragged `[batch, (spans)]` offsets as
            returned by the tokenizer's `*_with_offsets` methods; end exclusive.

    Example:
        >>> char_spans(tf.constant(["héllo wörld"]), tf.ragged.constant([[0, 6]]),
        ...            tf.ragged.constant([[5, 11]])).to_list()
        [[b'h\\xc3\\xa9llo', b'w\\xc3\\xb6rld']]
    """
    texts = decode_text(texts)
    if isinstance(starts, tf.RaggedTensor):
        rows = tf.gather(texts, starts.value_rowids())
        return starts.with_flat_values(char_spans(rows, starts.flat_values, ends.flat_values))
    starts = tf.cast(starts, tf.int64)
    lengths = tf.maximum(tf.cast(ends, tf.int64) - starts, 0)
    return tf.strings.substr(texts, starts, lengths, unit="UTF8_CHAR")
