"""`tfbert export`: one SavedModel per task, tokenization inside.

Writes `<base>/<name>/<version>/` atomically: the SavedModel is written and
checked in a hidden temporary sibling (`.tmp-<version>-<pid>`), which TF
Serving ignores, then renamed into place. A version directory is therefore
either complete and checked, or absent. The warmup requests TF Serving
replays before serving a version (`assets.extra/tf_serving_warmup_requests`,
`tfbert.export.warmup`) are written into it too, and the check replays them.

Precision and compilation (`tfbert.precision`): a bf16 export builds the
model under the `bfloat16` policy, so the SavedModel stores bfloat16 weights
(cast once, here) and computes in bfloat16, with float32 softmax, LayerNorm
statistics and logits; its signatures take and return the same dtypes as an
fp32 export. What XLA compiles is the compile mode: "whole" wraps the whole
model call in one jit-compiled function (tokenization stays outside),
"attention" compiles only the attention core, "none" nothing. Outside
"whole" the weights are constants of the serving graph (`ServingModel`),
not variables.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile

import keras
import tensorflow as tf

from tfbert import precision as precisions
from tfbert import tasks
from tfbert.checkpoints import load_model, read_bert_config
from tfbert.errors import ExportError
from tfbert.export.check import CheckReport, check_saved_model
from tfbert.export.warmup import (
    DEFAULT_WARMUP,
    WARMUP_MODES,
    build_warmup_records,
    write_warmup_file,
)
from tfbert.models import encoder_config
from tfbert.saved_model import read_signature_defs, set_method_name
from tfbert.tasks import TaskInfo
from tfbert.text import BertTokenizer, load_tokenizer, write_vocab


def next_version(model_base: str) -> int:
    """One more than the highest numeric version directory, or 1."""
    if not os.path.isdir(model_base):
        return 1
    versions = [int(d) for d in os.listdir(model_base) if d.isdigit()]
    return max(versions, default=0) + 1


# Above this many bytes of weights an export keeps them as variables: a
# GraphDef (constants included) must stay under protobuf's 2 GiB.
CONSTANT_WEIGHTS_LIMIT = 1 << 30


class ServingModel:
    """A task model as the serving functions call it, through one `tf.function`.

    The task endpoints call it like the model (`model(inputs, training=False)`);
    everything else (layers, config) is the model's. Every endpoint goes
    through the same function, so the SavedModel holds one copy of the model
    graph.

    With `constant_weights` the weights are `Const` nodes of that graph
    (Keras' `StatelessScope` maps each variable to its value): grappler then
    marks the fused matmuls' filters constant, and oneDNN keeps them in its
    packed layout instead of re-packing them on every request. On MiniLM that
    makes a bf16 request 1.1x (32 x 128) to 1.5x (one text) faster, an fp32
    one up to 1.14x (one text). With `jit_compile` the call is one XLA
    computation (compile mode "whole"): XLA compiles one executable per input
    shape (the padded widths are multiples of 16 and the warmup requests
    cover them), so there the weights stay variables, which XLA reads in
    place, where constants would be copied into every executable.
    """

    def __init__(self, model: keras.Model, jit_compile: bool = False,
                 constant_weights: bool = True):
        self._model = model
        self._values = ([(v, v.numpy()) for v in model.variables] if constant_weights
                        else None)
        self._call = tf.function(self._serve, jit_compile=jit_compile, reduce_retracing=True)

    @staticmethod
    def constants_fit(model: keras.Model) -> bool:
        """Whether `model`'s weights are small enough to be graph constants."""
        size = sum(math.prod(v.shape) * tf.as_dtype(v.dtype).size for v in model.variables)
        return size <= CONSTANT_WEIGHTS_LIMIT

    def _serve(self, inputs):
        if self._values is None:
            return self._model(inputs, training=False)
        constants = [(variable, tf.constant(value)) for variable, value in self._values]
        with keras.StatelessScope(state_mapping=constants):
            return self._model(inputs, training=False)

    def __call__(self, inputs, training: bool = False):
        if training:
            raise ValueError("ServingModel is for serving: training=False only")
        return self._call(inputs)

    def __getattr__(self, name: str):
        return getattr(self._model, name)


def build_archive(model: keras.Model, info: TaskInfo, tokenizer: BertTokenizer,
                  compile: str = "attention") -> keras.export.ExportArchive:
    """An `ExportArchive` with the task's signatures and the tokenizer tracked.

    `compile="whole"` runs the model call as one XLA function, weights as
    variables; the other modes are the model's own (its config's
    `xla_attention`, `xla_pointwise`), with the weights as graph constants (`ServingModel`)
    unless they exceed `CONSTANT_WEIGHTS_LIMIT`. Variables are tracked by the
    archive.
    """
    whole = precisions.check_compile_mode(compile) == "whole"
    # XLA would copy constant weights into the executable of every input
    # shape (a MiniLM export held 1.3 GiB more after its warmup).
    constant = not whole and ServingModel.constants_fit(model)
    serving = ServingModel(model, jit_compile=whole, constant_weights=constant)
    archive = keras.export.ExportArchive()
    if not constant:
        archive.track(model)
    archive.track(tokenizer)
    for name, (fn, signature) in tasks.get(info.task).endpoints(serving, tokenizer, info).items():
        archive.add_endpoint(name, fn, input_signature=signature)
    return archive


def _write_assets(directory: str, tokenizer: BertTokenizer, info: TaskInfo) -> None:
    # The graph holds its own copy of the vocabulary and labels; these files
    # make the directory self-describing for people and other tools.
    assets = os.path.join(directory, "assets")
    write_vocab(tokenizer.vocab, os.path.join(assets, "vocab.txt"))
    if info.labels:
        # One label per line, as vocab.txt has one token per line.
        write_vocab(info.labels, os.path.join(assets, "labels.txt"))


def export_model(model_dir: str | os.PathLike, name: str, base: str | os.PathLike = "savedmodels",
                 version: int | None = None, xla: bool = True, max_seq_length: int | None = None,
                 check: bool = True, verbose: bool = False,
                 warmup: str = DEFAULT_WARMUP, precision: str = "fp32",
                 compile: str | None = None) -> tuple[str, CheckReport | None]:
    """Export a model directory as `<base>/<name>/<version>/`.

    Args:
        model_dir: tfbert, Hugging Face, Google BERT or keras-hub preset directory. tfbert
            directories export their task's signatures (`tfbert.tasks`); the
            others export the encoder.
        name: model name (the TF Serving `model_name`).
        base: the TF Serving `model_base_path` root.
        version: version number; default the next free one.
        xla: use XLA at all (TF Serving then needs
            `--xla_{cpu,gpu}_compilation_enabled=true`); False (compile mode
            "none") for servers that cannot.
        max_seq_length: cap on tokens per input; default the length the model
            was trained with (at most its position table).
        check: run `check_saved_model` before publishing (it also replays
            the warmup requests); a failed check removes the export and
            raises `ExportError`.
        warmup: warmup requests written to `assets.extra/`: "full" (every
            padded width times the server's batch sizes), "minimal" (every
            width at batch size 1) or "none" (see `tfbert.export.warmup`).
        precision: "fp32" or "bf16" (bfloat16 weights and compute; see the
            module docstring). bf16 warns where it is not the fast path.
        compile: "whole", "attention" or "none"; default the measured best
            for this device and precision (`tfbert.precision.compile_policy`).
            The export is compiled for the device kind it is made on.

    Returns:
        The version directory and the check report (None without check).
    """
    if not name or os.sep in name or name.startswith("."):
        raise ExportError(f"invalid model name {name!r}")
    if warmup not in WARMUP_MODES:
        raise ExportError(f"--warmup must be one of {', '.join(WARMUP_MODES)}, got {warmup!r}")
    precisions.check_precision(precision)
    mode = precisions.check_compile_mode(compile or precisions.compile_policy(precision, "serve"))
    if not xla:
        mode = "none"
    precisions.warn_if_slow(precision, "tfbert export")
    with precisions.dtype_policy(precisions.serving_policy(precision)):
        config = read_bert_config(model_dir)
        branches = precisions.serving_branches(mode, config.num_heads, config.intermediate_size)
        graph = {**precisions.island_config(mode), "inference_branches": branches}
        model, info = load_model(model_dir, graph)
        if branches > 1 and not ServingModel.constants_fit(model):
            # Weights past the constant limit stay variables, which the
            # branches would slice and gather again on every request.
            model, info = load_model(model_dir, {**graph, "inference_branches": 1})
    spec = tasks.get(info.task)
    positions = encoder_config(model).max_position_embeddings
    if max_seq_length is not None and max_seq_length > positions:
        raise ExportError(f"--max-seq-length {max_seq_length} exceeds the model's "
                          f"{positions} positions")
    # The trained length, but never past the position table (a converted model
    # with fewer than the default 128 positions).
    tokenizer = load_tokenizer(model_dir,
                               max_seq_length=max_seq_length or min(info.max_seq_length,
                                                                    positions))
    model_base = os.path.join(os.fspath(base), name)
    version = next_version(model_base) if version is None else int(version)
    final = os.path.join(model_base, str(version))
    if os.path.exists(final):
        raise ExportError(f"{final} already exists; choose another --version")
    os.makedirs(model_base, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".tmp-{version}-", dir=model_base)
    os.chmod(tmp, 0o755)  # mkdtemp makes it private; the server may run as another user
    try:
        archive = build_archive(model, info, tokenizer, mode)
        archive.write_out(tmp, verbose=verbose)
        for signature, method in spec.signature_methods.items():
            set_method_name(tmp, signature, method)
        _write_assets(tmp, tokenizer, info)
        write_warmup_file(tmp, build_warmup_records(read_signature_defs(tmp), tokenizer, name,
                                                    warmup))
        report = None
        if check:
            report = check_saved_model(tmp, expected_methods=spec.signature_methods)
            report.path = final
            if not report.ok:
                raise ExportError("TF Serving could not use this export:\n" + report.summary())
        os.rename(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final, report

