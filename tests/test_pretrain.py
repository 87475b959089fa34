"""`tfbert pretrain`: a tiny BERT learns MLM + NSP, survives kill -9, runs mirrored."""

import json
import os
import random
import re
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
from conftest import TWO_LOGICAL_CPUS, tensorboard_scalars, write_topic_corpus

import tfbert
from tfbert.data.pretraining import PairOptions, build_pairs
from tfbert.text import load_tokenizer, write_vocab
from tfbert.text.vocab_learning import learn_vocab
from tfbert.training.pretrain import run_pretraining
from tfbert.training.resume import TrainingCheckpoint

TOPICS, WORDS_PER_TOPIC, SEQ_LEN = 12, 3, 32
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _write_topic_corpus(path, documents=300, seed=0):
    """Documents of 6-12 lines, each drawing its words from one topic's three random words."""
    rng = random.Random(seed)
    words = sorted({"".join(rng.choices("abcdefghijklmnopqrstuvwxyz", k=5)) for _ in range(80)})
    rng.shuffle(words)
    return write_topic_corpus(path, words, TOPICS, WORDS_PER_TOPIC, documents, (6, 12), rng)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("pretrain")
    corpus = _write_topic_corpus(root / "corpus.txt")
    vocab = str(root / "vocab.txt")
    write_vocab(learn_vocab([corpus], vocab_size=150, progress=False), vocab)
    size = load_tokenizer(vocab).vocab_size
    config = tfbert.BertConfig(vocab_size=size, hidden_size=64, num_layers=2, num_heads=2,
                               intermediate_size=128, max_position_embeddings=64,
                               hidden_dropout=0.0, attention_dropout=0.0)
    config_json = root / "bert_tiny.json"
    config_json.write_text(config.to_json(), encoding="utf-8")
    return {"root": root, "corpus": corpus, "vocab": vocab, "config": str(config_json)}


def _history(output_dir):
    with open(os.path.join(output_dir, "history.json"), encoding="utf-8") as f:
        return json.load(f)


# One run's settings, shared by the uninterrupted and the killed-and-resumed run.
RUN = dict(steps=200, batch_size=32, seq_len=SEQ_LEN, learning_rate=3e-3,
           max_predictions_per_seq=5, steps_per_epoch=50, checkpoint_every=20)
CLI_RUN = ["--steps", "200", "--batch-size", "32", "--seq-len", str(SEQ_LEN),
           "--learning-rate", "3e-3", "--max-predictions-per-seq", "5",
           "--steps-per-epoch", "50", "--checkpoint-every", "20"]


@pytest.fixture(scope="module")
def uninterrupted(setup):
    out = str(setup["root"] / "uninterrupted")
    model = run_pretraining([setup["corpus"]], setup["vocab"], setup["config"], out, verbose=0,
                            **RUN)
    return out, model


def test_tiny_pretraining_learns_mlm_and_nsp_and_saves_a_loadable_model(setup, uninterrupted):
    out, model = uninterrupted
    history = _history(out)
    assert [r["epoch"] for r in history] == [1, 2, 3, 4]
    final = history[-1]
    # Chance for MLM: the best guess without context is one word of 36 (all
    # equally frequent). NSP chance: always answering the more frequent label.
    mlm_chance = 1 / (TOPICS * WORDS_PER_TOPIC)
    labels = build_pairs([setup["corpus"]], load_tokenizer(setup["vocab"]),
                         PairOptions(seq_len=SEQ_LEN)).next_sentence_labels
    nsp_chance = max(labels.mean(), 1 - labels.mean())
    assert final["mlm_accuracy"] > 6 * mlm_chance
    assert final["nsp_accuracy"] > nsp_chance + 0.2
    assert final["loss"] < 0.6 * history[0]["loss"]
    assert int(model.optimizer.iterations.numpy()) == RUN["steps"]

    loaded, info = tfbert.load_model(out)
    assert info.task == "pretrain" and info.max_seq_length == SEQ_LEN and info.lowercase
    assert set(loaded.output_names) == {"mlm", "nsp"}
    encoder = tfbert.load_encoder(out)
    tok = load_tokenizer(out)
    outputs = encoder(tok(["some text"], max_length=SEQ_LEN))
    assert outputs["pooled_output"].shape == (1, 64)


def test_kill_9_then_resume_ends_where_an_uninterrupted_run_ends(setup, uninterrupted, capsys):
    out = str(setup["root"] / "killed")
    process = subprocess.Popen(
        [sys.executable, "-m", "tfbert", "pretrain", "--corpus",
         setup["corpus"], "--vocab", setup["vocab"], "--config", setup["config"], "--output",
         out, *CLI_RUN, "--quiet"],
        cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    state = os.path.join(out, "checkpoints", "checkpoint")
    deadline = time.time() + 240
    while not os.path.exists(state):
        assert process.poll() is None, process.stderr.read().decode()[-2000:]
        assert time.time() < deadline, "no checkpoint within 4 minutes"
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    process.stderr.close()
    assert process.returncode == -signal.SIGKILL
    assert not os.path.exists(os.path.join(out, "model.weights.h5"))  # killed mid-run
    saved_step = TrainingCheckpoint(os.path.join(out, "checkpoints"), 20).latest_step

    capsys.readouterr()
    model = run_pretraining([setup["corpus"]], setup["vocab"], setup["config"], out,
                            resume=True, verbose=2, **RUN)
    resumed_at = int(capsys.readouterr().out.split("Resuming at step ")[1].split()[0])
    assert resumed_at == saved_step and 20 <= resumed_at < RUN["steps"]
    # Same step count, same epochs, and — data position, masks, optimizer
    # state and dropout RNG all restored — the same weights.
    assert int(model.optimizer.iterations.numpy()) == RUN["steps"]
    assert [r["epoch"] for r in _history(out)] == [1, 2, 3, 4]
    for resumed, reference in zip(model.weights, uninterrupted[1].weights, strict=True):
        np.testing.assert_allclose(np.asarray(resumed), np.asarray(reference), atol=1e-5)
    loaded, info = tfbert.load_model(out)
    assert info.task == "pretrain"

    # Resuming a finished run trains nothing more; other settings are refused.
    again = run_pretraining([setup["corpus"]], setup["vocab"], setup["config"], out,
                            resume=True, verbose=0, **RUN)
    assert int(again.optimizer.iterations.numpy()) == RUN["steps"]
    with pytest.raises(ValueError, match="batch_size was 32, now 16"):
        run_pretraining([setup["corpus"]], setup["vocab"], setup["config"], out,
                        resume=True, verbose=0, **{**RUN, "batch_size": 16})


def test_mirrored_strategy_on_two_logical_cpus(setup):
    out = str(setup["root"] / "mirrored")
    script = TWO_LOGICAL_CPUS + textwrap.dedent(f"""
        from tfbert.training.pretrain import run_pretraining
        model = run_pretraining([{setup["corpus"]!r}], {setup["vocab"]!r}, {setup["config"]!r},
                                {out!r}, steps=6, batch_size=8, seq_len={SEQ_LEN},
                                max_predictions_per_seq=5, strategy="mirrored", verbose=0)
        print(json.dumps({{"replicas": model.distribute_strategy.num_replicas_in_sync,
                          "steps": int(model.optimizer.iterations.numpy())}}))
    """)
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True,
                            text=True, timeout=300,
                            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report == {"replicas": 2, "steps": 6}
    assert _history(out)[-1]["epoch"] >= 1
    tfbert.load_encoder(out)


def test_accumulation_counts_updates_and_tensorboard_logs_them(setup):
    out, logs = str(setup["root"] / "accumulated"), str(setup["root"] / "logs")
    model = run_pretraining([setup["corpus"]], setup["vocab"], setup["config"], out, steps=6,
                            batch_size=8, seq_len=SEQ_LEN, max_predictions_per_seq=5,
                            learning_rate=1e-3, warmup=0, steps_per_epoch=3,
                            accumulation_steps=2, tensorboard=logs, verbose=0)
    assert int(model.optimizer.iterations.numpy()) == 6  # updates, not micro-batches
    history = _history(out)
    assert [r["epoch"] for r in history] == [1, 2]
    train = tensorboard_scalars(logs)["train"]
    assert {"epoch_loss", "epoch_mlm_accuracy", "epoch_nsp_accuracy"} <= set(train)
    np.testing.assert_allclose(train["epoch_loss"], [r["loss"] for r in history], rtol=1e-5)
    # Linear decay from 1e-3 over 6 updates, read after updates 3 and 6.
    np.testing.assert_allclose(train["epoch_learning_rate"], [5e-4, 0.0], atol=1e-9)


def test_bad_input_is_one_line_with_exit_2(setup, tmp_path, capsys):
    from tfbert.cli import main

    def error_line() -> str:
        [line] = capsys.readouterr().err.splitlines()
        assert line.startswith("tfbert pretrain: error: ")
        return line

    base = ["pretrain", "--vocab", setup["vocab"], "--config", setup["config"], "--output",
            str(tmp_path / "out"), "--seq-len", str(SEQ_LEN), "--quiet"]
    missing = str(tmp_path / "missing.txt")
    assert main(base + ["--corpus", missing]) == 2
    assert missing in error_line()
    assert main(["pretrain", "--corpus", setup["corpus"], "--vocab", setup["vocab"], "--config",
                 "gigantic", "--output", str(tmp_path / "out")]) == 2
    assert re.search("unknown preset|neither a preset", error_line())
    wrong = tfbert.BertConfig.from_preset("tiny", vocab_size=7)
    (tmp_path / "wrong.json").write_text(wrong.to_json(), encoding="utf-8")
    assert main(["pretrain", "--corpus", setup["corpus"], "--vocab", setup["vocab"], "--config",
                 str(tmp_path / "wrong.json"), "--output", str(tmp_path / "out")]) == 2
    assert "vocab_size 7 does not match" in error_line()
