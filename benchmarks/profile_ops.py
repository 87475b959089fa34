"""Where the time goes: the top ops of the encoder forward and train step, per precision.

The MiniLM-shaped encoder (batch 32 x 128) runs a few forward passes
(``training=False``) and train steps (forward + backward + AdamW) under
TensorFlow's profiler (``tf.profiler.experimental``); the trace's
``.xplane.pb`` is read with TensorFlow's own ``xplane_pb2`` and op time is
summed by kind: TensorFlow ops by type (``_MklNativeFusedMatMul``, ``Mul``,
...), XLA kernels by name with an ``xla:`` prefix. Executor bookkeeping is
left out. Time is summed over the threads that ran ops, per step; on two
cores that can exceed the step's wall time.

fp32 runs under the float32 policy, bf16 under ``mixed_bfloat16`` (forward
and train alike, so that the same script profiles revisions without
`tfbert.precision`). The train step runs in the CPU's default compile mode
for training (`tfbert.precision.compile_policy`; revisions without it: the
XLA islands), the forward pass with the XLA islands; the optimizer is
Keras' AdamW on every revision.

``--ref REV`` also profiles git revision REV (default: the one before the
fused kernels; ``--ref none`` skips it)
from a temporary ``git worktree``, running this file there with that
revision's ``tfbert`` on ``PYTHONPATH``; the tables then show REV and the
working tree side by side.

Run: ``python -m benchmarks.profile_ops [--ref REV] [--top 8] [--json out.json]``.
"""

from __future__ import annotations

import argparse
import collections
import glob
import json
import os
import subprocess
import sys
import tempfile

from benchmarks import common
from benchmarks.common import MINILM, log

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
POLICIES = {"fp32": "float32", "bf16": "mixed_bfloat16"}
# The last revision with separate query/key/value layers, Keras Dense and
# Keras LayerNormalization: the "before" of BENCHMARKS.md's profile tables.
BEFORE_FUSION = "17ca864"
BOOKKEEPING = ("ExecutorState", "ThunkExecutor", "CpuExecutable", "BlockUntilReady")


def op_times(logdir: str, steps: int) -> dict[str, float]:
    """{op kind: ms per step} from the newest trace under ``logdir``."""
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    path = sorted(glob.glob(os.path.join(logdir, "**", "*.xplane.pb"), recursive=True))[-1]
    space = xplane_pb2.XSpace()
    with open(path, "rb") as f:
        space.ParseFromString(f.read())
    totals: collections.Counter = collections.Counter()
    for plane in space.planes:
        names = {k: v.name for k, v in plane.event_metadata.items()}
        for line in plane.lines:
            if line.name == "python":
                continue
            for event in line.events:
                name = names.get(event.metadata_id, "?")
                if name.startswith(BOOKKEEPING):
                    continue
                kind = name.rpartition(":")[2] if ":" in name else f"xla:{name}"
                totals[kind] += event.duration_ps / 1e9 / steps
    return dict(totals)


def _in_profiled_tree(module: str) -> bool:
    """Whether ``tfbert/<module>.py`` exists in the tree being profiled.

    The editable install resolves a module that revision lacks from the
    working tree instead of failing, so an ImportError cannot tell.
    """
    import tfbert

    return os.path.exists(os.path.join(os.path.dirname(tfbert.__file__), f"{module}.py"))


def _train_mode(precision: str) -> str:
    if not _in_profiled_tree("precision"):  # a revision before the compile policy
        return "attention"
    from tfbert.precision import compile_policy

    return compile_policy(precision, "train", device="cpu")


def _island_fields(mode: str) -> dict:
    """The `BertConfig` fields of compile `mode` in the revision being profiled."""
    import dataclasses

    import tfbert

    if "xla_pointwise" not in {f.name for f in dataclasses.fields(tfbert.BertConfig)}:
        return {"xla_attention": mode != "none"}  # one switch for all the islands
    from tfbert.precision import island_config

    return island_config(mode)


def profile(precision: str, purpose: str, batch: int, seq_len: int, steps: int) -> dict:
    import keras
    import numpy as np
    import tensorflow as tf

    import tfbert

    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(POLICIES[precision])
    try:
        mode = "attention" if purpose == "forward" else _train_mode(precision)
        model = tfbert.build_encoder(tfbert.BertConfig(**MINILM, **_island_fields(mode)))
    finally:
        keras.config.set_dtype_policy(previous)
    rng = np.random.default_rng(0)
    ids = rng.integers(1000, MINILM["vocab_size"], size=(batch, seq_len), dtype=np.int32)
    inputs = {"input_word_ids": tf.constant(ids), "input_mask": tf.ones_like(ids),
              "input_type_ids": tf.zeros_like(ids)}
    variables = model.trainable_variables
    optimizer = keras.optimizers.AdamW(learning_rate=1e-4)
    optimizer.build(variables)

    @tf.function
    def forward(batch):
        return tf.reduce_sum(tf.cast(model(batch, training=False)["pooled_output"], tf.float32))

    @tf.function
    def train(batch):
        with tf.GradientTape() as tape:
            out = model(batch, training=True)
            loss = (tf.reduce_mean(tf.square(tf.cast(out["sequence_output"], tf.float32)))
                    + tf.reduce_mean(tf.cast(out["pooled_output"], tf.float32)))
        optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables, strict=True))
        return loss

    step = forward if purpose == "forward" else train
    for _ in range(2):
        float(step(inputs))
    with tempfile.TemporaryDirectory(prefix="tfbert-profile-") as logdir:
        tf.profiler.experimental.start(logdir)
        for _ in range(steps):
            float(step(inputs))
        tf.profiler.experimental.stop()
        return op_times(logdir, steps)


def run_at(rev: str, args: argparse.Namespace) -> dict:
    """This script's profiles of git revision ``rev`` (a temporary worktree)."""
    tree = tempfile.mkdtemp(prefix="tfbert-ref-")
    subprocess.run(["git", "worktree", "add", "--detach", tree, rev], cwd=ROOT, check=True,
                   capture_output=True)
    try:
        out = os.path.join(tree, "profile.json")
        env = dict(os.environ, PYTHONPATH=tree)
        subprocess.run([sys.executable, os.path.abspath(__file__), "--inner", "--json", out,
                        "--batch", str(args.batch), "--seq-len", str(args.seq_len),
                        "--steps", str(args.steps)], cwd=tree, env=env, check=True)
        with open(out, encoding="utf-8") as f:
            return json.load(f)["profiles"]
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", tree], cwd=ROOT, check=False,
                       capture_output=True)


def tables(profiles: dict[str, dict], top: int) -> str:
    """One markdown table per (precision, purpose): top ops of every profiled tree."""
    out = []
    trees = list(profiles)
    for key in profiles[trees[-1]]:
        precision, purpose = key.split()
        totals = {tree: sum(profiles[tree].get(key, {}).values()) for tree in trees}
        ranked = sorted(profiles[trees[-1]][key].items(), key=lambda kv: -kv[1])[:top]
        kinds = [k for k, _ in ranked]
        for tree in trees[:-1]:  # the reference's own top ops too
            kinds += [k for k, _ in sorted(profiles[tree].get(key, {}).items(),
                                           key=lambda kv: -kv[1])[:top] if k not in kinds]
        rows = [[kind, *(f"{profiles[t].get(key, {}).get(kind, 0.0):.1f}" for t in trees)]
                for kind in kinds]
        rows.append(["**all ops**", *(f"**{totals[t]:.1f}**" for t in trees)])
        out += [f"{precision}, {purpose} (ms per step, summed over threads):", "",
                common.markdown_table(["op", *trees], rows), ""]
    return "\n".join(out).rstrip()


def main(argv: list[str] | None = None) -> dict:
    common.quiet_tensorflow()
    parser = common.base_parser(__doc__.splitlines()[0], default_reps=5)
    parser.add_argument("--ref", default=BEFORE_FUSION,
                        help=f"also profile this git revision; 'none' to skip (default "
                        f"{BEFORE_FUSION}, before the fused kernels)")
    parser.add_argument("--top", type=int, default=8, help="ops per table (default 8)")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--steps", type=int, default=3, help="profiled steps (default 3)")
    parser.add_argument("--inner", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    profiles: dict[str, dict] = {}
    if args.ref == "none":
        args.ref = None
    if args.ref and not args.inner:
        log(f"profiling {args.ref}")
        profiles[args.ref] = run_at(args.ref, args)
    here = {}
    for precision in POLICIES:
        for purpose in ("forward", "train"):
            log(f"profiling {precision} {purpose}")
            here[f"{precision} {purpose}"] = profile(precision, purpose, args.batch,
                                                     args.seq_len, args.steps)
    if args.inner:
        common.write_json(args.json, dict(profiles=here))
        return here
    profiles["this tree"] = here
    markdown = (f"Top ops, MiniLM-L6 shape, batch {args.batch} x {args.seq_len}, "
                f"{args.steps} profiled steps:\n\n" + tables(profiles, args.top))
    print(markdown)
    result = dict(benchmark="profile_ops", machine=common.machine_info(), reps=args.steps,
                  ref=args.ref, profiles=profiles, markdown=markdown)
    common.write_json(args.json, result)
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
