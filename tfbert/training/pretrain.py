"""BERT pretraining (masked LM + next-sentence prediction) with `model.fit`.

`run_pretraining` goes from a corpus and a vocabulary to a tfbert model
directory that `tfbert finetune --init DIR` and `tfbert export` accept:
pairs and dynamic masks from `tfbert.data.pretraining`, the pretrainer of
`tfbert.models`, BERT's optimizer and schedule, checkpoints every N steps
with exact resumption (`tfbert.training.resume`), per-epoch `history.json`.

Continued pretraining: `init=DIR` starts from a tfbert, Hugging Face or
Google BERT model directory instead of a fresh `config`: its config, its
vocabulary and casing, its encoder and — where it has them — its MLM/NSP
heads (`tfbert.checkpoints.load_pretrainer`; missing heads start from
scratch, said once on stderr). The output's `config.json` records how it was
pretrained (`"pretraining"`: optimizer, learning rate, steps, seq_len...),
and a run from it keeps its optimizer unless told otherwise: phase 2 of
BERT's two-phase recipe is `init=phase1_dir, seq_len=512`.

Distribution: `strategy` is "mirrored" (all local GPUs, else all logical CPU
devices), "multiworker" (`TF_CONFIG`), "tpu" (`TPUClusterResolver`), or None.
`batch_size` is always the *global* batch — what one optimizer step sees —
split evenly over the replicas (it must divide). That keeps the learning-rate
/ batch-size pairing and the data position of a checkpoint independent of the
number of devices: a run resumed on other hardware continues with the same
batches. What XLA compiles follows `compile` (default: the measured best
for the device and precision, `tfbert.precision.compile_policy`); a whole
XLA step is never used with replicas on several logical CPU devices, which
XLA cannot span. (The
strategy helpers live in `tfbert.training.strategy`, shared with fine-tuning.)

Gradient accumulation: `accumulation_steps=N` feeds micro-batches of
`batch_size / N` and applies one update per N of them (Keras'
`gradient_accumulation_steps`); `steps`, `warmup`, `checkpoint_every` and
the learning-rate schedule count updates, and checkpoints fall between
updates. Masks are drawn per micro-batch. Not under a strategy (Keras 3.15's
accumulation cannot synchronise replicas; refused with a ConfigError).

Precision: "bf16" trains under Keras' "mixed_bfloat16" policy (see
`tfbert.precision`; bfloat16 has float32's range, so no loss scaling).
Variables stay float32, so the saved model loads in float32. The global
policy is restored when the run ends.

Example:

    model = run_pretraining(["corpus/*.txt"], "vocab.txt", "mini", "out/pretrained",
                            steps=10_000, batch_size=64)
    encoder = tfbert.load_encoder("out/pretrained")
    # continued pretraining of that model (or a Hugging Face / Google BERT) on new text:
    run_pretraining(["domain/*.txt"], output_dir="out/domain", init="out/pretrained",
                    steps=2_000, learning_rate=5e-5)
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Sequence

import keras
import tensorflow as tf

from tfbert import precision as precisions
from tfbert.checkpoints import load_pretrainer, read_bert_config, read_task_info, save_model
from tfbert.config import PRESETS, BertConfig, ConfigError
from tfbert.data.pretraining import (
    PairOptions,
    batches_per_pass,
    load_pairs,
    pretraining_dataset,
)
from tfbert.models import build_encoder, build_pretrainer, compile_pretrainer
from tfbert.tasks import TaskInfo
from tfbert.text import BertTokenizer, load_tokenizer
from tfbert.training.callbacks import HistoryFile, tensorboard_callback
from tfbert.training.optimization import create_optimizer
from tfbert.training.resume import TrainingCheckpoint, fit_resumable
from tfbert.training.strategy import STRATEGIES, resolve_strategy, split_batch  # noqa: F401
from tfbert.training.strategy import can_jit_compile as _can_jit_compile
from tfbert.training.strategy import is_chief as _is_chief

OPTIMIZERS = ("adamw", "lamb")
DEFAULT_OPTIMIZER = "adamw"
CHECKPOINT_DIR = "checkpoints"
HISTORY_FILE = "history.json"
# A small corpus makes short epochs; cap the number of epochs (history
# records, progress bars) a run is split into by default.
_MAX_DEFAULT_EPOCHS = 100


def run_pretraining(corpus: str | Sequence[str], vocab: str | None = None,
                    config: BertConfig | str | None = None, output_dir: str | None = None,
                    steps: int = 1000, batch_size: int = 32,
                    seq_len: int = 128, learning_rate: float = 1e-4,
                    warmup: float | int = 0.1, mask_rate: float = 0.15,
                    max_predictions_per_seq: int = 20, whole_word_masking: bool = False,
                    optimizer: str | None = None, checkpoint_every: int | None = None,
                    resume: bool = False,
                    strategy: str | tf.distribute.Strategy | None = None,
                    precision: str = "fp32", compile: str | None = None, seed: int = 0,
                    lowercase: bool | None = None, steps_per_epoch: int | None = None,
                    pair_options: PairOptions | None = None,
                    verbose: str | int = "auto", init: str | None = None,
                    accumulation_steps: int = 1, tensorboard: str | None = None) -> keras.Model:
    """Pretrain a BERT with MLM + NSP and save it as a tfbert model directory.

    Args:
        corpus: corpus files or globs (one sentence per line, blank line
            between documents), or a directory from `prepare_pretraining_data`.
        vocab: `vocab.txt` (or a model directory holding one). Optional with
            `init`, whose own vocabulary is used (a different one is refused).
        config: a `BertConfig`, a preset name ("tiny" ... "large"), or a
            config JSON (tfbert, Hugging Face or Google format). Presets take
            the vocabulary's size; a JSON must match it. Exactly one of
            `config` and `init` is given.
        output_dir: the model directory to write (`config.json`, `vocab.txt`,
            `model.weights.h5`, `history.json`, `checkpoints/`).
        steps: optimizer steps of the whole run.
        batch_size: global batch size (split over replicas).
        seq_len: sequence length (`[CLS]`/`[SEP]` included).
        learning_rate: peak learning rate.
        warmup: warmup steps, or a fraction of `steps` if below 1.
        mask_rate: fraction of tokens to predict.
        max_predictions_per_seq: most predictions per sequence.
        whole_word_masking: mask all pieces of a chosen word.
        optimizer: "adamw" or "lamb"; default: the optimizer `init` was
            pretrained with (its config.json's "pretraining" record), else adamw.
        checkpoint_every: steps between checkpoints; default
            `min(steps_per_epoch, 1000)`.
        resume: continue from the latest checkpoint in `output_dir` (a fresh
            start if there is none); False deletes old checkpoints.
        strategy: None, "mirrored", "multiworker", "tpu" or a strategy object.
        precision: "fp32" or "bf16" (`tfbert.precision`); bf16 warns where
            it is not the fast path.
        compile: "whole", "attention" or "none" (what XLA compiles); default
            `tfbert.precision.compile_policy(precision, "train")`.
        seed: seeds initialisation, pair construction, shuffling and masks.
        lowercase: force the vocabulary's casing; default: read or inferred.
            With `init` the casing is the directory's; a different one is refused.
        steps_per_epoch: steps per Keras epoch (history/progress granularity);
            default one pass over the pairs, at most `steps` and at least
            `steps / 100`.
        pair_options: pair construction settings (`seq_len` and `seed` must
            match the arguments); default `PairOptions(seq_len, seed)`.
        verbose: Keras `fit` verbosity; 0 also hides the corpus progress bar.
        init: continue pretraining a tfbert, Hugging Face or Google BERT
            model directory (config, vocabulary, encoder and any MLM/NSP
            head weights from it); `seq_len` may be up to its
            max_position_embeddings.
        accumulation_steps: split each batch into this many micro-batches of
            `batch_size / accumulation_steps`, and apply their mean gradient
            once (Keras' gradient accumulation; `steps` still counts updates).
            Not with a `strategy` (see `tfbert.training.strategy`).
        tensorboard: a directory for TensorBoard logs (every epoch's loss,
            metrics and learning rate).

    Returns:
        the trained pretrainer (`mlm` and `nsp` outputs).

    Raises:
        TfbertError: bad arguments (`ConfigError`), corpus (`DataError`) or
            checkpoint (`ResumeError`, a `CheckpointError`), naming the file
            or field; all are also ValueErrors.
    """
    if output_dir is None:
        raise ConfigError("output_dir is required")
    if config is not None and init is not None:
        raise ConfigError(f"config and init exclude each other: {init} brings its own config")
    if config is None and init is None:
        raise ConfigError("give a config (a new model) or init (a model directory to continue "
                          "pretraining)")
    if steps < 1 or batch_size < 1:
        raise ConfigError(f"steps ({steps}) and batch_size ({batch_size}) must be >= 1")
    if optimizer is not None and optimizer not in OPTIMIZERS:
        raise ConfigError(f"unknown optimizer {optimizer!r}; choose {' or '.join(OPTIMIZERS)}")
    warmup_steps = warmup_to_steps(warmup, steps)
    tokenizer = pretraining_tokenizer(vocab, init, lowercase)
    if init is None:
        bert_config = resolve_config(config, tokenizer.vocab_size)
        optimizer = optimizer or DEFAULT_OPTIMIZER
    else:
        bert_config = read_bert_config(init)
        if bert_config.vocab_size != tokenizer.vocab_size:
            raise ConfigError(f"{init}: its config's vocab_size {bert_config.vocab_size} does "
                              f"not match its vocabulary's {tokenizer.vocab_size} tokens")
        optimizer = optimizer or init_optimizer(init)
    if seq_len > bert_config.max_position_embeddings:
        where = f"{init}: " if init else ""
        raise ConfigError(f"{where}seq_len {seq_len} exceeds the model config's "
                          f"max_position_embeddings ({bert_config.max_position_embeddings})")
    options = pair_options or PairOptions(seq_len=seq_len, seed=seed)
    if (options.seq_len, options.seed) != (seq_len, seed):
        raise ConfigError("pair_options.seq_len/seed must match seq_len/seed")
    mode = precisions.check_compile_mode(compile or precisions.compile_policy(precision, "train"))
    precisions.warn_if_slow(precision, "tfbert pretrain")
    dist = resolve_strategy(strategy)
    micro_batch = split_batch(batch_size, accumulation_steps, dist)

    source = load_pairs(corpus, tokenizer, options, progress=verbose != 0)
    per_pass = batches_per_pass(source, batch_size)
    if per_pass < 1:
        raise ConfigError(f"the corpus gives {source.num_pairs} sentence pairs, fewer than "
                         f"one batch of {batch_size}; use more text or a smaller batch")
    if steps_per_epoch is None:
        steps_per_epoch = min(steps, max(per_pass, math.ceil(steps / _MAX_DEFAULT_EPOCHS)))
    checkpoint_every = checkpoint_every or min(steps_per_epoch, 1000)

    checkpoint = TrainingCheckpoint(
        os.path.join(output_dir, CHECKPOINT_DIR), checkpoint_every,
        run_info={"steps": steps, "batch_size": batch_size, "seq_len": seq_len, "seed": seed,
                  "steps_per_epoch": steps_per_epoch, "mask_rate": mask_rate,
                  "whole_word_masking": whole_word_masking,
                  "max_predictions_per_seq": max_predictions_per_seq,
                  "vocab_size": tokenizer.vocab_size, "num_pairs": source.num_pairs,
                  "init": init and os.path.abspath(init), "optimizer": optimizer,
                  "accumulation_steps": accumulation_steps, "precision": precision},
        is_chief=_is_chief(dist), accumulation_steps=accumulation_steps)
    if resume:
        checkpoint.check_run_info()  # before the costly model build

    os.makedirs(output_dir, exist_ok=True)
    with precisions.dtype_policy(precisions.training_policy(precision)):
        keras.utils.set_random_seed(seed)
        with dist.scope():
            if init is None:
                model = build_pretrainer(build_encoder(
                    bert_config.replace(**precisions.island_config(mode))))
            else:
                model, _, missing = load_pretrainer(init, precisions.island_config(mode))
                if missing and _is_chief(dist):
                    heads = "/".join(h.upper() for h in missing)
                    print(f"tfbert pretrain: no {heads} head weights in {init}: "
                          f"{'the heads start' if len(missing) > 1 else 'it starts'} from "
                          "scratch", file=sys.stderr)
            opt = create_optimizer(optimizer, learning_rate, steps, warmup_steps,
                                   accumulation_steps=accumulation_steps)
            compile_pretrainer(model, opt, jit_compile=mode == "whole" and _can_jit_compile(dist))
            opt.build(model.trainable_variables)
        start = checkpoint.restore(model) if resume else checkpoint.clear()
        if resume and verbose != 0:
            print(f"Resuming at step {start} of {steps}" if start else
                  "No checkpoint to resume from; starting at step 0")

        def make_dataset(start_batch: int) -> tf.data.Dataset:
            return pretraining_dataset(
                source, tokenizer, seq_len=seq_len, batch_size=micro_batch, mask_rate=mask_rate,
                max_predictions_per_seq=max_predictions_per_seq,
                whole_word_masking=whole_word_masking, seed=seed, start_batch=start_batch)

        callbacks = [HistoryFile(os.path.join(output_dir, HISTORY_FILE))]
        if tensorboard and _is_chief(dist):
            callbacks.append(tensorboard_callback(tensorboard))
        fit_resumable(model, make_dataset, total_steps=steps, steps_per_epoch=steps_per_epoch,
                      checkpoint=checkpoint, start_step=start, callbacks=callbacks,
                      verbose=verbose, accumulation_steps=accumulation_steps)
    if _is_chief(dist):
        save_model(model, output_dir,
                   TaskInfo(task="pretrain", max_seq_length=seq_len,
                            lowercase=tokenizer.lowercase,
                            pretraining={"optimizer": optimizer, "learning_rate": learning_rate,
                                         "warmup_steps": warmup_steps, "steps": steps,
                                         "batch_size": batch_size, "seq_len": seq_len,
                                         "mask_rate": mask_rate,
                                         "max_predictions_per_seq": max_predictions_per_seq,
                                         "whole_word_masking": whole_word_masking,
                                         "init": init and os.path.abspath(init)}),
                   tokenizer.vocab)
    return model


def pretraining_tokenizer(vocab: str | None, init: str | None = None,
                          lowercase: bool | None = None) -> BertTokenizer:
    """The tokenizer of a pretraining run: `vocab`'s, or with `init` the directory's own.

    With `init`, `vocab` (if given) must hold the same tokens and `lowercase`
    (if given) the same casing as `init`: text tokenized otherwise than in the
    model's earlier training would silently lose what it learnt.

    Raises:
        ConfigError: no vocabulary, or a vocabulary or casing other than `init`'s.
        DataError: an unreadable vocabulary.
    """
    if init is None:
        if vocab is None:
            raise ConfigError("a vocabulary (vocab.txt) is needed to pretrain a new model")
        return load_tokenizer(vocab, lowercase=lowercase)
    tokenizer = load_tokenizer(init)
    if vocab is not None:
        given = load_tokenizer(vocab).vocab
        if given != tokenizer.vocab:
            first = next((i for i, (a, b) in enumerate(zip(given, tokenizer.vocab, strict=False))
                          if a != b), min(len(given), len(tokenizer.vocab)))
            raise ConfigError(
                f"{vocab} ({len(given)} tokens) differs from the vocabulary of {init} "
                f"({tokenizer.vocab_size} tokens) from id {first} on; leave out the vocabulary "
                f"to continue with {init}'s own")
    if lowercase is not None and lowercase != tokenizer.lowercase:
        def casing(lower: bool) -> str:
            return "uncased" if lower else "cased"

        raise ConfigError(f"{init} is {casing(tokenizer.lowercase)}; continuing it "
                          f"{casing(lowercase)} would tokenize text otherwise than its training "
                          "did (leave out the casing)")
    return tokenizer


def init_optimizer(init: str) -> str:
    """The optimizer `init` was pretrained with (its "pretraining" record), else adamw."""
    record = read_task_info(init).pretraining or {}
    name = record.get("optimizer", DEFAULT_OPTIMIZER)
    if name not in OPTIMIZERS:
        raise ConfigError(f"{init}/config.json: unknown pretraining optimizer {name!r}")
    return name


def warmup_to_steps(warmup: float | int, steps: int) -> int:
    """Warmup steps from a count (>= 1) or a fraction of `steps` (< 1).

    Example:

    >>> warmup_to_steps(0.1, 1000), warmup_to_steps(50, 1000)
    (100, 50)
    """
    if warmup < 0:
        raise ConfigError(f"warmup must be >= 0, got {warmup}")
    value = int(round(warmup * steps)) if warmup < 1 else int(warmup)
    if value > steps:
        raise ConfigError(f"warmup ({value} steps) is longer than the run ({steps} steps)")
    return value


def resolve_config(config: BertConfig | str, vocab_size: int) -> BertConfig:
    """A `BertConfig` from an object, a preset name or a JSON file, checked against the vocab.

    Raises:
        ConfigError: unknown preset, unreadable file, or a vocab size mismatch.
    """
    if isinstance(config, BertConfig):
        resolved, source = config, "config"
    elif config in PRESETS:
        return BertConfig.from_preset(config, vocab_size=vocab_size)
    elif os.path.isfile(config):
        resolved, source = BertConfig.from_file(config), config
    else:
        raise ConfigError(f"{config}: neither a preset ({', '.join(PRESETS)}) nor a config file")
    if resolved.vocab_size != vocab_size:
        raise ConfigError(f"{source}: vocab_size {resolved.vocab_size} does not match the "
                          f"vocabulary's {vocab_size} tokens")
    return resolved
