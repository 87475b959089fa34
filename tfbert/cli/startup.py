"""A quiet TensorFlow for the `tfbert` command: its benign notices dropped, real errors kept.

TensorFlow's C++ runtime writes notices to stderr that say nothing is wrong,
some before its log level (`TF_CPP_MIN_LOG_LEVEL`) is even read: that oneDNN
is on, that no CUDA driver was found, which CPU instructions the build could
use, and -- as `E0000` error lines that look like failures -- a failed
`cuInit` on a machine without a GPU and oneDNN's "supports DT_INT64 only on
platforms with AVX-512" fallback. A newcomer's first run should read as
tfbert's story, so the `tfbert` command routes the process's stderr (file
descriptor 2, where C++ writes) through a filter that drops exactly those
lines and passes every other line through, so a real error still shows.
"""

from __future__ import annotations

import atexit
import os
import re
import sys
import threading

# Notices that say nothing is wrong (matched anywhere in a line).
BENIGN = [
    r"All log messages before absl::InitializeLog\(\) is called are written to STDERR",
    r"oneDNN custom operations are on",
    r"Could not find cuda drivers on your machine",
    r"cpu_feature_guard\.cc",
    r"^To enable the following instructions: .*rebuild TensorFlow",
    r"Unable to register cu(DNN|FFT|BLAS) factory",
    r"oneDNN supports DT_\w+ only on platforms with",
]
# Benign only where there is no GPU driver at all (a CPU-only machine).
NO_GPU_BENIGN = [r"failed call to cuInit"]

_installed = False


def benign_patterns() -> re.Pattern:
    """The lines `quiet_stderr` drops, as one pattern."""
    patterns = list(BENIGN)
    if not os.path.exists("/dev/nvidiactl"):
        patterns += NO_GPU_BENIGN
    return re.compile("|".join(f"(?:{p})" for p in patterns))


def quiet_stderr() -> None:
    """Filter this process's stderr (fd 2) from now to exit; a no-op on a second call.

    Child processes inherit the filtered stderr. At exit the real stderr comes
    back and every line written before is delivered.
    """
    global _installed
    if _installed:
        return
    _installed = True
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # C++ errors only (filtered below)
    benign = benign_patterns()
    sys.stderr.flush()
    real = os.dup(2)
    read_end, write_end = os.pipe()
    os.dup2(write_end, 2)
    os.close(write_end)

    def forward() -> None:
        with os.fdopen(read_end, "rb") as lines:
            for line in lines:
                if not benign.search(line.decode("utf-8", errors="replace")):
                    os.write(real, line)

    thread = threading.Thread(target=forward, name="tfbert-stderr", daemon=True)
    thread.start()

    def restore() -> None:
        sys.stderr.flush()
        os.dup2(real, 2)  # closes the pipe's last write end: the thread reads to EOF
        thread.join(timeout=2)

    atexit.register(restore)
