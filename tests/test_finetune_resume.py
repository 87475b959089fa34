"""`tfbert finetune --resume` after a kill -9 ends where an uninterrupted run ends."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from conftest import make_tiny_init_dir

import tfbert
from tfbert.training.finetune import run_finetune

pytestmark = pytest.mark.timeout(400)

WORDS = {"sports": "goal match team coach striker keeper cup league".split(),
         "tech": "chip laptop kernel server software update phone battery".split()}


def _write_train(path, n=48):
    rng = np.random.default_rng(0)
    with open(path, "w") as f:
        for i in range(n):
            label = "sports" if i % 2 else "tech"
            words = rng.choice(WORDS[label], size=6)
            f.write(json.dumps({"text": " ".join(words), "label": label}) + "\n")


def _checkpoint_step(directory) -> int:
    state = os.path.join(directory, "checkpoint")
    if not os.path.exists(state):
        return 0
    text = open(state).read()
    return max((int(line.rsplit("-", 1)[-1].strip('"')) for line in text.splitlines()
                if line.startswith("model_checkpoint_path")), default=0)


def test_kill_9_then_resume_matches_an_uninterrupted_run(minilm_dir, tmp_path):
    init = make_tiny_init_dir(minilm_dir, str(tmp_path / "init"))
    train = tmp_path / "train.jsonl"
    _write_train(train)
    args = dict(epochs=4, batch_size=4, learning_rate=1e-3, max_seq_length=16, seed=3)

    reference = run_finetune(str(train), init, str(tmp_path / "whole"), verbose=0, **args)

    out = tmp_path / "crashed"
    command = [sys.executable, "-m", "tfbert", "finetune", "--train", str(train),
               "--init", init, "--output", str(out), "--epochs", "4", "--batch-size", "4",
               "--learning-rate", "1e-3", "--max-seq-length", "16", "--seed", "3",
               "--checkpoint-every", "5"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 240
    while _checkpoint_step(out / "checkpoints") < 15 and process.poll() is None:
        assert time.time() < deadline, "no checkpoint appeared"
        time.sleep(0.2)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL, process.stderr.read().decode()[-2000:]
    assert not (out / "model.weights.h5").exists()  # it really died mid-run
    stopped_at = _checkpoint_step(out / "checkpoints")
    assert 15 <= stopped_at < 48

    resumed = run_finetune(str(train), init, str(out), resume=True, verbose=0, **args)
    assert resumed.optimizer.iterations.numpy() == reference.optimizer.iterations.numpy() == 48
    for a, b in zip(resumed.weights, reference.weights, strict=True):
        np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-5, err_msg=a.path)
    history = json.load(open(out / "history.json"))
    assert [r["epoch"] for r in history] == [1, 2, 3, 4]
    assert not (out / "checkpoints").exists()  # cleared once the model is saved
    model, info = tfbert.load_model(out)
    assert info.labels == ["sports", "tech"]
