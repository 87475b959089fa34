"""Dynamic masked-LM masking as TensorFlow ops (BERT's "masking procedure").

Masks are drawn inside the `tf.data` pipeline, one batch at a time, every
time a batch is read, so each epoch sees new masks (dynamic masking, as in
RoBERTa) and nothing is precomputed. The machinery is tensorflow-text's:
`tf_text.mask_language_model` gathers the chosen positions and labels and
scatters the new values back, on `[batch, (tokens)]` input or, for whole-word
masking, on `[batch, (words), (pieces)]` input; `tf_text.RandomItemSelector`
decides which ids are never chosen; `tf_text.MaskValuesChooser` implements
the 80/10/10 rule. Two pieces are written here because tf_text lacks them:

- Stateless randomness. tf_text draws with stateful ops
  (`tf.random.shuffle`, `tf.random.uniform`), whose results depend on the
  order in which parallel `map` calls happen to run, so "same seed -> same
  batches" would not hold, and a resumed run could not redraw the masks of the
  run it replaces. Here every draw is a stateless op seeded by the run seed
  and the batch's index in the stream. `RandomItemSelector` only lets one
  swap its per-row shuffle, which is told nothing about which row it
  shuffles (with whole words, every row is shuffled as `range(num_words)`), so
  rows of one batch cannot get their own stream: the selection is rewritten
  (`StatelessItemSelector`, vectorised over the batch). `MaskValuesChooser`
  is subclassed at its documented extension point, `get_mask_values`.
- A budget in tokens. `RandomItemSelector` counts and caps *items* (words
  with whole-word masking), but the model has room for
  `max_predictions_per_seq` *pieces*. As in Google's `create_pretraining_data.py`
  the number to predict is `min(max_predictions_per_seq, max(1, round(mask_rate
  * n)))` with `n` the maskable tokens of the sequence, and words are taken in
  a random order while their pieces fit.

`[CLS]`, `[SEP]` and `[PAD]` are never chosen. Each chosen token becomes
`[MASK]` 80% of the time, a random vocabulary id 10%, and stays as it is 10%
(decided per piece, as in Google's code).

Example:

>>> import tensorflow as tf
>>> cfg = MaskingConfig(vocab_size=100, mask_id=4, cls_id=2, sep_id=3, pad_id=0)
>>> ids = tf.ragged.constant([[2, 10, 11, 12, 13, 14, 15, 16, 3]])
>>> masked, positions, labels = mask_batch(ids, tf.ones_like(ids), tf.constant([0, 7]), cfg)
>>> positions.row_lengths().numpy().tolist()  # round(0.15 * 7 maskable tokens)
[1]
"""

from __future__ import annotations

import dataclasses

import tensorflow as tf
import tensorflow_text as tf_text

from tfbert.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class MaskingConfig:
    """What to mask and how.

    Args:
        vocab_size: random replacement ids are drawn from `[0, vocab_size)`.
        mask_id, cls_id, sep_id, pad_id: special token ids; `[CLS]`, `[SEP]`
            and `[PAD]` are never masked.
        mask_rate: fraction of the maskable tokens to predict.
        max_predictions_per_seq: most predictions per sequence (pieces).
        whole_word_masking: choose whole words; all their pieces are masked.
        mask_token_rate: share of chosen tokens replaced by `[MASK]`.
        random_token_rate: share replaced by a random id (the rest are kept).
    """

    vocab_size: int
    mask_id: int
    cls_id: int
    sep_id: int
    pad_id: int
    mask_rate: float = 0.15
    max_predictions_per_seq: int = 20
    whole_word_masking: bool = False
    mask_token_rate: float = 0.8
    random_token_rate: float = 0.1

    def __post_init__(self) -> None:
        if not 0.0 < self.mask_rate <= 1.0:
            raise ConfigError(f"mask_rate must be in (0, 1], got {self.mask_rate}")
        if self.max_predictions_per_seq < 1:
            raise ConfigError(
                f"max_predictions_per_seq must be >= 1, got {self.max_predictions_per_seq}")
        if (self.mask_token_rate < 0 or self.random_token_rate < 0
                or self.mask_token_rate + self.random_token_rate > 1):
            raise ConfigError("need mask_token_rate, random_token_rate >= 0 with sum <= 1")

    @classmethod
    def from_tokenizer(cls, tokenizer, **options) -> MaskingConfig:
        """Special ids and vocabulary size from a `BertTokenizer`; `options` as above."""
        return cls(vocab_size=tokenizer.vocab_size, mask_id=tokenizer.mask_id,
                   cls_id=tokenizer.cls_id, sep_id=tokenizer.sep_id, pad_id=tokenizer.pad_id,
                   **options)


class StatelessItemSelector(tf_text.RandomItemSelector):
    """tf_text's `RandomItemSelector` with stateless draws and a budget in tokens.

    Each row gets `min(max_tokens, max(1, round(rate * n)))` tokens to
    predict, `n` being its selectable tokens; items are visited in a random
    order (stateless, from `seed`) and taken while their pieces fit.

    Args:
        rate: fraction of selectable tokens to choose (`selection_rate`).
        max_tokens: most tokens chosen per row (`max_selections_per_batch`,
            which despite its name tf_text also applies per row).
        seed: int32/int64 `[2]` tensor; the same seed gives the same selection.
        unselectable_ids: ids never chosen (a word with one is never chosen).
    """

    def __init__(self, rate: float, max_tokens: int, seed: tf.Tensor,
                 unselectable_ids: list[int]):
        super().__init__(max_tokens, rate, unselectable_ids)
        self._seed = seed

    def get_selection_mask(self, input_ids: tf.RaggedTensor, axis: int = 1) -> tf.RaggedTensor:
        if axis != 1:
            raise ValueError("StatelessItemSelector selects along axis 1")
        selectable = self.get_selectable(input_ids, axis)  # bool [batch, (items)]
        if input_ids.ragged_rank > 1:
            pieces = tf.cast(input_ids.row_lengths(axis=2), tf.int32)
        else:
            pieces = tf.ones_like(selectable, tf.int32)
        pieces = tf.ragged.map_flat_values(tf.where, selectable, pieces, 0)
        maskable = tf.reduce_sum(pieces, axis=1)
        budget = tf.cast(tf.round(tf.cast(maskable, tf.float32) * self.selection_rate), tf.int32)
        budget = tf.minimum(self.max_selections_per_batch, tf.maximum(1, budget))
        draw = tf.random.stateless_uniform(tf.shape(selectable.flat_values), seed=self._seed)
        # Unselectable items sort after every selectable one, padding after both.
        score = selectable.with_flat_values(tf.where(selectable.flat_values, draw, 2.0))
        order = tf.argsort(score.to_tensor(default_value=3.0), axis=1)
        pieces_in_order = tf.gather(pieces.to_tensor(), order, batch_dims=1)
        chosen_in_order = ((tf.cumsum(pieces_in_order, axis=1) <= budget[:, tf.newaxis])
                           & (pieces_in_order > 0))
        chosen = tf.gather(chosen_in_order, tf.argsort(order, axis=1), batch_dims=1)
        return tf.RaggedTensor.from_tensor(chosen, lengths=selectable.row_lengths())


class StatelessMaskValuesChooser(tf_text.MaskValuesChooser):
    """tf_text's 80/10/10 `MaskValuesChooser`, drawing with stateless random ops.

    Args:
        vocab_size: random ids are drawn from `[0, vocab_size)`.
        mask_token: the `[MASK]` id.
        seed: int32/int64 `[2]` tensor; the same seed gives the same values.
        mask_token_rate: share replaced by `mask_token`.
        random_token_rate: share replaced by a random id.
    """

    def __init__(self, vocab_size, mask_token, seed, mask_token_rate=0.8,
                 random_token_rate=0.1):
        super().__init__(vocab_size, mask_token, mask_token_rate, random_token_rate)
        self._seed = seed

    def get_mask_values(self, masked_lm_ids):
        ids = masked_lm_ids.flat_values
        choice_seed, token_seed = tf.unstack(tf.random.experimental.stateless_split(self._seed))
        draw = tf.random.stateless_uniform(tf.shape(ids), seed=choice_seed)
        random_ids = tf.random.stateless_uniform(tf.shape(ids), seed=token_seed, minval=0,
                                                 maxval=self.vocab_size, dtype=tf.int32)
        values = tf.where(draw < self._mask_token_rate, tf.cast(self.mask_token, ids.dtype), ids)
        use_random = ((draw >= self._mask_token_rate)
                      & (draw < self._mask_token_rate + self.random_token_rate))
        values = tf.where(use_random, tf.cast(random_ids, ids.dtype), values)
        return masked_lm_ids.with_flat_values(values)


def mask_batch(input_ids: tf.RaggedTensor, word_starts: tf.RaggedTensor, seed: tf.Tensor,
               config: MaskingConfig
               ) -> tuple[tf.RaggedTensor, tf.RaggedTensor, tf.RaggedTensor]:
    """Mask a batch of packed sequences (`[CLS] a [SEP] b [SEP]`, unpadded).

    Args:
        input_ids: int32 `RaggedTensor` `[batch, (tokens)]` (or dense).
        word_starts: `[batch, (tokens)]`, nonzero where a word begins (used
            only with whole-word masking; special tokens are words of their own).
        seed: int32/int64 `[2]` stateless seed for this batch.
        config: what to mask.

    Returns:
        `(masked_ids, positions, labels)`, ragged: the input with the chosen
        tokens replaced `[batch, (tokens)]`, the chosen positions (ascending,
        int32) and the original ids there, `[batch, (n)]` with
        `n <= max_predictions_per_seq`.
    """
    if not isinstance(input_ids, tf.RaggedTensor):  # a batch of equal lengths
        input_ids = tf.RaggedTensor.from_tensor(input_ids)
    if not isinstance(word_starts, tf.RaggedTensor):
        word_starts = tf.RaggedTensor.from_tensor(word_starts)
    input_ids = tf.cast(input_ids, tf.int32)
    select_seed, choose_seed = tf.unstack(tf.random.experimental.stateless_split(seed))
    items = input_ids
    if config.whole_word_masking:
        # Regroup each row's tokens into words: [batch, (words), (pieces)].
        starts = tf.where(tf.not_equal(word_starts.flat_values, 0))[:, 0]
        words = tf.RaggedTensor.from_row_starts(input_ids.flat_values, starts)
        words_per_row = tf.math.segment_sum(
            tf.cast(tf.not_equal(word_starts.flat_values, 0), tf.int64),
            word_starts.value_rowids())
        items = tf.RaggedTensor.from_row_lengths(
            words, _pad_to(words_per_row, input_ids.nrows()))
    selector = StatelessItemSelector(
        config.mask_rate, config.max_predictions_per_seq, select_seed,
        [config.cls_id, config.sep_id, config.pad_id])
    chooser = StatelessMaskValuesChooser(
        config.vocab_size, config.mask_id, choose_seed, config.mask_token_rate,
        config.random_token_rate)
    masked, positions, labels = tf_text.mask_language_model(items, selector, chooser, axis=1)
    return masked, tf.cast(positions, tf.int32), labels


def _pad_to(values: tf.Tensor, length: tf.Tensor) -> tf.Tensor:
    # segment_sum drops trailing empty rows; an empty row has no words.
    return tf.pad(values, [[0, tf.cast(length, tf.int32) - tf.size(values)]])
