"""Next-sentence-prediction pairs from tokenized documents.

The construction is Google BERT's (`create_pretraining_data.py`,
`create_instances_from_document`):

1. The budget is `seq_len - 3` tokens (room for `[CLS]`, `[SEP]`, `[SEP]`);
   with probability `short_seq_prob` a shorter target in `[2, budget]` is
   drawn, so the model also sees short inputs.
2. Sentences of a document are gathered into a chunk until the target is
   reached (or the document ends); a random split point cuts the chunk into
   segment A (the first sentences) and the actual continuation. One change:
   a chunk holds at least two sentences unless the document ends (Google's
   closes a chunk on one long sentence, and such chunks always get a random
   B, which skews the labels, most with a short target).
3. With probability 1/2 (always when the chunk has a single sentence, i.e. a
   document's last sentence on its own) B is a random stretch of another
   document (label 1, "random"); the unused sentences of the chunk are put
   back to start the next chunk. Otherwise B is the actual continuation
   (label 0, "is next" — the pretrainer's class 0). Labels come out close to
   50/50; short documents lean a little to "random" through their lone last
   sentences.
4. The pair is cut to the budget by removing tokens from the longer segment,
   from its front or back at random; both segments keep at least one token.

Memory stays bounded on any corpus: documents stream through a window of
`window_documents` recent documents, which is where random B segments come
from (Google's tool keeps the whole corpus in memory for that). A document is
processed once `window_documents // 2` newer ones have been read, so the
window holds documents from both sides of it. `dupe_factor` repeats each
document's pairs with fresh random choices (static duplication, as Google's
tool does; the MLM masks are dynamic anyway, see `masking`).

Tokens keep their word boundaries (`word_starts`) so whole-word masking can
find every piece of a word; a word cut by truncation becomes a word of its own.

Example:

>>> import numpy as np
>>> a = Sentence(np.array([10, 11], np.int32), np.array([True, False]))
>>> b = Sentence(np.array([20], np.int32), np.array([True]))
>>> pair = pack_pair(a, b, IS_NEXT, cls_id=2, sep_id=3)
>>> pair.input_ids.tolist(), pair.word_starts.tolist(), pair.segment_a_length
([2, 10, 11, 3, 20, 3], [True, True, False, True, True, True], 2)
>>> docs = [[Sentence(np.arange(n, n + 4, dtype=np.int32), np.ones(4, bool))
...          for n in range(0, 40, 4)] for _ in range(3)]
>>> pairs = list(generate_pairs(docs, seq_len=16, cls_id=2, sep_id=3, seed=0))
>>> all(len(p.input_ids) <= 16 for p in pairs), sorted({p.next_sentence_label for p in pairs})
(True, [0, 1])
"""

from __future__ import annotations

import collections
import dataclasses
import random
from collections.abc import Iterable, Iterator, Sequence

import numpy as np

from tfbert.errors import ConfigError

IS_NEXT, RANDOM_NEXT = 0, 1


@dataclasses.dataclass
class Sentence:
    """One tokenized sentence: WordPiece ids and where each word starts."""

    ids: np.ndarray  # int32 [n]
    word_starts: np.ndarray  # bool [n]

    def __len__(self) -> int:
        return len(self.ids)


Document = list[Sentence]


@dataclasses.dataclass
class PretrainingPair:
    """A packed `[CLS] A [SEP] B [SEP]` sequence and its NSP label, before masking.

    Attributes:
        input_ids: int32 `[T]`, T <= seq_len.
        word_starts: bool `[T]`, True where a word begins (specials included).
        segment_a_length: tokens in A (type ids are 0 up to and including the
            first `[SEP]`, 1 after).
        next_sentence_label: 0 = B follows A, 1 = B is random.
    """

    input_ids: np.ndarray
    word_starts: np.ndarray
    segment_a_length: int
    next_sentence_label: int


def generate_pairs(documents: Iterable[Document], seq_len: int, cls_id: int, sep_id: int,
                   seed: int = 0, short_seq_prob: float = 0.1, dupe_factor: int = 1,
                   window_documents: int = 1000) -> Iterator[PretrainingPair]:
    """Stream NSP pairs from tokenized documents (see the module docstring).

    Args:
        documents: lists of non-empty `Sentence`s, in corpus order.
        seq_len: packed length budget, `[CLS]`/`[SEP]` included (>= 5).
        cls_id, sep_id: special token ids.
        seed: the same seed and documents give the same pairs.
        short_seq_prob: probability of a shorter random target length.
        dupe_factor: times each document is turned into pairs.
        window_documents: documents kept for drawing random B segments.

    Yields:
        `PretrainingPair`s, in document order.
    """
    if seq_len < 5:
        raise ConfigError(f"seq_len {seq_len} is too short for a sentence pair (need >= 5)")
    if dupe_factor < 1 or window_documents < 2:
        raise ConfigError("dupe_factor must be >= 1 and window_documents >= 2")
    rng = random.Random(seed)
    window: collections.deque[Document] = collections.deque(maxlen=window_documents)
    pending: collections.deque[Document] = collections.deque()

    def pairs_of(document: Document) -> Iterator[PretrainingPair]:
        for _ in range(dupe_factor):
            for a, b, label in document_pairs(document, window, seq_len - 3, short_seq_prob,
                                              rng):
                yield pack_pair(a, b, label, cls_id, sep_id)

    for document in documents:
        if not document:
            continue
        window.append(document)
        pending.append(document)
        if len(pending) > window_documents // 2:
            yield from pairs_of(pending.popleft())
    while pending:
        yield from pairs_of(pending.popleft())


def document_pairs(document: Document, window: Sequence[Document], max_tokens: int,
                   short_seq_prob: float, rng: random.Random
                   ) -> Iterator[tuple[Sentence, Sentence, int]]:
    """Google's `create_instances_from_document` on one document.

    Args:
        document: its sentences.
        window: documents to draw random B segments from (may contain `document`).
        max_tokens: budget for A + B (`seq_len - 3`).
        short_seq_prob: probability of a shorter random target length.
        rng: the random source.

    Yields:
        `(a, b, label)` with both segments non-empty and `len(a) + len(b) <= max_tokens`.
    """
    target = max_tokens
    if rng.random() < short_seq_prob:
        target = rng.randint(2, max_tokens)
    chunk: list[Sentence] = []
    chunk_tokens = 0
    i = 0
    while i < len(document):
        chunk.append(document[i])
        chunk_tokens += len(document[i])
        last = i == len(document) - 1
        # Deviation from Google's code: a chunk is not closed on a single
        # sentence while the document goes on (a long sentence, or a short
        # target). Google's always gives such a chunk a random B, which skews
        # the labels towards "random"; one more sentence allows a real split.
        if last or (chunk_tokens >= target and len(chunk) >= 2):
            a_end = rng.randint(1, len(chunk) - 1) if len(chunk) >= 2 else 1
            a = _concat(chunk[:a_end])
            if len(chunk) == 1 or rng.random() < 0.5:
                label = RANDOM_NEXT
                b = _random_segment(window, document, target - len(a), rng)
                i -= len(chunk) - a_end  # put the unused sentences back
            else:
                label = IS_NEXT
                b = _concat(chunk[a_end:])
            a, b = truncate_pair(a, b, max_tokens, rng)
            yield a, b, label
            chunk, chunk_tokens = [], 0
        i += 1


def truncate_pair(a: Sentence, b: Sentence, max_tokens: int, rng: random.Random
                  ) -> tuple[Sentence, Sentence]:
    """Cut tokens from the longer segment (front or back at random) until both fit.

    Both keep at least one token when `max_tokens >= 2` and both start
    non-empty. A word cut at the front becomes a word of its own.
    """
    a_lo, a_hi, b_lo, b_hi = 0, len(a), 0, len(b)
    while (a_hi - a_lo) + (b_hi - b_lo) > max_tokens:
        front = rng.random() < 0.5
        if a_hi - a_lo > b_hi - b_lo:  # ties cut B, as Google's code does
            a_lo, a_hi = (a_lo + 1, a_hi) if front else (a_lo, a_hi - 1)
        else:
            b_lo, b_hi = (b_lo + 1, b_hi) if front else (b_lo, b_hi - 1)
    return _slice(a, a_lo, a_hi), _slice(b, b_lo, b_hi)


def pack_pair(a: Sentence, b: Sentence, label: int, cls_id: int, sep_id: int
              ) -> PretrainingPair:
    """`[CLS] a [SEP] b [SEP]` with word starts; specials are words of their own."""
    cls, sep = np.array([cls_id], np.int32), np.array([sep_id], np.int32)
    start = np.ones(1, bool)
    return PretrainingPair(
        input_ids=np.concatenate([cls, a.ids, sep, b.ids, sep]).astype(np.int32),
        word_starts=np.concatenate([start, a.word_starts, start, b.word_starts, start]),
        segment_a_length=len(a),
        next_sentence_label=label,
    )


def _random_segment(window: Sequence[Document], current: Document, target: int,
                    rng: random.Random) -> Sentence:
    # As Google's code: ten tries to avoid the current document; a corpus of
    # one document falls back to it (the label then says "random" anyway).
    other = current
    for _ in range(10):
        other = window[rng.randint(0, len(window) - 1)]
        if other is not current:
            break
    start = rng.randint(0, len(other) - 1)
    sentences: list[Sentence] = []
    tokens = 0
    for sentence in other[start:]:
        sentences.append(sentence)
        tokens += len(sentence)
        if tokens >= target:
            break
    return _concat(sentences)


def _concat(sentences: Sequence[Sentence]) -> Sentence:
    if len(sentences) == 1:
        return sentences[0]
    return Sentence(np.concatenate([s.ids for s in sentences]),
                    np.concatenate([s.word_starts for s in sentences]))


def _slice(segment: Sentence, lo: int, hi: int) -> Sentence:
    if lo == 0 and hi == len(segment):
        return segment
    starts = segment.word_starts[lo:hi].copy()
    starts[0] = True
    return Sentence(segment.ids[lo:hi], starts)
