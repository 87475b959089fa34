"""A first run starts with tfbert's own output: no TensorFlow start-up noise on a
CPU machine, while real errors still reach stderr."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tfbert.cli import startup


def test_a_command_prints_nothing_from_tensorflow_on_stderr(minilm_dir):
    # As a user's shell would run it: no TF_CPP_MIN_LOG_LEVEL set.
    env = {k: v for k, v in os.environ.items() if not k.startswith("TF_CPP")}
    run = subprocess.run([sys.executable, "-m", "tfbert", "tokenize", "--model", minilm_dir],
                         input="Hello world\n", capture_output=True, text=True, timeout=120,
                         env=env)
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["tokens"] == ["hello", "world"]
    assert run.stderr == ""


def test_only_the_benign_start_up_notices_are_dropped():
    benign = startup.benign_patterns()
    notices = [
        "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
        "I0000 00:00:17 1 port.cc:153] oneDNN custom operations are on. You may see slightly",
        "I0000 00:00:17 1 cudart_stub.cc:31] Could not find cuda drivers on your machine, GPU",
        "E0000 00:00:17 1 util.cc:131] oneDNN supports DT_INT64 only on platforms with AVX-512.",
    ]
    real = [
        "E0000 00:00:17 1 op_kernel.cc:1] OP_REQUIRES failed at lookup_table_op.cc: NOT_FOUND",
        "F0000 00:00:17 1 mkl_util.h:1] Check failed: status == 0",
        "ImportError: libcudnn.so.9: cannot open shared object file",
    ]
    assert all(benign.search(line) for line in notices)
    assert not any(benign.search(line) for line in real)


def test_fine_tuning_shows_no_tensorflow_error_lines(minilm_dir, tmp_path):
    # Training is where TensorFlow logs oneDNN's int64 fallback as an "E0000" line.
    from conftest import make_tiny_init_dir

    init = make_tiny_init_dir(minilm_dir, str(tmp_path / "init"))
    train = tmp_path / "train.jsonl"
    train.write_text("".join(json.dumps({"text": t, "label": y}) + "\n"
                             for t, y in [("a goal in the final", "sports"),
                                          ("a faster laptop chip", "tech")] * 4))
    env = {k: v for k, v in os.environ.items() if not k.startswith("TF_CPP")}
    run = subprocess.run([sys.executable, "-m", "tfbert", "finetune", "--train", str(train),
                          "--init", init, "--output", str(tmp_path / "out"), "--epochs", "1",
                          "--batch-size", "4", "--max-seq-length", "16"],
                         capture_output=True, text=True, timeout=240, env=env)
    assert run.returncode == 0, run.stderr
    assert "wrote" in run.stdout
    noise = [line for line in run.stderr.splitlines()
             if line[:5] in ("E0000", "W0000", "I0000") or "oneDNN" in line or "cuInit" in line]
    assert noise == []
