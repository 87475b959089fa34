"""A quiet TensorFlow start-up for the `tfbert` command.

TensorFlow's C++ runtime writes notices to stderr while it loads, before its
log level (`TF_CPP_MIN_LOG_LEVEL`) is read: that oneDNN is on, that no CUDA
driver was found, which CPU instructions the build could use, and on a
machine without a GPU an `E0000 ... failed call to cuInit` that looks like a
failure but is not one. A newcomer's first run should start with tfbert's own
output, so the command imports TensorFlow with stderr captured, drops exactly
those notices and passes every other line through: a real error still shows.
"""

from __future__ import annotations

import os
import re
import sys
import tempfile

# Start-up notices that say nothing is wrong (matched anywhere in a line).
BENIGN = [
    r"All log messages before absl::InitializeLog\(\) is called are written to STDERR",
    r"oneDNN custom operations are on",
    r"Could not find cuda drivers on your machine",
    r"cpu_feature_guard\.cc",
    r"^To enable the following instructions: .*rebuild TensorFlow",
    r"Unable to register cu(DNN|FFT|BLAS) factory",
]
# Benign only where there is no GPU driver at all (a CPU-only machine).
NO_GPU_BENIGN = [r"failed call to cuInit"]


def _benign_patterns() -> re.Pattern:
    patterns = list(BENIGN)
    if not os.path.exists("/dev/nvidiactl"):
        patterns += NO_GPU_BENIGN
    return re.compile("|".join(f"(?:{p})" for p in patterns))


def import_tensorflow() -> None:
    """Import TensorFlow and find its devices, dropping only the benign start-up notices.

    A no-op once TensorFlow is imported (in Python, or by an earlier call).
    """
    if "tensorflow" in sys.modules:
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # later notices: warnings and up only
    sys.stderr.flush()
    with tempfile.TemporaryFile() as captured:
        saved = os.dup(2)
        os.dup2(captured.fileno(), 2)
        try:
            import tensorflow as tf

            tf.config.list_physical_devices()  # device discovery logs (cuInit) happen here
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
        captured.seek(0)
        text = captured.read().decode("utf-8", errors="replace")
    benign = _benign_patterns()
    kept = [line for line in text.splitlines(keepends=True) if not benign.search(line)]
    if kept:
        sys.stderr.write("".join(kept))
        sys.stderr.flush()
