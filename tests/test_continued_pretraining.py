"""`tfbert pretrain --init DIR`: continued pretraining and BERT's two phases.

The MLM/NSP heads of Hugging Face and Google checkpoints load through the
name table and give the reference model's logits and loss; a phase 2 starts
from phase 1's weights with phase 1's optimizer, and its output fine-tunes;
the real all-MiniLM-L6-v2 (no heads in its checkpoint) continues pretraining
far ahead of a fresh model, and the result fine-tunes and exports.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import random
import re

import numpy as np
import pytest
import tensorflow as tf
from conftest import write_topic_corpus

import tfbert
from tfbert.checkpoints import CheckpointError, load_pretrainer
from tfbert.cli import main
from tfbert.text import write_vocab
from tfbert.training.pretrain import run_pretraining

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


# -- Hugging Face and Google checkpoints with pretraining heads ---------------------------

@pytest.fixture(scope="module")
def hf_pretraining_dir(tmp_path_factory):
    """A tiny random `transformers.BertForPreTraining` saved as safetensors, and its torch model.

    Every parameter is perturbed, so biases, LayerNorm parameters and
    transposes all show in the logits.
    """
    import torch
    import transformers

    path = tmp_path_factory.mktemp("hf_pretraining")
    vocab = SPECIALS + [f"w{i}" for i in range(59)]
    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2,
                                     num_attention_heads=2, intermediate_size=64,
                                     max_position_embeddings=64, hidden_act="gelu")
    model = transformers.BertForPreTraining(config).eval()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    model.save_pretrained(path, safe_serialization=True)
    write_vocab(vocab, str(path / "vocab.txt"))
    return str(path), model


def _batch(vocab_size: int, seed: int = 0):
    """ids/mask/type ids with padding, masked positions and their weights (0: padding)."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(5, vocab_size, size=(3, 16)).astype("int32")
    mask = np.ones_like(ids)
    for row, length in enumerate((16, 12, 9)):
        mask[row, length:] = 0
        ids[row, length:] = 0
    ids[:, 0] = 2  # [CLS]
    types = np.zeros_like(ids)
    types[:, 6:] = 1
    types *= mask
    positions = np.array([[1, 4, 9], [2, 3, 11], [5, 8, 0]], "int32")
    ids[np.arange(3)[:, None], positions] = 4  # [MASK]
    weights = np.array([[1, 1, 1], [1, 1, 1], [1, 1, 0]], "float32")  # row 2: 2 predictions
    return {"input_word_ids": ids, "input_mask": mask, "input_type_ids": types,
            "masked_lm_positions": positions, "masked_lm_weights": weights}


def _hf_outputs(model, batch, labels=None, next_sentence=None):
    """BertForPreTraining's MLM logits at the masked positions, NSP logits, and loss."""
    import torch

    ids = batch["input_word_ids"]
    rows = np.arange(len(ids))[:, None]
    kwargs = {}
    if labels is not None:
        # Hugging Face's labels: -100 everywhere but the (real) masked positions.
        hf_labels = np.full(ids.shape, -100)
        real = batch["masked_lm_weights"] > 0
        hf_labels[np.broadcast_to(rows, real.shape)[real], batch["masked_lm_positions"][real]] = \
            labels[real]
        kwargs = {"labels": torch.tensor(hf_labels),
                  "next_sentence_label": torch.tensor(next_sentence)}
    with torch.no_grad():
        out = model(input_ids=torch.tensor(ids, dtype=torch.long),
                    attention_mask=torch.tensor(batch["input_mask"], dtype=torch.long),
                    token_type_ids=torch.tensor(batch["input_type_ids"], dtype=torch.long),
                    **kwargs)
    mlm = out.prediction_logits.numpy()[rows, batch["masked_lm_positions"]]
    loss = None if out.loss is None else float(out.loss)
    return mlm, out.seq_relationship_logits.numpy(), loss


def _tfbert_logits(model, batch):
    out = model({k: v for k, v in batch.items() if k != "masked_lm_weights"}, training=False)
    return out["mlm"].numpy(), out["nsp"].numpy()


def test_hugging_face_heads_give_bert_for_pretraining_logits_and_loss(hf_pretraining_dir):
    path, reference = hf_pretraining_dir
    batch = _batch(reference.config.vocab_size)
    model, info, missing = load_pretrainer(path)
    assert missing == [] and info.task == "encoder"
    mlm, nsp = _tfbert_logits(model, batch)
    labels = np.random.default_rng(1).integers(5, reference.config.vocab_size, size=(3, 3))
    next_sentence = np.array([0, 1, 0])  # class 0 = "is next", in tfbert as in HF and Google
    hf_mlm, hf_nsp, hf_loss = _hf_outputs(reference, batch, labels, next_sentence)
    real = batch["masked_lm_weights"] > 0
    np.testing.assert_allclose(mlm[real], hf_mlm[real], atol=1e-4)
    np.testing.assert_allclose(nsp, hf_nsp, atol=1e-4)
    # The loss of the first training step: L_MLM (over real predictions) + L_NSP.
    tfbert.compile_pretrainer(model, jit_compile=False)
    inputs = {k: v for k, v in batch.items() if k != "masked_lm_weights"}
    loss = model.evaluate(inputs, {"mlm": labels, "nsp": next_sentence},
                          sample_weight={"mlm": batch["masked_lm_weights"],
                                         "nsp": np.ones(3, "float32")},
                          batch_size=3, verbose=0, return_dict=True)["loss"]
    assert abs(loss - hf_loss) < 1e-4


def _google_name(hf_name: str) -> tuple[str, bool]:
    """Google BERT's TF1 name of a Hugging Face parameter, and whether it is transposed."""
    fixed = {"cls.predictions.bias": "cls/predictions/output_bias",
             "cls.seq_relationship.weight": "cls/seq_relationship/output_weights",
             "cls.seq_relationship.bias": "cls/seq_relationship/output_bias"}
    if hf_name in fixed:
        return fixed[hf_name], False
    name = re.sub(r"layer\.(\d+)", r"layer_\1", hf_name).replace(".", "/")
    if "embeddings" in name and "LayerNorm" not in name:
        return name.removesuffix("/weight"), False
    if "LayerNorm" in name:
        return name.replace("/weight", "/gamma").replace("/bias", "/beta"), False
    return name.replace("/weight", "/kernel"), name.endswith("/weight")


def _write_google_dir(path, reference, vocab_file, skip=()) -> str:
    """The reference model's numbers as a Google BERT directory (TF1 checkpoint)."""
    values = {}
    for hf_name, tensor in reference.state_dict().items():
        if hf_name.startswith("cls.predictions.decoder") or hf_name.endswith("position_ids"):
            continue  # tied to the word embeddings / not a weight
        name, transposed = _google_name(hf_name)
        if not name.startswith(tuple(skip)):
            values[name] = tensor.numpy().T if transposed else tensor.numpy()
    os.makedirs(path, exist_ok=True)
    with tf.Graph().as_default():
        variables = [tf.compat.v1.Variable(v, name=n) for n, v in values.items()]
        saver = tf.compat.v1.train.Saver(variables)
        with tf.compat.v1.Session() as session:
            session.run(tf.compat.v1.global_variables_initializer())
            saver.save(session, os.path.join(path, "bert_model.ckpt"))
    c = reference.config
    with open(os.path.join(path, "bert_config.json"), "w", encoding="utf-8") as f:
        json.dump({"vocab_size": c.vocab_size, "hidden_size": c.hidden_size,
                   "num_hidden_layers": c.num_hidden_layers,
                   "num_attention_heads": c.num_attention_heads,
                   "intermediate_size": c.intermediate_size,
                   "max_position_embeddings": c.max_position_embeddings,
                   "type_vocab_size": c.type_vocab_size, "hidden_act": "gelu"}, f)
    with open(vocab_file, encoding="utf-8") as src, \
            open(os.path.join(path, "vocab.txt"), "w", encoding="utf-8") as dst:
        dst.write(src.read())
    return str(path)


def test_google_heads_give_the_same_logits(hf_pretraining_dir, tmp_path):
    path, reference = hf_pretraining_dir
    google = _write_google_dir(tmp_path / "google", reference, os.path.join(path, "vocab.txt"))
    assert "cls/predictions/output_bias" in tf.train.load_checkpoint(
        os.path.join(google, "bert_model.ckpt")).get_variable_to_shape_map()
    batch = _batch(reference.config.vocab_size, seed=2)
    model, _, missing = load_pretrainer(google)
    assert missing == []
    mlm, nsp = _tfbert_logits(model, batch)
    hf_mlm, hf_nsp, _ = _hf_outputs(reference, batch)
    np.testing.assert_allclose(mlm, hf_mlm, atol=1e-4)
    np.testing.assert_allclose(nsp, hf_nsp, atol=1e-4)

    # A checkpoint without the NSP head: the MLM head loads, NSP starts fresh.
    no_nsp = _write_google_dir(tmp_path / "no_nsp", reference, os.path.join(path, "vocab.txt"),
                               skip=["cls/seq_relationship"])
    model, _, missing = load_pretrainer(no_nsp)
    assert missing == ["nsp"]
    np.testing.assert_allclose(_tfbert_logits(model, batch)[0], hf_mlm, atol=1e-4)
    # Half a head is refused, naming what is missing.
    partial = _write_google_dir(tmp_path / "partial", reference,
                                os.path.join(path, "vocab.txt"),
                                skip=["cls/predictions/transform/LayerNorm"])
    with pytest.raises(CheckpointError, match="incomplete MLM head.*mlm/layer_norm"):
        load_pretrainer(partial)


# -- two phases (BERT / NVIDIA's recipe, in miniature) -------------------------------------

TOPICS, WORDS_PER_TOPIC = 8, 3


def _topic_corpus(path, documents=200, seed=0) -> tuple[str, list[str]]:
    """Documents of 4-8 lines whose words come from one topic's three."""
    words = [f"{a}{b}" for a in "bcdfghjk" for b in ("ap", "ot", "um")]
    return write_topic_corpus(path, words, TOPICS, WORDS_PER_TOPIC, documents, (4, 8),
                              random.Random(seed)), words


def _history(directory) -> list[dict]:
    with open(os.path.join(directory, "history.json"), encoding="utf-8") as f:
        return json.load(f)


def _config_json(directory) -> dict:
    with open(os.path.join(directory, "config.json"), encoding="utf-8") as f:
        return json.load(f)


PHASE2_STEPS, PHASE2_LR = 10, 1e-3


@pytest.fixture(scope="module")
def phases(tmp_path_factory):
    """BERT's two phases on a tiny config: phase 1, a fresh BERT at seq-len 128 with LAMB;
    phase 2, `tfbert pretrain --init PHASE1 --seq-len 512`, nothing else about the model."""
    root = tmp_path_factory.mktemp("phases")
    corpus, words = _topic_corpus(root / "corpus.txt")
    vocab = str(root / "vocab.txt")
    write_vocab(SPECIALS + words, vocab)
    config = tfbert.BertConfig(vocab_size=len(SPECIALS) + len(words), hidden_size=32,
                               num_layers=2, num_heads=2, intermediate_size=64,
                               max_position_embeddings=512, hidden_dropout=0.0,
                               attention_dropout=0.0)
    phase1, phase2 = str(root / "phase1"), str(root / "phase2")
    run_pretraining([corpus], vocab, config, phase1, steps=20, batch_size=32, seq_len=128,
                    learning_rate=2e-2, optimizer="lamb", steps_per_epoch=10,
                    max_predictions_per_seq=5, verbose=0)
    with contextlib.redirect_stderr(io.StringIO()) as stderr:
        status = main(["pretrain", "--init", phase1, "--corpus", corpus, "--output", phase2,
                       "--seq-len", "512", "--steps", str(PHASE2_STEPS), "--batch-size", "16",
                       "--learning-rate", str(PHASE2_LR), "--max-predictions-per-seq", "10",
                       "--quiet"])
    return {"root": root, "corpus": corpus, "vocab": vocab, "words": words, "phase1": phase1,
            "phase2": phase2, "status": status, "stderr": stderr.getvalue()}


def test_phase_2_starts_from_phase_1_with_its_optimizer_at_seq_len_512(phases):
    assert phases["status"] == 0, phases["stderr"]
    assert "head weights" not in phases["stderr"]  # phase 1 has both heads
    phase1, phase2 = phases["phase1"], phases["phase2"]
    config = _config_json(phase2)
    assert config["task"] == "pretrain" and config["max_seq_length"] == 512
    record = config["pretraining"]
    assert record["optimizer"] == "lamb"  # phase 1's, not the adamw default
    assert record["seq_len"] == 512 and record["steps"] == PHASE2_STEPS
    assert record["init"] == os.path.abspath(phase1)
    assert _config_json(phase1)["pretraining"]["optimizer"] == "lamb"
    assert [r["epoch"] for r in _history(phase2)] == [1]
    with open(os.path.join(phase2, "vocab.txt"), encoding="utf-8") as f:
        assert f.read().split() == SPECIALS + phases["words"]

    # LAMB moves every tensor by at most learning_rate x its norm per step, so
    # after 10 steps at 1e-3 each tensor of phase 2 (encoder and both heads)
    # lies within ~1% of phase 1's; a fresh start would be ~100% away.
    before = {w.path: w.numpy() for w in tfbert.load_model(phase1)[0].weights}
    after = {w.path: w.numpy() for w in tfbert.load_model(phase2)[0].weights}
    assert before.keys() == after.keys() and any(k.startswith("mlm/") for k in after)
    bound = PHASE2_STEPS * PHASE2_LR
    for path, value in after.items():
        moved = np.linalg.norm(value - before[path]) / np.linalg.norm(before[path])
        assert 0 < moved < 1.5 * bound, (path, moved)


def test_phase_2_output_fine_tunes(phases, tmp_path):
    from tfbert.training.finetune import run_finetune

    words = phases["words"]
    train = tmp_path / "train.jsonl"
    with open(train, "w", encoding="utf-8") as f:
        for i in range(32):
            label = i % 2
            text = " ".join(words[(3 * label + j) % 6] for j in range(5))
            f.write(json.dumps({"text": text, "label": ["a", "b"][label]}) + "\n")
    run_finetune(str(train), phases["phase2"], str(tmp_path / "classifier"), epochs=1,
                 batch_size=16, max_seq_length=32, verbose=0)
    classifier, info = tfbert.load_model(tmp_path / "classifier")
    assert info.task == "classify" and info.labels == ["a", "b"]
    # A fine-tuned model can be pretrained further too: its encoder, fresh heads.
    pretrainer, _, missing = load_pretrainer(tmp_path / "classifier")
    assert missing == ["mlm", "nsp"]
    tuned = {w.path: w.numpy() for w in classifier.weights}
    for w in pretrainer.get_layer("bert_encoder").weights:
        np.testing.assert_array_equal(w.numpy(), tuned[w.path])


def test_bad_init_flags_are_one_line_errors(phases, tmp_path, capsys):
    def error(argv) -> str:
        assert main(["pretrain", "--corpus", phases["corpus"], "--output",
                     str(tmp_path / "out"), "--quiet", *argv]) == 2
        [line] = capsys.readouterr().err.splitlines()
        assert line.startswith("tfbert pretrain: error: ")
        return line

    init = phases["phase1"]
    assert "--config and --init exclude each other" in error(
        ["--init", init, "--config", "tiny"])
    assert "give --config PRESET|JSON (a new model) or --init DIR" in error(
        ["--vocab", phases["vocab"]])
    assert "--config needs --vocab" in error(["--config", "tiny"])
    line = error(["--init", init, "--seq-len", "1024"])
    assert init in line and "seq_len 1024" in line and "max_position_embeddings (512)" in line
    other = tmp_path / "other_vocab.txt"
    write_vocab(SPECIALS + list(reversed(phases["words"])), str(other))
    line = error(["--init", init, "--vocab", str(other)])
    assert str(other) in line and init in line and "differs" in line
    line = error(["--init", init, "--cased"])
    assert init in line and "uncased" in line
    assert not os.path.exists(tmp_path / "out" / "config.json")


# -- continued pretraining of the real all-MiniLM-L6-v2 ------------------------------------

PEOPLE = ["the doctor", "the teacher", "my sister", "the farmer", "our neighbour", "the pilot",
          "a student", "the king"]
VERBS = ["bought", "found", "painted", "sold", "cleaned", "opened", "lost", "carried"]
THINGS = ["a red car", "the old house", "a small boat", "the wooden door", "a new phone",
          "the blue box", "an apple", "the heavy bag"]
WHEN = ["in the city", "near the river", "at the market", "in the morning", "after dinner",
        "on monday", "at school", "in the garden"]
# One run's shape, shared by the continued and the from-scratch run.
MINILM_RUN = dict(steps=30, steps_per_epoch=10, batch_size=8, seq_len=32, learning_rate=5e-4,
                  max_predictions_per_seq=5, verbose=0)


def _english_corpus(path, documents=60, seed=0) -> str:
    """A few hundred short template sentences in BERT's corpus format."""
    rng = random.Random(seed)
    with open(path, "w", encoding="utf-8") as f:
        for _ in range(documents):
            for _ in range(rng.randint(3, 6)):
                f.write(f"{rng.choice(PEOPLE)} {rng.choice(VERBS)} {rng.choice(THINGS)} "
                        f"{rng.choice(WHEN)}.\n")
            f.write("\n")
    return str(path)


def test_minilm_continues_pretraining_far_ahead_of_a_fresh_model(minilm_dir, tmp_path, capsys):
    corpus = _english_corpus(tmp_path / "corpus.txt")
    continued = str(tmp_path / "continued")
    run_pretraining([corpus], output_dir=continued, init=minilm_dir, **MINILM_RUN)
    err = capsys.readouterr().err
    assert err.count(f"no MLM/NSP head weights in {minilm_dir}: the heads start from "
                     "scratch") == 1  # its checkpoint is a bare BertModel

    scratch = str(tmp_path / "scratch")
    config = tfbert.BertConfig(vocab_size=30522, hidden_size=64, num_layers=2, num_heads=2,
                               intermediate_size=256, max_position_embeddings=64)
    run_pretraining([corpus], os.path.join(minilm_dir, "vocab.txt"), config, scratch,
                    **MINILM_RUN)

    ours, fresh = _history(continued), _history(scratch)
    assert len(ours) == len(fresh) == 3
    # Even with fresh heads, MiniLM's encoder puts it far ahead from the first epoch on.
    assert ours[0]["mlm_accuracy"] > max(2 * fresh[0]["mlm_accuracy"], 0.08)
    assert ours[0]["mlm_loss"] < fresh[0]["mlm_loss"] - 2
    # ...and it keeps learning.
    assert ours[-1]["mlm_accuracy"] > ours[0]["mlm_accuracy"] + 0.03
    assert ours[-1]["mlm_loss"] < 0.75 * ours[0]["mlm_loss"]

    config = _config_json(continued)
    assert config["task"] == "pretrain" and config["lowercase"] is True
    assert config["bert"]["hidden_size"] == 384 and config["bert"]["num_layers"] == 6
    assert config["pretraining"]["optimizer"] == "adamw"  # MiniLM records none
    assert config["pretraining"]["init"] == os.path.abspath(minilm_dir)
    with open(os.path.join(continued, "vocab.txt"), encoding="utf-8") as a, \
            open(os.path.join(minilm_dir, "vocab.txt"), encoding="utf-8") as b:
        assert a.read().split() == b.read().split()

    # The result is a model directory like any other: it fine-tunes and exports.
    from tfbert.export import export_model
    from tfbert.training.finetune import run_finetune

    train = tmp_path / "train.jsonl"
    train.write_text("".join(json.dumps({"text": text, "label": label}) + "\n"
                             for text, label in [("the doctor sold a red car", "sale"),
                                                 ("the pilot found an apple", "find")] * 8))
    run_finetune(str(train), continued, str(tmp_path / "classifier"), epochs=1, batch_size=8,
                 max_seq_length=16, compile="attention", verbose=0)
    assert tfbert.load_model(tmp_path / "classifier")[1].labels == ["find", "sale"]
    path, report = export_model(continued, "continued", base=tmp_path / "sm", xla=False)
    assert report.ok, report.problems
    assert {"serving_default", "fill_mask"} <= set(report.signatures)
