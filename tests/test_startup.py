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
    benign = startup._benign_patterns()
    notices = [
        "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
        "I0000 00:00:17 1 port.cc:153] oneDNN custom operations are on. You may see slightly",
        "I0000 00:00:17 1 cudart_stub.cc:31] Could not find cuda drivers on your machine, GPU",
    ]
    real = [
        "E0000 00:00:17 1 op_kernel.cc:1] OP_REQUIRES failed at lookup_table_op.cc: NOT_FOUND",
        "F0000 00:00:17 1 mkl_util.h:1] Check failed: status == 0",
        "ImportError: libcudnn.so.9: cannot open shared object file",
    ]
    assert all(benign.search(line) for line in notices)
    assert not any(benign.search(line) for line in real)
