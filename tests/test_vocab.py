"""Learning a WordPiece vocabulary (`tfbert vocab`): fixed special ids, no [UNK] on its text."""

import pytest

from tfbert.cli import main as cli
from tfbert.errors import DataError
from tfbert.text import BertTokenizer, read_vocab
from tfbert.text.vocab_learning import learn_vocab

TEXT = """The quick brown fox jumps over the lazy dog.
Pack my box with five dozen liquor jugs!
How vexingly quick daft zebras jump; the five boxing wizards jump quickly.
Crème brûlée, naïve café owners and a façade in Zürich.
東京 and 北京 are cities, (really) big ones: 12,345 people?

Sphinx of black quartz, judge my vow.
Jackdaws love my big sphinx of quartz.
"""


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    path = tmp_path_factory.mktemp("vocab") / "corpus.txt"
    path.write_text(TEXT * 30, encoding="utf-8")
    return str(path)


def test_learned_vocab_tokenizes_its_corpus_and_new_words_without_unk(corpus):
    vocab = learn_vocab([corpus], vocab_size=300, progress=False)
    assert len(set(vocab)) == len(vocab) <= 300 * 1.05
    tok = BertTokenizer(vocab, lowercase=True)
    ids = tok.tokenize(TEXT.splitlines() + ["Quartz judges jump over zebras", "BOXING café"])
    assert tok.unk_id not in ids.flat_values.numpy().tolist()
    # Frequent words become single tokens; uncased means lowercase and no accents.
    assert {"the", "quick", "quartz", "cafe"} <= set(vocab)
    assert not any(t.lower() != t for t in vocab if not t.startswith("["))
    assert "é" not in "".join(vocab)


def test_special_tokens_have_fixed_ids_and_unused_slots_come_first(corpus):
    plain = learn_vocab([corpus], vocab_size=120, progress=False)
    assert plain[:5] == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    google = learn_vocab([corpus], vocab_size=300, reserved_unused=99, progress=False)
    assert google[0] == "[PAD]"
    assert google[1:100] == [f"[unused{i}]" for i in range(99)]
    assert [google.index(t) for t in ("[UNK]", "[CLS]", "[SEP]", "[MASK]")] == [100, 101, 102,
                                                                               103]
    tok = BertTokenizer(google)
    assert (tok.pad_id, tok.unk_id, tok.cls_id, tok.sep_id, tok.mask_id) == (0, 100, 101, 102,
                                                                             103)
    # Unused slots are never produced by tokenization.
    ids = tok.tokenize(TEXT.splitlines()).flat_values.numpy()
    assert not ((ids >= 1) & (ids < 100)).any()


def test_cased_vocab_keeps_case_and_accents(corpus):
    vocab = learn_vocab([corpus], vocab_size=400, lowercase=False, progress=False)
    assert "The" in vocab and "é" in "".join(vocab)
    tok = BertTokenizer(vocab, lowercase=False)
    assert tok.unk_id not in tok.tokenize(["Crème Zürich The Sphinx"]).flat_values.numpy().tolist()


def test_cli_writes_vocab_and_reports_bad_input_in_one_line(corpus, tmp_path, capsys):
    out = tmp_path / "sub" / "vocab.txt"
    assert cli(["vocab", "--input", corpus, "--vocab-size", "150", "--output", str(out),
                "--quiet"]) == 0
    assert read_vocab(out)[:5] == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    capsys.readouterr()
    missing = str(tmp_path / "nope.txt")
    assert cli(["vocab", "--input", missing, "--vocab-size", "150", "--output", str(out)]) == 2
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith("tfbert vocab: error: ") and missing in line


def test_missing_empty_and_non_utf8_files_are_named(tmp_path):
    with pytest.raises(DataError, match="nope.txt"):
        learn_vocab([str(tmp_path / "nope.txt")], 100, progress=False)
    with pytest.raises(DataError, match=r"no corpus file"):
        learn_vocab([str(tmp_path / "*.none")], 100, progress=False)
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n", encoding="utf-8")
    with pytest.raises(DataError, match="empty.txt.*empty"):
        learn_vocab([str(empty)], 100, progress=False)
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"fine line\nbroken \xff line\n")
    with pytest.raises(DataError, match="bad.txt: line 2"):
        learn_vocab([str(bad)], 100, progress=False)
