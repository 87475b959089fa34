"""Pretraining input: NSP pairs as Google builds them, dynamic MLM masking, TFRecords."""

import collections
import random
import string

import numpy as np
import pytest

from tfbert.data.nsp_pairs import Sentence, truncate_pair
from tfbert.data.pretraining import (
    PairOptions,
    build_pairs,
    load_pairs,
    pairs_dataset,
    prepare_pretraining_data,
    pretraining_dataset,
)
from tfbert.errors import DataError
from tfbert.text import BertTokenizer
from tfbert.text.corpus import read_documents

WORDS = ["the", "cat", "sat", "on", "mat", "dog", "ran", "far", "away", "and", "then", "slept"]
SEQ_LEN = 64


def _vocab():
    letters = list(string.ascii_lowercase)
    return (["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "."] + WORDS + letters
            + ["##" + c for c in letters])


def _write_corpus(path, documents=60, seed=0, long_sentences=False, sentences=(12, 30)):
    rng = random.Random(seed)
    with open(path, "w", encoding="utf-8") as f:
        for _ in range(documents):
            for _ in range(rng.randint(*sentences)):
                # Known words are one piece; random strings split into letters
                # (multi-piece words, for whole-word masking).
                words = [rng.choice(WORDS) if rng.random() < 0.6 else
                         "".join(rng.choices(string.ascii_lowercase, k=rng.randint(2, 5)))
                         for _ in range(rng.randint(3, 9))]
                if long_sentences and rng.random() < 0.1:
                    words *= 12  # longer than the whole budget: forces truncation
                f.write(" ".join(words) + " .\n")
            f.write("\n")
    return str(path)


@pytest.fixture(scope="module")
def tokenizer():
    return BertTokenizer(_vocab(), lowercase=True)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return _write_corpus(tmp_path_factory.mktemp("corpus") / "corpus.txt", long_sentences=True)


@pytest.fixture(scope="module")
def pairs(corpus, tokenizer):
    return build_pairs([corpus], tokenizer, PairOptions(seq_len=SEQ_LEN, seed=1))


def _batches(dataset, n):
    out = []
    for features, labels, weights in dataset.take(n):
        out.append({**{k: v.numpy() for k, v in features.items()},
                    "mlm_ids": labels["mlm"].numpy(), "nsp": labels["nsp"].numpy(),
                    "weights": weights["mlm"].numpy()})
    return out


def _originals(batch):
    """Input ids with the masked tokens put back."""
    ids = batch["input_word_ids"].copy()
    for row in range(len(ids)):
        real = batch["weights"][row] > 0
        ids[row, batch["masked_lm_positions"][row][real]] = batch["mlm_ids"][row][real]
    return ids


def test_pairs_fit_the_budget_and_keep_both_segments(pairs, tokenizer):
    assert pairs.num_pairs > 100
    lengths = []
    for pair in pairs:
        ids, a = pair.input_ids, pair.segment_a_length
        b = len(ids) - a - 3
        assert len(ids) <= SEQ_LEN and a >= 1 and b >= 1
        assert ids[0] == tokenizer.cls_id and ids[a + 1] == tokenizer.sep_id
        assert ids[-1] == tokenizer.sep_id
        assert tokenizer.sep_id not in ids[1:a + 1] and tokenizer.cls_id not in ids[1:]
        assert pair.word_starts[0] and pair.word_starts[a + 1] and pair.word_starts[a + 2]
        lengths.append(len(ids))
    # Most pairs fill the budget; short_seq_prob makes some shorter.
    assert np.mean(np.array(lengths) >= SEQ_LEN - 5) > 0.5
    assert min(lengths) < SEQ_LEN // 2


def test_truncation_cuts_the_longer_segment_and_never_empties_one():
    rng = random.Random(0)
    for _ in range(500):
        la, lb, budget = rng.randint(1, 40), rng.randint(1, 40), rng.randint(2, 30)
        a = Sentence(np.arange(la, dtype=np.int32), np.ones(la, bool))
        b = Sentence(np.arange(100, 100 + lb, dtype=np.int32), np.ones(lb, bool))
        ta, tb = truncate_pair(a, b, budget, rng)
        assert len(ta) + len(tb) == min(la + lb, budget)
        assert len(ta) >= 1 and len(tb) >= 1
        if la + lb > budget:  # the longer one is cut first: lengths end within one
            assert abs(len(ta) - len(tb)) <= 1 or min(len(ta), len(tb)) == min(la, lb)
        # What is kept is a contiguous stretch of the original.
        assert np.all(np.diff(ta.ids) == 1) and np.all(np.diff(tb.ids) == 1)


def test_nsp_labels_are_balanced(tmp_path, tokenizer):
    # Documents of realistic length: only a document's lone last sentence is
    # forced to a random B, so labels stay near 50/50.
    path = _write_corpus(tmp_path / "long_docs.txt", documents=100, seed=3, sentences=(40, 80))
    labels = build_pairs([path], tokenizer, PairOptions(seq_len=SEQ_LEN)).next_sentence_labels
    assert len(labels) > 1000
    assert abs(labels.mean() - 0.5) < 0.04


def test_masking_rate_and_80_10_10_split_over_many_tokens(pairs, tokenizer):
    ds = pretraining_dataset(pairs, tokenizer, seq_len=SEQ_LEN, batch_size=64,
                             max_predictions_per_seq=20, seed=0)
    maskable = predicted = as_mask = kept = 0
    for batch in _batches(ds, 6):
        originals = _originals(batch)
        real = batch["weights"] > 0
        maskable += int(batch["input_mask"].sum()) - 3 * len(originals)
        predicted += int(real.sum())
        rows, cols = np.nonzero(real)
        now = batch["input_word_ids"][rows, batch["masked_lm_positions"][rows, cols]]
        as_mask += int((now == tokenizer.mask_id).sum())
        kept += int((now == batch["mlm_ids"][rows, cols]).sum())
    assert maskable >= 10_000
    assert abs(predicted / maskable - 0.15) < 0.01
    assert abs(as_mask / predicted - 0.8) < 0.03
    # 10% kept on purpose, plus random replacements that drew the same id.
    assert abs(kept / predicted - 0.1) < 0.03
    assert abs((predicted - as_mask - kept) / predicted - 0.1) < 0.03


def test_special_tokens_and_padding_are_never_masked(pairs, tokenizer):
    ds = pretraining_dataset(pairs, tokenizer, seq_len=SEQ_LEN, batch_size=32, mask_rate=0.5,
                             max_predictions_per_seq=40, seed=5)
    specials = {tokenizer.cls_id, tokenizer.sep_id, tokenizer.pad_id}
    for batch in _batches(ds, 4):
        originals = _originals(batch)
        for row in range(len(originals)):
            real = batch["weights"][row] > 0
            positions = batch["masked_lm_positions"][row][real]
            assert not specials & set(batch["mlm_ids"][row][real].tolist())
            assert np.all(batch["input_mask"][row][positions] == 1)
            # Specials sit where they were: unmasked.
            for special in (tokenizer.cls_id, tokenizer.sep_id):
                where = originals[row] == special
                assert np.all(batch["input_word_ids"][row][where] == special)
            assert np.all(batch["input_word_ids"][row][batch["input_mask"][row] == 0]
                          == tokenizer.pad_id)


def test_whole_word_masking_masks_every_piece_of_a_chosen_word(pairs, tokenizer):
    ds = pretraining_dataset(pairs, tokenizer, seq_len=SEQ_LEN, batch_size=32,
                             whole_word_masking=True, max_predictions_per_seq=12, seed=2)
    tokens = tokenizer.vocab
    multi_piece_words = 0
    for batch in _batches(ds, 4):
        originals = _originals(batch)
        for row in range(len(originals)):
            real = batch["weights"][row] > 0
            chosen = set(batch["masked_lm_positions"][row][real].tolist())
            assert len(chosen) <= 12
            length = int(batch["input_mask"][row].sum())
            row_tokens = [tokens[i] for i in originals[row][:length]]

            def is_piece(i, row_tokens=row_tokens):
                return row_tokens[i].startswith("##")

            for position in chosen:
                start = position
                while start > 0 and is_piece(start) and not row_tokens[start - 1].startswith("["):
                    start -= 1
                end = position + 1
                while end < length and is_piece(end):
                    end += 1
                assert set(range(start, end)) <= chosen, (row_tokens, sorted(chosen))
                multi_piece_words += end - start > 1 and position == start
    assert multi_piece_words > 20


def test_same_seed_gives_same_batches_and_each_epoch_new_masks(pairs, tokenizer):
    def first(seed, n=3):
        return _batches(pretraining_dataset(pairs, tokenizer, seq_len=SEQ_LEN, batch_size=16,
                                            seed=seed), n)

    a, b, c = first(7), first(7), first(8)
    for x, y in zip(a, b, strict=True):
        for key in x:
            np.testing.assert_array_equal(x[key], y[key])
    assert any(not np.array_equal(x["input_word_ids"], z["input_word_ids"])
               for x, z in zip(a, c, strict=True))

    # Unshuffled, batch size 1: batch i and batch i + N are the same pair in
    # consecutive epochs, and must be masked differently.
    n = pairs.num_pairs
    stream = _batches(pretraining_dataset(pairs, tokenizer, seq_len=SEQ_LEN, batch_size=1,
                                          shuffle=False, seed=0), n + 40)
    same_masks = 0
    for i in range(40):
        np.testing.assert_array_equal(_originals(stream[i]), _originals(stream[i + n]))
        same_masks += np.array_equal(stream[i]["masked_lm_positions"],
                                     stream[i + n]["masked_lm_positions"])
    assert same_masks <= 2


def test_start_batch_continues_the_stream_exactly(pairs, tokenizer):
    def batches(start):
        return _batches(pretraining_dataset(pairs, tokenizer, seq_len=SEQ_LEN, batch_size=8,
                                            seed=4, start_batch=start), 3)

    full, resumed = batches(0), batches(1)
    for x, y in zip(full[1:], resumed[:2], strict=True):
        for key in x:
            np.testing.assert_array_equal(x[key], y[key])


def test_batch_layout_matches_compile_pretrainer(pairs, tokenizer):
    features, labels, weights = next(iter(pretraining_dataset(
        pairs, tokenizer, seq_len=SEQ_LEN, batch_size=4, max_predictions_per_seq=7)))
    assert {k: tuple(v.shape) for k, v in features.items()} == {
        "input_word_ids": (4, SEQ_LEN), "input_mask": (4, SEQ_LEN),
        "input_type_ids": (4, SEQ_LEN), "masked_lm_positions": (4, 7)}
    assert tuple(labels["mlm"].shape) == (4, 7) and tuple(labels["nsp"].shape) == (4,)
    assert tuple(weights["mlm"].shape) == (4, 7)
    ids, types = features["input_word_ids"].numpy(), features["input_type_ids"].numpy()
    for row in range(4):
        seps = np.nonzero(ids[row] == tokenizer.sep_id)[0]
        length = int(features["input_mask"][row].numpy().sum())
        assert seps[-1] == length - 1
        assert not types[row, : seps[0] + 1].any() and types[row, seps[0] + 1: length].all()
        assert not types[row, length:].any()


def test_prepared_tfrecords_hold_the_same_pairs(corpus, pairs, tokenizer, tmp_path):
    prepared = prepare_pretraining_data([corpus], tokenizer, str(tmp_path / "prepared"),
                                        seq_len=SEQ_LEN, shards=3, seed=1, progress=False)
    assert prepared.num_pairs == pairs.num_pairs and len(prepared.files) == 3

    def key(p):
        return (tuple(p["input_ids"].tolist()), tuple(p["word_starts"].astype(bool).tolist()),
                int(p["segment_a_length"]), int(p["next_sentence_label"]))

    def records(source):
        return collections.Counter(key({k: v.numpy() for k, v in p.items()})
                                   for p in pairs_dataset(source, shuffle=False))

    assert records(load_pairs(str(tmp_path / "prepared"), tokenizer,
                              PairOptions(seq_len=SEQ_LEN))) == records(pairs)
    # Masked batches read straight from the directory.
    features, labels, _ = next(iter(pretraining_dataset(str(tmp_path / "prepared"), tokenizer,
                                                        seq_len=SEQ_LEN, batch_size=8)))
    assert features["input_word_ids"].shape == (8, SEQ_LEN)
    with pytest.raises(DataError, match="seq_len 64, not 128"):
        pretraining_dataset(str(tmp_path / "prepared"), tokenizer, seq_len=128)
    other = BertTokenizer(_vocab() + ["extra"])
    with pytest.raises(DataError, match="different tokenizer"):
        pretraining_dataset(str(tmp_path / "prepared"), other, seq_len=SEQ_LEN)


def test_corpus_format_and_clear_errors(tmp_path, tokenizer):
    path = tmp_path / "c.txt"
    path.write_text("First one.\n  Second one.  \n\n\n\nOther doc.\n", encoding="utf-8")
    assert list(read_documents([str(path)])) == [["First one.", "Second one."], ["Other doc."]]
    missing = str(tmp_path / "missing.txt")
    with pytest.raises(DataError, match="missing.txt: no such corpus file"):
        pretraining_dataset([missing], tokenizer, seq_len=SEQ_LEN)
    with pytest.raises(DataError, match="matches no corpus file"):
        pretraining_dataset([str(tmp_path / "*.none")], tokenizer, seq_len=SEQ_LEN)
    empty = tmp_path / "empty.txt"
    empty.write_text("\n \n", encoding="utf-8")
    with pytest.raises(DataError, match="empty.txt: the corpus file is empty"):
        pretraining_dataset([str(path), str(empty)], tokenizer, seq_len=SEQ_LEN)
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"ok\n\xc3\x28 broken\n")
    with pytest.raises(DataError, match="bad.txt: line 2: not valid UTF-8"):
        pretraining_dataset([str(bad)], tokenizer, seq_len=SEQ_LEN)
    with pytest.raises(DataError, match="not a prepared pretraining directory"):
        pretraining_dataset([str(tmp_path)], tokenizer, seq_len=SEQ_LEN)
