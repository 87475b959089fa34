"""SavedModel protos: reading signatures, rewriting a signature's method name.

Shared by the exporter and the server (which must not depend on each other).

TF2's ``tf.saved_model.save`` writes every signature with method name
``tensorflow/serving/predict``. TF Serving's Classify (and Regress) RPCs only
accept a signature whose ``method_name`` says so, hence :func:`set_method_name`,
which rewrites ``saved_model.pb`` in place.
"""

from __future__ import annotations

import logging
import os

from tensorflow.core.protobuf import meta_graph_pb2, saved_model_pb2

from tfbert.files import write_atomically

PREDICT_METHOD = "tensorflow/serving/predict"
CLASSIFY_METHOD = "tensorflow/serving/classify"
REGRESS_METHOD = "tensorflow/serving/regress"
DEFAULT_SIGNATURE = "serving_default"
SERVE_TAG = "serve"
INIT_OP_SIGNATURE = "__saved_model_init_op"

_log = logging.getLogger(__name__)


def read_saved_model(saved_model_dir: str) -> saved_model_pb2.SavedModel:
    """Parses ``saved_model.pb`` (or ``saved_model.pbtxt``) of a SavedModel directory."""
    pb = os.path.join(saved_model_dir, "saved_model.pb")
    proto = saved_model_pb2.SavedModel()
    if os.path.exists(pb):
        with open(pb, "rb") as f:
            proto.ParseFromString(f.read())
        return proto
    pbtxt = os.path.join(saved_model_dir, "saved_model.pbtxt")
    if os.path.exists(pbtxt):
        from google.protobuf import text_format

        with open(pbtxt, encoding="utf-8") as f:
            text_format.Parse(f.read(), proto)
        return proto
    raise FileNotFoundError(f"no saved_model.pb or saved_model.pbtxt in {saved_model_dir}")


def serving_meta_graph(
    proto: saved_model_pb2.SavedModel, tags: tuple[str, ...] = (SERVE_TAG,)
) -> meta_graph_pb2.MetaGraphDef:
    """Returns the MetaGraphDef whose tag set is exactly ``tags`` (TF Serving loads {serve})."""
    wanted = set(tags)
    for meta_graph in proto.meta_graphs:
        if set(meta_graph.meta_info_def.tags) == wanted:
            return meta_graph
    found = [sorted(m.meta_info_def.tags) for m in proto.meta_graphs]
    raise ValueError(f"no MetaGraph with tags {sorted(wanted)} (found {found})")


def read_signature_defs(
    saved_model_dir: str, tags: tuple[str, ...] = (SERVE_TAG,)
) -> dict[str, meta_graph_pb2.SignatureDef]:
    """Returns the SignatureDef map of the ``serve`` MetaGraph of a SavedModel."""
    meta_graph = serving_meta_graph(read_saved_model(saved_model_dir), tags)
    return {key: value for key, value in meta_graph.signature_def.items()}


def set_method_name(
    saved_model_dir: str, signature: str, method: str, tags: tuple[str, ...] = (SERVE_TAG,)
) -> None:
    """Rewrites the ``method_name`` of one signature in ``saved_model.pb``.

    Args:
        saved_model_dir: a SavedModel directory containing ``saved_model.pb``.
        signature: the signature key, e.g. ``"classify"``.
        method: e.g. :data:`CLASSIFY_METHOD` (``"tensorflow/serving/classify"``).
        tags: the MetaGraph to edit; TF Serving loads the ``serve`` one.

    Raises:
        KeyError: the signature does not exist.

    Example:
        set_method_name("savedmodels/clf/1", "classify", CLASSIFY_METHOD)
    """
    path = os.path.join(saved_model_dir, "saved_model.pb")
    proto = saved_model_pb2.SavedModel()
    with open(path, "rb") as f:
        proto.ParseFromString(f.read())
    meta_graph = serving_meta_graph(proto, tags)
    if signature not in meta_graph.signature_def:
        raise KeyError(
            f"signature {signature!r} not in {saved_model_dir} "
            f"(have {sorted(meta_graph.signature_def)})"
        )
    meta_graph.signature_def[signature].method_name = method
    # A reader never sees a truncated saved_model.pb.
    write_atomically(path, proto.SerializeToString(deterministic=True))
    _refresh_fingerprint(saved_model_dir)


def _refresh_fingerprint(saved_model_dir: str) -> None:
    """Recomputes ``fingerprint.pb``, whose checksum covers ``saved_model.pb``.

    Loaders only log the fingerprint, so a stale one is harmless; refreshing it
    keeps the directory identical to what ``tf.saved_model.save`` would write.
    The pywrap module is private TF API, so failure just leaves the old file.
    """
    fingerprint = os.path.join(saved_model_dir, "fingerprint.pb")
    if not os.path.exists(fingerprint):
        return
    try:
        from tensorflow.python.saved_model.pywrap_saved_model import (
            fingerprinting as fingerprinting_pywrap,
        )

        write_atomically(fingerprint,
                         fingerprinting_pywrap.CreateFingerprintDef(saved_model_dir))
    except Exception as exc:  # noqa: BLE001 - best effort, see docstring
        _log.debug("could not refresh %s: %s", fingerprint, exc)
