"""Request handling for Predict, Classify and GetModelMetadata, free of gRPC.

Each function takes a loaded :class:`~tfbert.serving.model_store.Servable`, a
request proto and a ``run`` callable (direct or batched), and returns the
response proto or raises :class:`~tfbert.serving.errors.StatusError` with the
code TF Serving answers with:

- unknown Predict signature: FAILED_PRECONDITION ``Serving signature key "x"
  not found.`` (TF Serving's predict_util); unknown Classify signature or one
  whose method is not classify: INVALID_ARGUMENT (TF Serving's classifier).
- missing/extra inputs, wrong dtype, shape not compatible with the
  signature, unparsable tensors, unknown ``output_filter`` aliases, too many
  rows: INVALID_ARGUMENT.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import grpc
import numpy as np
import tensorflow as tf
from tensorflow.core.framework import types_pb2
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    predict_pb2,
)

from tfbert.saved_model import CLASSIFY_METHOD, DEFAULT_SIGNATURE
from tfbert.serving.errors import StatusError, invalid_argument
from tfbert.serving.model_store import Servable

Run = Callable[[Servable, str, dict[str, np.ndarray]], dict[str, np.ndarray]]

CLASSIFY_INPUTS = "inputs"
CLASSIFY_CLASSES = "classes"
CLASSIFY_SCORES = "scores"
SIGNATURE_DEF_FIELD = "signature_def"


def dtype_name(dtype: int) -> str:
    """``DT_STRING`` -> ``string``, as TF's error messages write dtypes."""
    try:
        return tf.dtypes.as_dtype(dtype).name
    except TypeError:
        known = dtype in types_pb2.DataType.values()
        return types_pb2.DataType.Name(dtype) if known else str(dtype)


def fill_model_spec(spec, name: str, version: int, signature: str = "") -> None:
    """Fills a response ModelSpec as TF Serving does (name, version, signature)."""
    spec.name = name
    spec.version.value = version
    if signature:
        spec.signature_name = signature


def _check_shape(key: str, array: np.ndarray, tensor_info) -> None:
    shape = tensor_info.tensor_shape
    if shape.unknown_rank:
        return
    expected = [d.size for d in shape.dim]
    if len(expected) != array.ndim or any(
        e >= 0 and e != got for e, got in zip(expected, array.shape, strict=True)
    ):
        pretty = "[" + ",".join("?" if e < 0 else str(e) for e in expected) + "]"
        raise invalid_argument(
            f"input '{key}' has shape {list(array.shape)}, which is not compatible with "
            f"the signature's shape {pretty}"
        )


def tensor_to_array(key: str, proto, tensor_info) -> np.ndarray:
    """Decodes one request TensorProto after checking it against its TensorInfo."""
    if proto.dtype != tensor_info.dtype:
        raise invalid_argument(
            f"input '{key}' expects dtype {dtype_name(tensor_info.dtype)} but "
            f"{dtype_name(proto.dtype)} was provided"
        )
    try:
        array = tf.make_ndarray(proto)
    except Exception as exc:  # noqa: BLE001 - any decode failure is the client's
        raise invalid_argument(f"tensor parsing error: {key} ({exc})") from exc
    if proto.dtype == types_pb2.DT_STRING:
        array = np.asarray(array, dtype=object)
    _check_shape(key, array, tensor_info)
    return array


def array_to_tensor(array: np.ndarray):
    """Encodes one output array as a TensorProto."""
    return tf.make_tensor_proto(array)


def _check_batch_limit(inputs: Mapping[str, np.ndarray], limit: int | None) -> None:
    if not limit:
        return
    for key, value in inputs.items():
        if value.ndim >= 1 and value.shape[0] > limit:
            raise invalid_argument(
                f"input '{key}' has a batch of {value.shape[0]} rows; this server accepts "
                f"at most {limit} per request (--max_request_batch_size)"
            )


def predict(
    servable: Servable,
    request: predict_pb2.PredictRequest,
    run: Run,
    max_batch_size: int | None = None,
) -> predict_pb2.PredictResponse:
    """Handles a PredictRequest."""
    signature = request.model_spec.signature_name or DEFAULT_SIGNATURE
    sig = servable.signature_defs.get(signature)
    if sig is None or signature not in servable.functions:
        raise StatusError(
            grpc.StatusCode.FAILED_PRECONDITION,
            f'Serving signature key "{signature}" not found.',
        )
    sent, expected = set(request.inputs), set(sig.inputs)
    missing = expected - sent - set(sig.defaults)
    if sent - expected or missing:
        raise invalid_argument(
            f"input size does not match signature: {len(sent)}!={len(expected)} "
            f"len({{{','.join(sorted(sent))}}}) != len({{{','.join(sorted(expected))}}}). "
            f"Sent extra: {{{','.join(sorted(sent - expected))}}}. "
            f"Missing but required: {{{','.join(sorted(missing))}}}."
        )
    inputs = {key: tensor_to_array(key, request.inputs[key], sig.inputs[key]) for key in sent}
    for key in expected - sent:  # filled from the SignatureDef's defaults
        inputs[key] = tensor_to_array(key, sig.defaults[key], sig.inputs[key])
    _check_batch_limit(inputs, max_batch_size)

    aliases = list(request.output_filter)
    for alias in aliases:
        if alias not in sig.outputs:
            raise invalid_argument(
                f"output tensor alias not found in signature: {alias} Outputs expected to be "
                f"in the set {{{','.join(sorted(sig.outputs))}}}."
            )
    if len(set(aliases)) != len(aliases):
        raise invalid_argument(f"duplicate output tensor alias in output_filter: {aliases}")

    outputs = run(servable, signature, inputs)
    response = predict_pb2.PredictResponse()
    fill_model_spec(response.model_spec, servable.name, servable.version, signature)
    for alias in aliases or sorted(outputs):
        response.outputs[alias].CopyFrom(array_to_tensor(outputs[alias]))
    return response


def serialized_examples(request_input) -> list[bytes]:
    """The serialized tf.Example batch of a Classify/Regress ``Input``.

    For ``example_list_with_context`` each example is the context followed by
    the example, concatenated as serialized bytes: protobuf merges them, so an
    example's own feature wins over a context feature of the same name (what
    TF Serving does).
    """
    kind = request_input.WhichOneof("kind")
    if kind == "example_list":
        return [e.SerializeToString() for e in request_input.example_list.examples]
    if kind == "example_list_with_context":
        lists = request_input.example_list_with_context
        context = lists.context.SerializeToString()
        return [context + e.SerializeToString() for e in lists.examples]
    raise invalid_argument("Input is empty")


def classify(
    servable: Servable,
    request: classification_pb2.ClassificationRequest,
    run: Run,
    max_batch_size: int | None = None,
) -> classification_pb2.ClassificationResponse:
    """Handles a ClassificationRequest against a classify-method signature."""
    signature = request.model_spec.signature_name or DEFAULT_SIGNATURE
    sig = servable.signature_defs.get(signature)
    if sig is None or signature not in servable.functions:
        raise invalid_argument(f"No signature was found with the name: {signature}")
    if sig.method_name != CLASSIFY_METHOD:
        raise invalid_argument(
            f"Expected classification signature method_name to be {CLASSIFY_METHOD}. "
            f"Was: {sig.method_name}"
        )
    if list(sig.inputs) != [CLASSIFY_INPUTS]:
        raise invalid_argument(
            f"Expected one input Tensor named '{CLASSIFY_INPUTS}'; signature {signature} "
            f"has {sorted(sig.inputs)}"
        )
    wanted = [k for k in (CLASSIFY_CLASSES, CLASSIFY_SCORES) if k in sig.outputs]
    if not wanted:
        raise StatusError(
            grpc.StatusCode.FAILED_PRECONDITION,
            f'Expected classification signature outputs to contain at least one of '
            f'"{CLASSIFY_CLASSES}" or "{CLASSIFY_SCORES}"; {signature} has {sorted(sig.outputs)}',
        )
    examples = serialized_examples(request.input)
    if not examples:
        raise invalid_argument("ClassificationRequest::input is empty.")
    inputs = {CLASSIFY_INPUTS: np.array(examples, dtype=object)}
    _check_batch_limit(inputs, max_batch_size)

    outputs = run(servable, signature, inputs)
    classes = outputs.get(CLASSIFY_CLASSES) if CLASSIFY_CLASSES in wanted else None
    scores = outputs.get(CLASSIFY_SCORES) if CLASSIFY_SCORES in wanted else None
    num_classes = None
    for name, value, kind in ((CLASSIFY_CLASSES, classes, "O"), (CLASSIFY_SCORES, scores, "f")):
        if value is None:
            continue
        if value.ndim != 2 or value.shape[0] != len(examples):
            raise invalid_argument(
                f"Expected {name} of shape [batch_size, num_classes] with batch_size "
                f"{len(examples)}; got {list(value.shape)}"
            )
        if value.dtype.kind != kind or (kind == "f" and value.dtype != np.float32):
            wanted_dtype = "string" if kind == "O" else "float"
            raise invalid_argument(f"Expected {name} of dtype {wanted_dtype}; got {value.dtype}")
        if num_classes is not None and value.shape[1] != num_classes:
            raise StatusError(
                grpc.StatusCode.INTERNAL,
                f"classes and scores disagree on the number of classes: "
                f"{num_classes} vs {value.shape[1]}",
            )
        num_classes = value.shape[1]

    response = classification_pb2.ClassificationResponse()
    fill_model_spec(response.model_spec, servable.name, servable.version, signature)
    for i in range(len(examples)):
        row = response.result.classifications.add()
        for c in range(num_classes or 0):
            cls = row.classes.add()
            if classes is not None:
                cls.label = classes[i, c].decode("utf-8", errors="replace")
            if scores is not None:
                cls.score = float(scores[i, c])
    return response


def metadata(
    servable: Servable, request: get_model_metadata_pb2.GetModelMetadataRequest
) -> get_model_metadata_pb2.GetModelMetadataResponse:
    """Handles GetModelMetadata: the SignatureDefMap packed in an Any."""
    fields = list(request.metadata_field)
    if not fields:
        raise invalid_argument("GetModelMetadataRequest must specify at least one metadata_field")
    for field in fields:
        if field != SIGNATURE_DEF_FIELD:
            raise invalid_argument(f"Metadata field {field} is not supported")
    response = get_model_metadata_pb2.GetModelMetadataResponse()
    fill_model_spec(response.model_spec, servable.name, servable.version)
    signature_map = get_model_metadata_pb2.SignatureDefMap()
    for key, sig in servable.signature_defs.items():
        signature_map.signature_def[key].CopyFrom(sig)
    response.metadata[SIGNATURE_DEF_FIELD].Pack(signature_map)
    return response
