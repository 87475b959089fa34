"""WordPiece vocabulary files: reading, writing (validated, atomically) and finding them.

A vocabulary is a `vocab.txt`: one token per line, the line number (from 0) is
the id. Every vocabulary file tfbert writes goes through `write_vocab`, which
refuses what `read_vocab` would refuse, so a written file always reads back.
A Hugging Face `tokenizer.json` may hold the vocabulary instead
(`tokenizer_json_vocab`). Turning a model directory into a tokenizer is
`tfbert.text.loading.load_tokenizer`'s job.

Errors are `tfbert.errors.DataError`s (a `ValueError`) naming the file and line.

Example:
    >>> import tempfile, os
    >>> d = tempfile.mkdtemp()
    >>> write_vocab(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "hello"], os.path.join(d, "vocab.txt"))
    >>> read_vocab(os.path.join(d, "vocab.txt"))[-1]
    'hello'
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from tfbert.errors import DataError
from tfbert.files import write_atomically

VOCAB_FILE = "vocab.txt"


def read_vocab(path: str | os.PathLike[str]) -> list[str]:
    """Reads a `vocab.txt` (UTF-8, one token per line; a final newline is optional).

    Args:
        path: the file.

    Returns:
        the tokens, index = id.

    Raises:
        DataError: unreadable file, text that is not UTF-8, or an empty or
            duplicate token (naming the file and line).

    Example:
        >>> import tempfile, os
        >>> path = os.path.join(tempfile.mkdtemp(), "vocab.txt")
        >>> _ = open(path, "w").write("[PAD]\\n[UNK]\\n[PAD]\\n")
        >>> read_vocab(path)
        Traceback (most recent call last):
        ...
        tfbert.errors.DataError: ...vocab.txt: line 3: duplicate token '[PAD]' (first on line 1)
    """
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise DataError(f"{path}: cannot read vocabulary: {e}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise DataError(f"{path}: line {line}: not valid UTF-8 ({e.reason})") from None
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    tokens = [line[:-1] if line.endswith("\r") else line for line in lines]
    _check_tokens(tokens, path)
    return tokens


def write_vocab(tokens: Iterable[str], path: str | os.PathLike[str]) -> None:
    """Writes tokens to `path`, one per line, UTF-8, atomically.

    The tokens are checked first (nothing is written if one is bad), and the
    file is replaced in one step (`tfbert.files.write_atomically`), so a
    reader never sees half a vocabulary.

    Args:
        tokens: the vocabulary, index = id.
        path: the file to write (its directory is created if needed).

    Raises:
        DataError: an empty or duplicate token, one containing a line break
            (naming the file and line it would have), or a failed write.

    Example:
        >>> write_vocab(["[PAD]", "a", "a"], "vocab.txt")
        Traceback (most recent call last):
        ...
        tfbert.errors.DataError: vocab.txt: line 3: duplicate token 'a' (first on line 2)
    """
    path = os.fspath(path)
    tokens = list(tokens)
    _check_tokens(tokens, path)
    for i, token in enumerate(tokens):
        if "\n" in token or "\r" in token:
            raise DataError(f"{path}: token {i} {token!r} contains a line break")
    try:
        write_atomically(path, "".join(token + "\n" for token in tokens))
    except OSError as e:
        raise DataError(f"{path}: cannot write vocabulary: {e.strerror or e}") from None


def find_vocab(model_dir: str | os.PathLike[str]) -> Path:
    """Returns the `vocab.txt` of a model directory (or its `assets/`).

    Raises:
        DataError: there is none.
    """
    model_dir = Path(model_dir)
    for candidate in (model_dir / VOCAB_FILE, model_dir / "assets" / VOCAB_FILE):
        if candidate.is_file():
            return candidate
    raise DataError(f"{model_dir}: no {VOCAB_FILE} in this directory")


def infer_lowercase(tokens: Iterable[str]) -> bool:
    """True when no token other than a bracketed special (`[CLS]`) has an uppercase letter.

    Google BERT directories write their casing nowhere; Google's cased
    vocabularies are full of uppercase tokens, its uncased ones have none.

    Example:
        >>> infer_lowercase(["[CLS]", "hello", "ℝ"]), infer_lowercase(["[CLS]", "Hello"])
        (True, False)
    """
    for token in tokens:
        if token.startswith("[") and token.endswith("]"):
            continue
        # "ℝ" counts as uppercase for str.isupper but has no lowercase form.
        if token.lower() != token:
            return False
    return True


def tokenizer_json_vocab(data: dict[str, Any], path: str | os.PathLike[str]) -> list[str]:
    """The vocabulary of a parsed Hugging Face `tokenizer.json` (a WordPiece model).

    Args:
        data: the file's JSON object.
        path: the file, for error messages.

    Raises:
        DataError: not a WordPiece tokenizer, ids that are not `0..n-1`, or an
            empty or duplicate token.

    Example:
        >>> tokenizer_json_vocab({"model": {"type": "WordPiece",
        ...                                 "vocab": {"[PAD]": 0, "hi": 2, "[UNK]": 1}}},
        ...                      "tokenizer.json")
        ['[PAD]', '[UNK]', 'hi']
    """
    path = os.fspath(path)
    model = data.get("model") or {}
    if model.get("type") != "WordPiece" or not isinstance(model.get("vocab"), dict):
        raise DataError(f"{path}: not a WordPiece tokenizer (model type {model.get('type')!r})")
    by_id = {int(i): token for token, i in model["vocab"].items()}
    if sorted(by_id) != list(range(len(by_id))):
        raise DataError(f"{path}: vocabulary ids are not 0..{len(by_id) - 1}")
    tokens = [by_id[i] for i in range(len(by_id))]
    _check_tokens(tokens, path)
    return tokens


def _check_tokens(tokens: list[str], source: str) -> None:
    if not tokens:
        raise DataError(f"{source}: the vocabulary is empty")
    first_line: dict[str, int] = {}
    for i, token in enumerate(tokens):
        if token == "":
            raise DataError(f"{source}: line {i + 1}: empty token")
        if token in first_line:
            raise DataError(
                f"{source}: line {i + 1}: duplicate token {token!r} "
                f"(first on line {first_line[token] + 1})"
            )
        first_line[token] = i


__all__ = ["VOCAB_FILE", "find_vocab", "infer_lowercase", "read_vocab",
           "tokenizer_json_vocab", "write_vocab"]
