"""Pretraining input: corpus -> NSP pairs -> dynamically masked batches (`tf.data`).

Two ways in:

- Corpus files (`pretraining_dataset(["wiki/*.txt"], tokenizer, ...)`): the
  corpus is tokenized and turned into pairs in memory once, then served.
- A prepared directory (`prepare_pretraining_data(files, tokenizer, DIR)`,
  then `pretraining_dataset(DIR, ...)`): for corpora larger than memory. Pair
  construction streams document by document into sharded TFRecords of
  *unmasked* pairs; masking still happens at read time.

Both give the same pairs for the same corpus, tokenizer, `seq_len` and
`seed`. The dataset yields `(features, labels, sample_weights)` as
`tfbert.compile_pretrainer` expects:

- features: `input_word_ids`, `input_mask`, `input_type_ids` int32
  `[batch, seq_len]`, `masked_lm_positions` int32 `[batch, P]`;
- labels: `{"mlm": masked_lm_ids [batch, P], "nsp": next_sentence_labels [batch]}`
  (NSP class 0 = "B follows A");
- sample weights: `{"mlm": masked_lm_weights [batch, P], "nsp": ones [batch]}`
  (0 on padded predictions; Keras needs an entry for every output),

with `P = max_predictions_per_seq`. Batches have a fixed shape (the last
partial batch is dropped), which XLA wants.

Determinism: pair construction, shuffling and masking are all seeded; the
masks of a batch come from stateless ops keyed on `(seed, batch index in the
stream)`. So the same seed gives the same batches, each pass over the data
gets new masks, and `start_batch=k` gives exactly batches `k, k+1, ...` of
the full stream — which is how a resumed run picks up its data position.

Example:

>>> import os, tempfile
>>> from tfbert.text import BertTokenizer
>>> tok = BertTokenizer(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "cat", "sat", "."])
>>> path = os.path.join(tempfile.mkdtemp(), "corpus.txt")
>>> _ = open(path, "w").write("The cat sat.\\nThe cat.\\n\\nThe cat sat.\\n" * 20)
>>> ds = pretraining_dataset([path], tok, seq_len=16, batch_size=4, max_predictions_per_seq=3)
>>> features, labels, weights = next(iter(ds))
>>> features["input_word_ids"].shape.as_list(), labels["mlm"].shape.as_list()
([4, 16], [4, 3])
"""

from __future__ import annotations

import dataclasses
import glob
import hashlib
import json
import os
import tempfile
from collections.abc import Iterable, Iterator, Sequence

import numpy as np
import tensorflow as tf

from tfbert.data.masking import MaskingConfig, mask_batch
from tfbert.data.nsp_pairs import Document, PretrainingPair, Sentence, generate_pairs
from tfbert.errors import ConfigError, DataError
from tfbert.files import write_json_atomically
from tfbert.text.corpus import LineProgress, expand_corpus_files, read_documents

METADATA_FILE = "pretraining_data.json"
_FORMAT = "tfbert.pretraining_pairs"
_FORMAT_VERSION = 1
# Sentences per tokenizer call: amortises op dispatch, keeps memory flat.
_LINES_PER_BATCH = 2048


@dataclasses.dataclass(frozen=True)
class PairOptions:
    """How pairs are built from a corpus (Google's `create_pretraining_data.py` flags).

    Args:
        seq_len: packed length, `[CLS]`/`[SEP]` included.
        seed: seed of the pair construction.
        short_seq_prob: probability of a shorter random target length.
        dupe_factor: times each document is turned into pairs.
        window_documents: documents kept in memory to draw random B segments from.
    """

    seq_len: int = 128
    seed: int = 0
    short_seq_prob: float = 0.1
    dupe_factor: int = 1
    window_documents: int = 1000


@dataclasses.dataclass
class PairSet:
    """NSP pairs held in memory as flat arrays (see `build_pairs`)."""

    input_ids: np.ndarray  # int32, all pairs concatenated
    word_starts: np.ndarray  # bool, same length
    lengths: np.ndarray  # int64 [num_pairs]
    segment_a_lengths: np.ndarray  # int32 [num_pairs]
    next_sentence_labels: np.ndarray  # int32 [num_pairs]
    seq_len: int

    @property
    def num_pairs(self) -> int:
        return len(self.lengths)

    @classmethod
    def from_pairs(cls, pairs: Iterable[PretrainingPair], seq_len: int) -> PairSet:
        pairs = list(pairs)
        if not pairs:
            raise DataError("the corpus gave no sentence pairs (no document has text)")
        return cls(
            input_ids=np.concatenate([p.input_ids for p in pairs]).astype(np.int32),
            word_starts=np.concatenate([p.word_starts for p in pairs]).astype(bool),
            lengths=np.array([len(p.input_ids) for p in pairs], np.int64),
            segment_a_lengths=np.array([p.segment_a_length for p in pairs], np.int32),
            next_sentence_labels=np.array([p.next_sentence_label for p in pairs], np.int32),
            seq_len=seq_len,
        )

    def __iter__(self) -> Iterator[PretrainingPair]:
        ends = np.cumsum(self.lengths)
        for i, end in enumerate(ends):
            start = end - self.lengths[i]
            yield PretrainingPair(self.input_ids[start:end], self.word_starts[start:end],
                                  int(self.segment_a_lengths[i]),
                                  int(self.next_sentence_labels[i]))


@dataclasses.dataclass(frozen=True)
class PreparedData:
    """A directory written by `prepare_pretraining_data` (read with `open_prepared`)."""

    directory: str
    files: tuple[str, ...]
    num_pairs: int
    seq_len: int
    metadata: dict


def tokenize_documents(documents: Iterable[list[str]], tokenizer,
                       lines_per_batch: int = _LINES_PER_BATCH) -> Iterator[Document]:
    """Tokenize documents (lists of sentence strings) into `Sentence`s with word starts.

    Sentences of several documents share one tokenizer call. Sentences that
    tokenize to nothing are dropped, and documents left empty are skipped.

    Args:
        documents: e.g. `tfbert.text.corpus.read_documents(files)`.
        tokenizer: a `tfbert.text.BertTokenizer`.
        lines_per_batch: sentences per tokenizer call.
    """
    batch: list[list[str]] = []
    lines = 0
    for document in documents:
        batch.append(document)
        lines += len(document)
        if lines >= lines_per_batch:
            yield from _tokenize_batch(batch, tokenizer)
            batch, lines = [], 0
    if batch:
        yield from _tokenize_batch(batch, tokenizer)


def _tokenize_batch(documents: list[list[str]], tokenizer) -> Iterator[Document]:
    ragged = tokenizer.tokenize_words([s for d in documents for s in d])
    pieces = ragged.flat_values.numpy().astype(np.int32)
    word_splits = ragged.values.row_splits.numpy()  # pieces of each word
    line_splits = word_splits[ragged.row_splits.numpy()]  # pieces of each sentence
    word_starts = np.zeros(len(pieces), bool)
    word_starts[word_splits[:-1][np.diff(word_splits) > 0]] = True
    line = 0
    for document in documents:
        sentences = []
        for _ in document:
            lo, hi = line_splits[line], line_splits[line + 1]
            line += 1
            if hi > lo:
                sentences.append(Sentence(pieces[lo:hi], word_starts[lo:hi]))
        if sentences:
            yield sentences


def corpus_pairs(corpus: str | Sequence[str], tokenizer, options: PairOptions,
                 progress: bool = False) -> Iterator[PretrainingPair]:
    """Stream the NSP pairs of corpus files (globs allowed), with an optional progress bar.

    Raises:
        DataError: a missing, unreadable or empty file, naming it.
    """
    files = expand_corpus_files(corpus)
    bar = LineProgress(files, enabled=progress)
    documents = tokenize_documents(read_documents(files, bar), tokenizer)
    yield from generate_pairs(documents, options.seq_len, tokenizer.cls_id, tokenizer.sep_id,
                              seed=options.seed, short_seq_prob=options.short_seq_prob,
                              dupe_factor=options.dupe_factor,
                              window_documents=options.window_documents)
    bar.done()


def build_pairs(corpus: str | Sequence[str], tokenizer, options: PairOptions = PairOptions(),
                progress: bool = False) -> PairSet:
    """All NSP pairs of a corpus, in memory.

    Args:
        corpus: corpus files or globs (BERT format: one sentence per line, a blank line between
            documents).
        tokenizer: a `tfbert.text.BertTokenizer`.
        options: pair construction settings.
        progress: show a progress bar over the corpus lines.

    Raises:
        DataError: a missing, unreadable or empty file, naming it.

    Example:

    >>> import os, tempfile
    >>> from tfbert.text import BertTokenizer
    >>> tok = BertTokenizer(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "cat", "sat"])
    >>> path = os.path.join(tempfile.mkdtemp(), "corpus.txt")
    >>> _ = open(path, "w").write("The cat sat.\\nThe cat.\\n\\nThe cat sat.\\n" * 20)
    >>> pairs = build_pairs([path], tok, PairOptions(seq_len=16))
    >>> pairs.num_pairs, pairs.seq_len
    (34, 16)
    """
    return PairSet.from_pairs(corpus_pairs(corpus, tokenizer, options, progress),
                              options.seq_len)


def prepare_pretraining_data(corpus: str | Sequence[str], tokenizer, output_dir: str,
                             seq_len: int = 128, shards: int = 16, seed: int = 0,
                             short_seq_prob: float = 0.1, dupe_factor: int = 1,
                             window_documents: int = 1000, progress: bool = True
                             ) -> PreparedData:
    """Stream a corpus into sharded TFRecords of unmasked NSP pairs.

    Memory stays bounded: documents are read, tokenized and paired as they
    stream by (random B segments come from a window of `window_documents`
    documents). Pairs go round-robin to `shards` files; `pretraining_data.json`
    (pair count, settings, vocabulary fingerprint) is written last, so a
    directory without it is incomplete and is refused by the reader.

    Args:
        corpus: corpus files or globs.
        tokenizer: a `tfbert.text.BertTokenizer` (the one training will use).
        output_dir: directory for `pairs-XXXXX-of-YYYYY.tfrecord` and the metadata.
        seq_len: packed length the pairs are built for.
        shards: number of TFRecord files (more shards read in parallel).
        seed, short_seq_prob, dupe_factor, window_documents: see `PairOptions`.
        progress: show a progress bar over the corpus lines.

    Returns:
        the prepared data, as `open_prepared(output_dir)` would read it.

    Raises:
        DataError: a missing, unreadable or empty file, naming it.

    Example:

    >>> import os, tempfile
    >>> from tfbert.text import BertTokenizer
    >>> tok = BertTokenizer(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "cat", "sat"])
    >>> path = os.path.join(tempfile.mkdtemp(), "corpus.txt")
    >>> _ = open(path, "w").write("The cat sat.\\nThe cat.\\n\\nThe cat sat.\\n" * 20)
    >>> out = os.path.join(tempfile.mkdtemp(), "pairs")
    >>> prepared = prepare_pretraining_data([path], tok, out, seq_len=16, shards=2, progress=False)
    >>> prepared.num_pairs == build_pairs([path], tok, PairOptions(seq_len=16)).num_pairs
    True
    >>> sorted(os.listdir(out))
    ['pairs-00000-of-00002.tfrecord', 'pairs-00001-of-00002.tfrecord', 'pretraining_data.json']
    >>> ds = pretraining_dataset(out, tok, seq_len=16, batch_size=4)
    """
    if shards < 1:
        raise ConfigError(f"shards must be >= 1, got {shards}")
    options = PairOptions(seq_len, seed, short_seq_prob, dupe_factor, window_documents)
    files = expand_corpus_files(corpus)
    os.makedirs(output_dir, exist_ok=True)
    names = [f"pairs-{i:05d}-of-{shards:05d}.tfrecord" for i in range(shards)]
    count = 0
    with tempfile.TemporaryDirectory(dir=output_dir, prefix=".tmp-prepare-") as tmp:
        writers = [tf.io.TFRecordWriter(os.path.join(tmp, name)) for name in names]
        try:
            for count, pair in enumerate(corpus_pairs(files, tokenizer, options, progress), 1):
                writers[(count - 1) % shards].write(_serialize(pair))
        finally:
            for writer in writers:
                writer.close()
        if count == 0:
            raise DataError(f"{', '.join(files)}: the corpus gave no sentence pairs")
        metadata_path = os.path.join(output_dir, METADATA_FILE)
        if os.path.exists(metadata_path):  # replacing an earlier preparation
            os.remove(metadata_path)
        for stale in glob.glob(os.path.join(output_dir, "pairs-*.tfrecord")):
            os.remove(stale)
        for name in names:
            os.replace(os.path.join(tmp, name), os.path.join(output_dir, name))
    metadata = {
        "format": _FORMAT, "version": _FORMAT_VERSION, "num_pairs": count, "files": names,
        **dataclasses.asdict(options), "corpus": [os.path.abspath(f) for f in files],
        **tokenizer_fingerprint(tokenizer),
    }
    write_json_atomically(os.path.join(output_dir, METADATA_FILE), metadata)
    return open_prepared(output_dir)


def tokenizer_fingerprint(tokenizer) -> dict:
    """What prepared pairs depend on: vocabulary (hashed), its size, and casing."""
    digest = hashlib.sha256("\n".join(tokenizer.vocab).encode("utf-8")).hexdigest()
    return {"vocab_size": tokenizer.vocab_size, "vocab_sha256": digest,
            "lowercase": tokenizer.lowercase}


def is_prepared_dir(path: str) -> bool:
    """True if `path` is a directory written by `prepare_pretraining_data`."""
    return os.path.isfile(os.path.join(os.fspath(path), METADATA_FILE))


def open_prepared(directory: str) -> PreparedData:
    """Read and check a prepared directory's metadata.

    Raises:
        DataError: no (or bad) `pretraining_data.json`, or a missing shard.
    """
    directory = os.fspath(directory)
    path = os.path.join(directory, METADATA_FILE)
    try:
        with open(path, encoding="utf-8") as f:
            metadata = json.load(f)
    except FileNotFoundError:
        raise DataError(f"{directory}: not a prepared pretraining directory (no "
                        f"{METADATA_FILE}; prepare it again)") from None
    except (OSError, json.JSONDecodeError) as e:
        raise DataError(f"{path}: cannot read: {e}") from None
    if metadata.get("format") != _FORMAT or metadata.get("version") != _FORMAT_VERSION:
        raise DataError(f"{path}: not tfbert pretraining data of version {_FORMAT_VERSION}")
    files = tuple(os.path.join(directory, name) for name in metadata["files"])
    missing = [f for f in files if not os.path.isfile(f)]
    if missing:
        raise DataError(f"{missing[0]}: shard listed in {METADATA_FILE} is missing")
    return PreparedData(directory, files, int(metadata["num_pairs"]), int(metadata["seq_len"]),
                        metadata)


def load_pairs(corpus: str | Sequence[str] | PairSet | PreparedData, tokenizer,
               options: PairOptions = PairOptions(), progress: bool = False
               ) -> PairSet | PreparedData:
    """Resolve a pair source: a prepared directory, or corpus files built in memory.

    A prepared directory is checked against `tokenizer` and `options.seq_len`.

    Raises:
        DataError: bad corpus files, or prepared data made for another
            vocabulary, casing or sequence length.
    """
    if isinstance(corpus, PairSet | PreparedData):
        source = corpus
    else:
        paths = [corpus] if isinstance(corpus, str | os.PathLike) else list(corpus)
        if len(paths) == 1 and os.path.isdir(paths[0]):
            source = open_prepared(os.fspath(paths[0]))
        else:
            return build_pairs(paths, tokenizer, options, progress)
    if source.seq_len != options.seq_len:
        raise DataError(f"{_name(source)}: pairs were built for seq_len {source.seq_len}, "
                        f"not {options.seq_len}; prepare the corpus again")
    if isinstance(source, PreparedData):
        expected = tokenizer_fingerprint(tokenizer)
        for key, value in expected.items():
            if source.metadata.get(key) != value:
                raise DataError(f"{source.directory}: prepared with a different tokenizer "
                                f"({key} differs); prepare the corpus again")
    return source


def pairs_dataset(source: PairSet | PreparedData, shuffle: bool = True, seed: int = 0,
                  repeat: bool = False, shuffle_buffer: int = 10_000) -> tf.data.Dataset:
    """The unmasked pairs as a dataset of dicts (`input_ids`, `word_starts`,
    `segment_a_length`, `next_sentence_label`).

    Args:
        source: from `load_pairs`/`build_pairs`/`open_prepared`.
        shuffle: shuffle (every pass differently, deterministically from `seed`).
            In memory all pairs are shuffled; TFRecords shuffle their shard
            order and a `shuffle_buffer` of pairs.
        seed: shuffle seed.
        repeat: repeat forever.
        shuffle_buffer: pairs in the TFRecord shuffle buffer.
    """
    if isinstance(source, PairSet):
        return _memory_pairs(source, shuffle, seed, repeat)
    files = tf.data.Dataset.from_tensor_slices(list(source.files))
    if shuffle:
        files = files.shuffle(len(source.files), seed=seed, reshuffle_each_iteration=True)
    if repeat:
        files = files.repeat()
    records = files.interleave(tf.data.TFRecordDataset, cycle_length=min(len(source.files), 8),
                               num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    if shuffle:
        records = records.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    return records.map(_parse, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


def pretraining_dataset(corpus: str | Sequence[str] | PairSet | PreparedData, tokenizer,
                        seq_len: int = 128, batch_size: int = 32, mask_rate: float = 0.15,
                        max_predictions_per_seq: int = 20, whole_word_masking: bool = False,
                        seed: int = 0, shuffle: bool = True, repeat: bool = True,
                        start_batch: int = 0, pair_options: PairOptions | None = None,
                        progress: bool = False) -> tf.data.Dataset:
    """Batches of dynamically masked NSP pairs for `model.fit` on a pretrainer.

    Args:
        corpus: corpus files/globs, a prepared directory, or a loaded source
            (`load_pairs`; pass one when building several datasets).
        tokenizer: a `tfbert.text.BertTokenizer`.
        seq_len: padded length of every sequence.
        batch_size: sequences per batch (global batch under a distribution strategy).
        mask_rate: fraction of maskable tokens to predict (BERT: 0.15).
        max_predictions_per_seq: most predictions per sequence (P).
        whole_word_masking: mask all pieces of a chosen word.
        seed: seeds shuffling and masks (and pair construction from files).
        shuffle: shuffle the pairs.
        repeat: repeat forever (use `steps_per_epoch` in `fit`).
        start_batch: skip this many batches of the stream (resuming).
        pair_options: pair construction settings for corpus files; default
            `PairOptions(seq_len, seed)`.
        progress: progress bar while building pairs from corpus files.

    Returns:
        a `tf.data.Dataset` of `(features, labels, sample_weights)` (module docstring).

    Raises:
        DataError: bad corpus input, naming the file.
    """
    options = pair_options or PairOptions(seq_len=seq_len, seed=seed)
    if options.seq_len != seq_len:
        raise ConfigError(f"pair_options.seq_len {options.seq_len} != seq_len {seq_len}")
    source = load_pairs(corpus, tokenizer, options, progress)
    masking = MaskingConfig.from_tokenizer(
        tokenizer, mask_rate=mask_rate, max_predictions_per_seq=max_predictions_per_seq,
        whole_word_masking=whole_word_masking)
    batches = pairs_dataset(source, shuffle=shuffle, seed=seed, repeat=repeat)
    batches = batches.ragged_batch(batch_size, drop_remainder=True).enumerate()
    if start_batch:
        batches = batches.skip(start_batch)

    def to_model_inputs(index, batch):
        return _model_inputs(batch, tf.stack([tf.constant(seed, tf.int64), index]), masking,
                             seq_len, batch_size, tokenizer.pad_id)

    return (batches.map(to_model_inputs, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
            .prefetch(tf.data.AUTOTUNE))


def batches_per_pass(source: PairSet | PreparedData, batch_size: int) -> int:
    """Full batches in one pass over the pairs."""
    return source.num_pairs // batch_size


def _model_inputs(batch: dict, seed: tf.Tensor, masking: MaskingConfig, seq_len: int,
                  batch_size: int, pad_id: int) -> tuple[dict, dict, dict]:
    masked, positions, labels = mask_batch(batch["input_ids"], batch["word_starts"], seed,
                                           masking)
    lengths = masked.row_lengths()
    predictions = masking.max_predictions_per_seq
    position = tf.range(seq_len, dtype=lengths.dtype)[tf.newaxis, :]
    first_b = tf.cast(batch["segment_a_length"], lengths.dtype)[:, tf.newaxis] + 2
    features = {
        "input_word_ids": masked.to_tensor(pad_id, shape=[batch_size, seq_len]),
        "input_mask": tf.sequence_mask(lengths, seq_len, tf.int32),
        "input_type_ids": tf.cast((position >= first_b) & (position < lengths[:, tf.newaxis]),
                                  tf.int32),
        "masked_lm_positions": positions.to_tensor(0, shape=[batch_size, predictions]),
    }
    targets = {
        "mlm": tf.cast(labels, tf.int32).to_tensor(0, shape=[batch_size, predictions]),
        "nsp": tf.ensure_shape(tf.cast(batch["next_sentence_label"], tf.int32), [batch_size]),
    }
    # Keras wants a weight for every output once weights are a dict; NSP's are all 1.
    weights = {"mlm": tf.sequence_mask(positions.row_lengths(), predictions, tf.float32),
               "nsp": tf.ones([batch_size], tf.float32)}
    return features, targets, weights


def _memory_pairs(pairs: PairSet, shuffle: bool, seed: int, repeat: bool) -> tf.data.Dataset:
    input_ids = tf.RaggedTensor.from_row_lengths(pairs.input_ids, pairs.lengths)
    word_starts = tf.RaggedTensor.from_row_lengths(pairs.word_starts.astype(np.int32),
                                                   pairs.lengths)
    a_lengths = tf.constant(pairs.segment_a_lengths)
    labels = tf.constant(pairs.next_sentence_labels)
    # Shuffle indices, not pairs: a buffer of ints instead of a second copy of the data.
    indices = tf.data.Dataset.range(pairs.num_pairs)
    if shuffle:
        indices = indices.shuffle(pairs.num_pairs, seed=seed, reshuffle_each_iteration=True)
    if repeat:
        indices = indices.repeat()
    return indices.map(
        lambda i: {"input_ids": input_ids[i], "word_starts": word_starts[i],
                   "segment_a_length": a_lengths[i], "next_sentence_label": labels[i]},
        num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


_FEATURES = {
    "input_ids": tf.io.RaggedFeature(tf.int64),
    "word_starts": tf.io.RaggedFeature(tf.int64),
    "segment_a_length": tf.io.FixedLenFeature([], tf.int64),
    "next_sentence_label": tf.io.FixedLenFeature([], tf.int64),
}


def _parse(record: tf.Tensor) -> dict:
    example = tf.io.parse_single_example(record, _FEATURES)
    return {"input_ids": tf.cast(example["input_ids"], tf.int32),
            "word_starts": tf.cast(example["word_starts"], tf.int32),
            "segment_a_length": tf.cast(example["segment_a_length"], tf.int32),
            "next_sentence_label": tf.cast(example["next_sentence_label"], tf.int32)}


def _serialize(pair: PretrainingPair) -> bytes:
    def ints(values) -> tf.train.Feature:
        return tf.train.Feature(int64_list=tf.train.Int64List(value=values))

    return tf.train.Example(features=tf.train.Features(feature={
        "input_ids": ints(pair.input_ids.tolist()),
        "word_starts": ints(pair.word_starts.astype(np.int64).tolist()),
        "segment_a_length": ints([pair.segment_a_length]),
        "next_sentence_label": ints([pair.next_sentence_label]),
    })).SerializeToString()


def _name(source: PairSet | PreparedData) -> str:
    return source.directory if isinstance(source, PreparedData) else "corpus"


__all__ = ["METADATA_FILE", "PairOptions", "PairSet", "PreparedData", "batches_per_pass",
           "build_pairs", "corpus_pairs", "is_prepared_dir", "load_pairs", "open_prepared",
           "pairs_dataset", "prepare_pretraining_data", "pretraining_dataset",
           "tokenize_documents", "tokenizer_fingerprint"]
