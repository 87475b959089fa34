"""Reading a corpus of plain text files, for pretraining and vocabulary learning.

The pretraining format is the original BERT one: plain UTF-8 text, one
sentence per line, a blank line between documents. Several files and glob
patterns may be given; a document never spans two files. Reading streams
line by line, so a corpus larger than memory is fine. Errors are
`tfbert.errors.DataError`s naming the file (and line).

Example:

>>> import os, tempfile
>>> path = os.path.join(tempfile.mkdtemp(), "corpus.txt")
>>> _ = open(path, "w").write("First sentence.\\nSecond one.\\n\\nAnother document.\\n")
>>> list(read_documents([path]))
[['First sentence.', 'Second one.'], ['Another document.']]
"""

from __future__ import annotations

import glob
import os
from collections.abc import Iterable, Iterator, Sequence

import keras

from tfbert.errors import DataError


def expand_corpus_files(patterns: str | Sequence[str]) -> list[str]:
    """Files named by `patterns` (paths or globs), in the order given.

    Each glob's matches are sorted so that the order, and hence every seeded
    result, is the same on every machine. A file named twice is read once.

    Args:
        patterns: a path, a glob (`data/*.txt`), or a list of them.

    Raises:
        DataError: a pattern that matches nothing, or a path that is a
            directory, naming it.

    Example:

    >>> expand_corpus_files(["/no/such/file.txt"])
    Traceback (most recent call last):
    ...
    tfbert.errors.DataError: /no/such/file.txt: no such corpus file
    """
    if isinstance(patterns, str | os.PathLike):
        patterns = [patterns]
    files: list[str] = []
    for pattern in map(os.fspath, patterns):
        if glob.has_magic(pattern):
            matches = sorted(p for p in glob.glob(pattern) if os.path.isfile(p))
            if not matches:
                raise DataError(f"{pattern}: the pattern matches no corpus file")
        elif os.path.isdir(pattern):
            raise DataError(f"{pattern}: is a directory, not a corpus file")
        elif not os.path.exists(pattern):
            raise DataError(f"{pattern}: no such corpus file")
        else:
            matches = [pattern]
        files.extend(p for p in matches if p not in files)
    if not files:
        raise DataError("no corpus files given")
    return files


class LineProgress:
    """A Keras progress bar over corpus lines, redrawn every 1000 lines (cheap per line).

    Args:
        files: the corpus files; their lines are counted first for the total.
        enabled: False gives a silent object with the same interface.
    """

    def __init__(self, files: Sequence[str], enabled: bool = True):
        self.lines = 0
        self._bar = keras.utils.Progbar(count_lines(files), unit_name="line") if enabled else None

    def tick(self) -> None:
        self.lines += 1
        if self._bar is not None and self.lines % 1000 == 0:
            self._bar.update(self.lines)

    def done(self) -> None:
        if self._bar is not None:
            self._bar.update(max(self.lines, self._bar.target or 0), finalize=True)


def read_documents(files: Iterable[str], progress: LineProgress | None = None
                   ) -> Iterator[list[str]]:
    """Yield each document as a list of its sentences (stripped, non-empty lines).

    Args:
        files: corpus files (see `expand_corpus_files`).
        progress: optional progress bar, advanced once per line read.

    Raises:
        DataError: a file that cannot be opened or decoded (naming the file
            and line), or one with no text at all.
    """
    for path in files:
        yield from _file_documents(path, progress)


def count_lines(files: Iterable[str]) -> int:
    """Number of lines in `files`, read in binary chunks (fast; for progress bars)."""
    total = 0
    for path in files:
        ends_with_newline = True
        try:
            with open(path, "rb") as f:
                while chunk := f.read(1 << 20):
                    total += chunk.count(b"\n")
                    ends_with_newline = chunk.endswith(b"\n")
        except OSError as e:
            raise DataError(f"{path}: cannot read corpus file: {e.strerror or e}") from None
        total += 0 if ends_with_newline else 1
    return total


def read_lines(path: str) -> Iterator[tuple[int, str]]:
    """Yield `(line_number, text)` for every line of `path` (from 1, newline kept).

    Lines are decoded one at a time so that an invalid UTF-8 byte is reported
    with its exact line.

    Raises:
        DataError: the file cannot be opened or a line is not UTF-8.
    """
    try:
        with open(path, "rb") as f:
            for line_number, raw in enumerate(f, start=1):
                try:
                    yield line_number, raw.decode("utf-8")
                except UnicodeDecodeError as e:
                    raise DataError(
                        f"{path}: line {line_number}: not valid UTF-8 ({e.reason} at "
                        f"column {e.start + 1})") from None
    except OSError as e:
        raise DataError(f"{path}: cannot read corpus file: {e.strerror or e}") from None


def _file_documents(path: str, progress: LineProgress | None) -> Iterator[list[str]]:
    document: list[str] = []
    found_text = False
    for _, line in read_lines(path):
        if progress is not None:
            progress.tick()
        sentence = line.strip()
        if sentence:
            document.append(sentence)
            found_text = True
        elif document:
            yield document
            document = []
    if document:
        yield document
    if not found_text:
        raise DataError(f"{path}: the corpus file is empty (no text lines)")
