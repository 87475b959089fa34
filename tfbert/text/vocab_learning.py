"""Learning a WordPiece vocabulary from a corpus (`tfbert vocab`).

The learner is tensorflow-text's (`tensorflow_text.tools.wordpiece_vocab`,
the algorithm behind `bert_vocab_from_dataset` and keras-hub's
`compute_word_piece_vocabulary`). What is ours is only the word splitting:
both of those split words with `tf_text.BasicTokenizer`, whose normalisation
differs from `BertTokenizer`'s (it case-folds with NFKC and splits on a
different punctuation set), and a vocabulary learned on differently split
words gives `[UNK]`s and odd pieces at tokenization time. So words are
counted from `BertTokenizer.split_words` — the exact words WordPiece will see
(lowercased and accent-stripped when uncased; punctuation and CJK characters
split off) — and handed to the learner's `count`/`learn` steps.

Vocabulary layout (ids are fixed, whatever the corpus):

    0                 [PAD]
    1 .. U            [unused0] .. [unused{U-1}]   (U = reserved_unused, may be 0)
    U+1               [UNK]
    U+2               [CLS]
    U+3               [SEP]
    U+4               [MASK]
    U+5 ..            single characters and their "##" forms, then learned pieces

With `reserved_unused=99` this is exactly Google's BERT layout ([UNK]=100,
[CLS]=101, [SEP]=102, [MASK]=103); with 0 the specials are 0..4.

Example:

>>> import os, tempfile
>>> path = os.path.join(tempfile.mkdtemp(), "corpus.txt")
>>> _ = open(path, "w").write("The cat sat.\\nThe cats sat!\\n" * 20)
>>> vocab = learn_vocab([path], vocab_size=60, progress=False)
>>> vocab[:5]
['[PAD]', '[UNK]', '[CLS]', '[SEP]', '[MASK]']
"""

from __future__ import annotations

import collections
from collections.abc import Sequence

from tensorflow_text.tools.wordpiece_vocab import wordpiece_tokenizer_learner_lib as learner

from tfbert.errors import ConfigError, DataError
from tfbert.text.corpus import LineProgress, expand_corpus_files, read_lines
from tfbert.text.tokenizer import CLS, MASK, PAD, SEP, UNK, BertTokenizer

# Lines handed to the tokenizer per call: large enough to amortise op
# dispatch, small enough to keep memory flat on any corpus.
_LINES_PER_BATCH = 4096


def special_tokens(reserved_unused: int = 0) -> list[str]:
    """The fixed head of every learned vocabulary (see the module docstring).

    Example:

    >>> special_tokens(2)
    ['[PAD]', '[unused0]', '[unused1]', '[UNK]', '[CLS]', '[SEP]', '[MASK]']
    """
    if reserved_unused < 0:
        raise ConfigError(f"reserved_unused must be >= 0, got {reserved_unused}")
    return [PAD, *(f"[unused{i}]" for i in range(reserved_unused)), UNK, CLS, SEP, MASK]


def count_words(
    files: Sequence[str], lowercase: bool = True, progress: bool = True
) -> collections.Counter[str]:
    """Count the words `BertTokenizer` would hand to WordPiece in `files`.

    Args:
        files: text files or glob patterns; every line is text (blank lines
            are skipped).
        lowercase: uncased normalisation (lowercase, strip accents).
        progress: show a progress bar over the input lines.

    Raises:
        DataError: a missing, unreadable or empty file, naming it.
    """
    files = expand_corpus_files(files)
    splitter = BertTokenizer([PAD, UNK, CLS, SEP, MASK], lowercase=lowercase)
    bar = LineProgress(files, enabled=progress)
    counts: collections.Counter[str] = collections.Counter()
    for path in files:
        batch: list[str] = []
        has_text = False
        for _, line in read_lines(path):
            bar.tick()
            if line.strip():
                batch.append(line)
                has_text = True
            if len(batch) == _LINES_PER_BATCH:
                counts.update(_words(splitter, batch))
                batch = []
        if batch:
            counts.update(_words(splitter, batch))
        if not has_text:
            raise DataError(f"{path}: the file is empty (no text lines)")
    bar.done()
    return counts


def learn_vocab(
    files: Sequence[str],
    vocab_size: int,
    lowercase: bool = True,
    reserved_unused: int = 0,
    progress: bool = True,
) -> list[str]:
    """Learn a WordPiece vocabulary of at most about `vocab_size` tokens.

    The learner searches for the frequency threshold that gives between 95%
    and 100% of `vocab_size` tokens. Every character seen in the corpus (up to
    the 1000 most frequent) gets a token and a `##` token, so ordinary text
    never tokenizes to `[UNK]`; a corpus with more distinct characters than
    `vocab_size` allows gives a larger vocabulary rather than `[UNK]`s.

    Args:
        files: text files or glob patterns (any plain text; the BERT corpus
            format works as is).
        vocab_size: target size, specials included.
        lowercase: learn an uncased vocabulary (lowercase, accents stripped);
            False keeps case and accents.
        reserved_unused: number of `[unusedN]` slots after `[PAD]`, kept for
            tokens added later (99 gives Google BERT's ids).
        progress: show a progress bar over the input lines.

    Returns:
        The tokens, index = id (write them with `tfbert.text.write_vocab`).

    Raises:
        DataError: a missing, unreadable or empty file, naming it.
        ValueError: a `vocab_size` too small for the special tokens.

    Example:

    >>> import os, tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "corpus.txt")
    >>> _ = open(path, "w").write("The cat sat on the mat.\\n" * 50)
    >>> vocab = learn_vocab([path], vocab_size=150, reserved_unused=99, progress=False)
    >>> vocab.index("[CLS]")  # Google BERT's id
    101
    """
    reserved = special_tokens(reserved_unused)
    if vocab_size <= len(reserved):
        raise ConfigError(
            f"vocab_size {vocab_size} leaves no room for learned tokens after "
            f"{len(reserved)} special tokens"
        )
    counts = count_words(files, lowercase=lowercase, progress=progress)
    if not counts:
        raise DataError(f"{', '.join(files)}: no words to learn a vocabulary from")
    # lower_thresh=1 (tf_text defaults to 10) lets the threshold search go
    # down to words seen once, so a small corpus still fills the vocabulary.
    vocab = learner.learn(counts, vocab_size, reserved, lower_thresh=1)
    # The learner puts the reserved tokens first, in order, so the fixed ids
    # hold; checked because everything downstream relies on it.
    if vocab[: len(reserved)] != reserved:
        raise AssertionError("WordPiece learner reordered the special tokens")
    return vocab


def _words(splitter: BertTokenizer, lines: list[str]) -> list[str]:
    flat = splitter.split_words(lines).flat_values.numpy()
    return [w.decode("utf-8") for w in flat]
