"""Writing files so that a reader sees the old content or the new, never half of it.

Model directories, exports, checkpoints and `history.json` are read by other
processes (TF Serving polling a base path, a resumed run, a user's `tail`)
while tfbert writes them; every such write goes through here.

Example:

>>> import os, tempfile
>>> path = os.path.join(tempfile.mkdtemp(), "run.json")
>>> write_json_atomically(path, {"step": 3})
>>> open(path).read()
'{\\n  "step": 3\\n}'
"""

from __future__ import annotations

import json
import os
import tempfile
from typing import Any


def write_atomically(path: str | os.PathLike, data: bytes | str) -> None:
    """Write `data` (bytes, or text as UTF-8) to `path` via a temporary sibling and rename.

    The temporary file sits in the same directory, so the rename is atomic on
    POSIX filesystems; on failure it is removed and `path` keeps its old content.
    """
    path = os.fspath(path)
    directory = os.path.dirname(path) or "."
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(path)}.tmp-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode("utf-8") if isinstance(data, str) else data)
        os.chmod(tmp, 0o644)  # mkstemp makes it private; readers may be other users
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def write_json_atomically(path: str | os.PathLike, data: Any) -> None:
    """`data` as indented UTF-8 JSON, written with `write_atomically`."""
    write_atomically(path, json.dumps(data, indent=2, ensure_ascii=False))


__all__ = ["write_atomically", "write_json_atomically"]
