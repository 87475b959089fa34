"""The `BertTokenizer` of a model directory or a `vocab.txt` (`load_tokenizer`).

A model directory may be a tfbert, Hugging Face, Google BERT or keras-hub one;
`load_tokenizer` finds its vocabulary and works out its casing:

- tfbert: `config.json` with a `"lowercase"` key;
- Hugging Face: `tokenizer_config.json` (`do_lower_case`) or `tokenizer.json`
  (its normalizer's `lowercase`), vocabulary from `vocab.txt` or from
  `tokenizer.json`;
- Google BERT: `bert_config.json` + `vocab.txt`. Its casing is written nowhere,
  so it is inferred: uncased when no token other than a bracketed special has
  an uppercase letter (`tfbert.text.vocab.infer_lowercase`).
- keras-hub preset: `tokenizer.json` (a serialized keras-hub `BertTokenizer`,
  its `lowercase`) + `assets/tokenizer/vocabulary.txt`. By default
  (`strip_accents=false`, `special_tokens_in_strings=false`) keras-hub's BERT
  tokenizers lowercase without stripping accents and split a `[MASK]` written
  in the text into pieces; tfbert's strips accents when it lowercases and
  keeps such special tokens whole, as original BERT and Hugging Face do, so
  ids can differ on accented text and on special tokens written in the text.
  Options `BertTokenizer` cannot follow at all (`split=false`, another
  `suffix_indicator` or `oov_token`, accents stripped from cased text) are
  refused with a `ConfigError`.

Example:
    >>> import tempfile, os
    >>> from tfbert.text.vocab import write_vocab
    >>> d = tempfile.mkdtemp()
    >>> write_vocab(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "hello"], os.path.join(d, "vocab.txt"))
    >>> load_tokenizer(d).tokenize(["Hello"]).to_list()
    [[4]]
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from tfbert.errors import ConfigError, DataError
from tfbert.text.tokenizer import BertTokenizer
from tfbert.text.vocab import find_vocab, infer_lowercase, read_vocab, tokenizer_json_vocab

DEFAULT_MAX_SEQ_LENGTH = 512
KERAS_HUB_TOKENIZER = "keras_hub>BertTokenizer"
KERAS_HUB_VOCAB = Path("assets", "tokenizer", "vocabulary.txt")


def load_tokenizer(
    path: str | os.PathLike[str],
    max_seq_length: int | None = None,
    lowercase: bool | None = None,
) -> BertTokenizer:
    """Builds the `BertTokenizer` of a model directory or a `vocab.txt`.

    Args:
        path: `vocab.txt`, or a tfbert, Hugging Face, Google BERT or keras-hub
            preset directory.
        max_seq_length: packing cap; default: the directory's `max_seq_length`
            (tfbert) or `max_position_embeddings`, else 512.
        lowercase: force the casing instead of reading/inferring it.

    Raises:
        DataError: one line naming `path` when no vocabulary can be found or read.
        ConfigError: the directory asks for tokenizer options `BertTokenizer` lacks.

    Example:
        >>> import tempfile, os
        >>> from tfbert.text.vocab import write_vocab
        >>> d = tempfile.mkdtemp()
        >>> write_vocab(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "Hello"], os.path.join(d, "vocab.txt"))
        >>> load_tokenizer(d).lowercase  # inferred from the uppercase "Hello"
        False
    """
    path = Path(path)
    if path.is_file():
        tokens, settings = read_vocab(path), {}
    elif path.is_dir():
        tokens, settings = _read_model_dir(path)
    else:
        raise DataError(f"{path}: no such file or directory")
    if lowercase is None:
        lowercase = settings.get("lowercase")
    if lowercase is None:
        lowercase = infer_lowercase(tokens)
    if max_seq_length is None:
        max_seq_length = settings.get("max_seq_length", DEFAULT_MAX_SEQ_LENGTH)
    try:
        return BertTokenizer(tokens, lowercase=bool(lowercase), max_seq_length=max_seq_length)
    except ValueError as e:
        raise DataError(f"{path}: {e}") from None


def _read_model_dir(model_dir: str | os.PathLike[str]) -> tuple[list[str], dict[str, Any]]:
    """The vocabulary of a model directory and the tokenizer settings it states.

    Returns:
        `(tokens, settings)`; `settings` may hold `"lowercase"` (bool) and
        `"max_seq_length"` (int), each only when the directory says it.

    Raises:
        DataError: no vocabulary, or an unreadable settings file.
        ConfigError: tokenizer options `BertTokenizer` lacks.
    """
    model_dir = Path(model_dir)
    settings: dict[str, Any] = {}
    config = _read_json(model_dir / "config.json")
    if config is not None and "lowercase" in config:  # tfbert
        settings["lowercase"] = bool(config["lowercase"])
        if "max_seq_length" in config:
            settings["max_seq_length"] = int(config["max_seq_length"])
        elif isinstance(config.get("bert"), dict):
            _set_max_positions(settings, config["bert"])
        return read_vocab(find_vocab(model_dir)), settings
    if _is_keras_hub(config) or _is_keras_hub(_read_json(model_dir / "tokenizer.json")):
        return _read_keras_hub_preset(model_dir, config)
    for name in ("config.json", "bert_config.json"):
        data = _read_json(model_dir / name)
        if data is not None:
            _set_max_positions(settings, data)
            break

    tokenizer_config = _read_json(model_dir / "tokenizer_config.json") or {}
    if "do_lower_case" in tokenizer_config:
        settings["lowercase"] = bool(tokenizer_config["do_lower_case"])
    tokenizer_json = _read_json(model_dir / "tokenizer.json")
    if tokenizer_json is not None and "lowercase" not in settings:
        lowercase = _normalizer_lowercase(tokenizer_json.get("normalizer"))
        if lowercase is not None:
            settings["lowercase"] = lowercase
    _check_hf_options(model_dir, tokenizer_config, tokenizer_json, settings.get("lowercase"))
    try:
        vocab_file = find_vocab(model_dir)
    except DataError:
        vocab_file = None
    if vocab_file is not None:
        return read_vocab(vocab_file), settings
    if tokenizer_json is None:
        raise DataError(
            f"{model_dir}: no vocab.txt or tokenizer.json (expected a tfbert, "
            "Hugging Face, Google BERT or keras-hub model directory)"
        )
    return tokenizer_json_vocab(tokenizer_json, model_dir / "tokenizer.json"), settings


def _is_keras_hub(data: dict[str, Any] | None) -> bool:
    name = (data or {}).get("registered_name")
    return isinstance(name, str) and name.startswith("keras_hub>")


def _read_keras_hub_preset(model_dir: Path, config: dict[str, Any] | None
                           ) -> tuple[list[str], dict[str, Any]]:
    """Vocabulary and settings of a keras-hub preset (see the module docstring)."""
    settings: dict[str, Any] = {}
    length = ((config or {}).get("config") or {}).get("max_sequence_length")
    if isinstance(length, int) and not isinstance(length, bool):
        settings["max_seq_length"] = length
    path = model_dir / "tokenizer.json"
    data = _read_json(path)
    if data is None:
        raise DataError(f"{path}: missing (a keras-hub preset keeps its tokenizer there)")
    name = data.get("registered_name")
    if name != KERAS_HUB_TOKENIZER:
        raise ConfigError(f"{path}: {name!r} is not a {KERAS_HUB_TOKENIZER} (WordPiece)")
    options = data.get("config") if isinstance(data.get("config"), dict) else {}
    settings["lowercase"] = lowercase = bool(options.get("lowercase", False))
    if options.get("strip_accents") and not lowercase:
        raise ConfigError(f"{path}: strip_accents=true with lowercase=false is not supported "
                          "(BertTokenizer strips accents exactly when it lowercases)")
    for option, supported in (("split", True), ("split_on_cjk", True),
                              ("suffix_indicator", "##"), ("oov_token", "[UNK]")):
        if options.get(option, supported) != supported:
            raise ConfigError(f"{path}: {option}={options[option]!r} is not supported")
    vocab_file = model_dir / KERAS_HUB_VOCAB
    if not vocab_file.is_file():
        raise DataError(f"{vocab_file}: missing (the vocabulary of a keras-hub preset)")
    return read_vocab(vocab_file), settings


def _set_max_positions(settings: dict[str, Any], config: dict[str, Any]) -> None:
    if "max_position_embeddings" in config:
        settings["max_seq_length"] = int(config["max_position_embeddings"])


def _read_json(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(f"{path}: cannot read: {e}") from None
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected a JSON object")
    return data


def _check_hf_options(
    model_dir: Path,
    tokenizer_config: dict[str, Any],
    tokenizer_json: dict[str, Any] | None,
    lowercase: bool | None,
) -> None:
    """Refuses Hugging Face options that BertTokenizer lacks, rather than tokenize otherwise."""
    options = dict(tokenizer_config)
    normalizer = (tokenizer_json or {}).get("normalizer")
    if isinstance(normalizer, dict) and normalizer.get("type") == "BertNormalizer":
        options.setdefault("strip_accents", normalizer.get("strip_accents"))
        options.setdefault("tokenize_chinese_chars", normalizer.get("handle_chinese_chars", True))
        if normalizer.get("clean_text", True) is False:
            raise ConfigError(f"{model_dir}: clean_text=false is not supported")
    strip_accents = options.get("strip_accents")
    if strip_accents is not None and lowercase is not None and bool(strip_accents) != lowercase:
        raise ConfigError(
            f"{model_dir}: strip_accents={strip_accents} with do_lower_case={lowercase} is "
            "not supported (BertTokenizer strips accents exactly when it lowercases)"
        )
    if options.get("tokenize_chinese_chars", True) is False:
        raise ConfigError(f"{model_dir}: tokenize_chinese_chars=false is not supported")


def _normalizer_lowercase(normalizer: Any) -> bool | None:
    """The casing a `tokenizer.json` normalizer implies, or None if it does not say."""
    if not isinstance(normalizer, dict):
        return None
    kind = normalizer.get("type")
    if kind == "BertNormalizer":
        return bool(normalizer.get("lowercase", True))
    if kind == "Lowercase":
        return True
    if kind == "Sequence":
        found = [_normalizer_lowercase(n) for n in normalizer.get("normalizers", [])]
        return True if True in found else None
    return None


__all__ = ["DEFAULT_MAX_SEQ_LENGTH", "load_tokenizer"]
